-- Storage lifecycle (docs/architecture.md, "Storage lifecycle").
--
-- ticks_raw (by received_at) and ticks_history (by event_time) become daily range partitions, ohlc_1m and
-- metrics_1m monthly ones (by bucket), each with a DEFAULT partition for rows outside the partitions that
-- exist (a tick from 1999, one from next year). Retention drops whole partitions; the aggregator creates
-- them ahead (ensure_partitions). Existing rows are copied into the new tables.
--
-- Dedup key of ticks_history: (symbol, event_time, trade_id). A unique key of a partitioned table must hold
-- its partition key, and this one also serves every read by symbol and time, so no other index is needed.
-- A redelivered or duplicated tick carries the same event time and is still stored once; a source that
-- reuses a trade id at another time now gets two ticks (before, the second was dropped as a duplicate).
--
-- Stored tiers ohlc_1h and ohlc_1d (UTC hours and days) are folded by the aggregator in the batch's
-- transaction like ohlc_1m; rebuild_tiers() recomputes them from ohlc_1m. They are kept for ever.

-- The partition of `parent` for [lo, hi), named <parent>_p<YYYYMMDD> (daily) or _p<YYYYMM> (monthly), unless it
-- exists. Rows of the range already in the DEFAULT partition move into it. The table is created alone and
-- attached, which locks the parent only in SHARE UPDATE EXCLUSIVE mode: ingest goes on meanwhile.
CREATE FUNCTION ensure_partition(parent text, lo timestamptz, hi timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    name text := parent || '_p' || to_char(lo AT TIME ZONE 'UTC',
                                            CASE WHEN hi - lo > interval '1 day' THEN 'YYYYMM' ELSE 'YYYYMMDD' END);
    key text;
    columns text;
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- One partition of a parent at a time (two aggregators, or the bench's loaders): the second finds it made,
    -- and two attaches never wait on each other's lock of the DEFAULT partition.
    PERFORM pg_advisory_xact_lock(hashtext('marketdata partitions of ' || parent));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT a.attname INTO key
    FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = parent::regclass;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
    FROM pg_attribute WHERE attrelid = parent::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)',
                   name, parent);
    EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING %s) INSERT INTO %I (%s) '
                   'SELECT %s FROM moved', parent || '_default', key, key, columns, name, columns, columns)
        USING lo, hi;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, name, lo, hi);
    RETURN true;
END
$$;

-- Every partition of `step` ('1 day' or '1 month', aligned at UTC midnights) overlapping [lo, hi); returns
-- how many were created.
CREATE FUNCTION ensure_partitions(parent text, step interval, lo timestamptz, hi timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t timestamp := date_trunc(CASE WHEN step >= interval '1 month' THEN 'month' ELSE 'day' END, lo AT TIME ZONE 'UTC');
    created integer := 0;
BEGIN
    WHILE t AT TIME ZONE 'UTC' < hi LOOP
        IF ensure_partition(parent, t AT TIME ZONE 'UTC', (t + step) AT TIME ZONE 'UTC') THEN
            created := created + 1;
        END IF;
        t := t + step;
    END LOOP;
    RETURN created;
END
$$;

-- Partitions for the days (months) that hold existing rows, from 2000 on (older ones stay in DEFAULT), and
-- for today and the next two days.
CREATE FUNCTION partition_existing(parent text, step interval, source text, key text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    unit text := CASE WHEN step >= interval '1 month' THEN 'month' ELSE 'day' END;
    first timestamp;
BEGIN
    FOR first IN EXECUTE format('SELECT DISTINCT date_trunc(%L, %I AT TIME ZONE ''UTC'') FROM %I WHERE %I >= %L',
                                unit, key, source, key, timestamptz '2000-01-01 00:00:00+00') LOOP
        PERFORM ensure_partition(parent, first AT TIME ZONE 'UTC', (first + step) AT TIME ZONE 'UTC');
    END LOOP;
    PERFORM ensure_partitions(parent, step, now(), now() + interval '3 days');
END
$$;

DROP VIEW ticks_recent;

-- ticks_raw: daily by receive time (the audit's retention counts from when ticks arrived).
ALTER TABLE ticks_raw RENAME TO ticks_raw_unpartitioned;
DROP INDEX ticks_raw_received_at_brin;
CREATE TABLE ticks_raw (LIKE ticks_raw_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (received_at);
CREATE TABLE ticks_raw_default PARTITION OF ticks_raw DEFAULT;
SELECT partition_existing('ticks_raw', '1 day', 'ticks_raw_unpartitioned', 'received_at');
INSERT INTO ticks_raw SELECT * FROM ticks_raw_unpartitioned;
DROP TABLE ticks_raw_unpartitioned;

-- ticks_history: daily by event time.
ALTER TABLE ticks_history RENAME TO ticks_history_unpartitioned;
ALTER TABLE ticks_history_unpartitioned DROP CONSTRAINT ticks_history_pkey;
DROP INDEX ticks_history_symbol_time, ticks_history_event_time_brin;
CREATE TABLE ticks_history (LIKE ticks_history_unpartitioned INCLUDING DEFAULTS,
                            PRIMARY KEY (symbol, event_time, trade_id)) PARTITION BY RANGE (event_time);
CREATE TABLE ticks_history_default PARTITION OF ticks_history DEFAULT;
SELECT partition_existing('ticks_history', '1 day', 'ticks_history_unpartitioned', 'event_time');
INSERT INTO ticks_history SELECT * FROM ticks_history_unpartitioned;
DROP TABLE ticks_history_unpartitioned;
-- The rules of 0002, NOT VALID as there: rows stored before them stay readable.
ALTER TABLE ticks_history ADD CONSTRAINT ticks_history_price_check
    CHECK (price >= 1e-12 AND price <= 1e+12) NOT VALID;
ALTER TABLE ticks_history ADD CONSTRAINT ticks_history_size_check
    CHECK (size >= 0 AND size <= 1e+15) NOT VALID;
ALTER TABLE ticks_history ADD CONSTRAINT ticks_history_event_time_check
    CHECK (event_time >= timestamptz '1970-01-01 00:00:00+00') NOT VALID;

CREATE VIEW ticks_recent AS
SELECT symbol, trade_id, event_time, price, size, side, source
FROM ticks_history
WHERE event_time >= now() - interval '1 hour';

-- ohlc_1m and metrics_1m: monthly by bucket.
ALTER TABLE ohlc_1m RENAME TO ohlc_1m_unpartitioned;
ALTER TABLE ohlc_1m_unpartitioned DROP CONSTRAINT ohlc_1m_pkey;
DROP INDEX ohlc_1m_bucket_brin;
CREATE TABLE ohlc_1m (LIKE ohlc_1m_unpartitioned INCLUDING DEFAULTS INCLUDING GENERATED,
                      PRIMARY KEY (symbol, bucket)) PARTITION BY RANGE (bucket);
CREATE TABLE ohlc_1m_default PARTITION OF ohlc_1m DEFAULT;
SELECT partition_existing('ohlc_1m', '1 month', 'ohlc_1m_unpartitioned', 'bucket');
INSERT INTO ohlc_1m (symbol, bucket, open, high, low, close, volume, trades, turnover, open_time, open_trade_id,
                     close_time, close_trade_id, updated_at, taker_buy_volume, taker_buy_turnover)
SELECT symbol, bucket, open, high, low, close, volume, trades, turnover, open_time, open_trade_id,
       close_time, close_trade_id, updated_at, taker_buy_volume, taker_buy_turnover
FROM ohlc_1m_unpartitioned;

ALTER TABLE metrics_1m RENAME TO metrics_1m_unpartitioned;
ALTER TABLE metrics_1m_unpartitioned DROP CONSTRAINT metrics_1m_pkey;
DROP INDEX metrics_1m_bucket_brin;
CREATE TABLE metrics_1m (LIKE metrics_1m_unpartitioned INCLUDING DEFAULTS INCLUDING GENERATED,
                         PRIMARY KEY (symbol, bucket)) PARTITION BY RANGE (bucket);
CREATE TABLE metrics_1m_default PARTITION OF metrics_1m DEFAULT;
SELECT partition_existing('metrics_1m', '1 month', 'metrics_1m_unpartitioned', 'bucket');
INSERT INTO metrics_1m (symbol, bucket, min, max, price_sum, trades, volume, turnover, last, last_time,
                        last_trade_id, updated_at)
SELECT symbol, bucket, min, max, price_sum, trades, volume, turnover, last, last_time, last_trade_id, updated_at
FROM metrics_1m_unpartitioned;
DROP TABLE metrics_1m_unpartitioned;

DROP FUNCTION partition_existing(text, interval, text, text);

-- Stored tiers: one candle per symbol and UTC hour / UTC day, the columns of ohlc_1m.
CREATE TABLE ohlc_1h (LIKE ohlc_1m_unpartitioned INCLUDING DEFAULTS INCLUDING GENERATED, PRIMARY KEY (symbol, bucket));
CREATE TABLE ohlc_1d (LIKE ohlc_1m_unpartitioned INCLUDING DEFAULTS INCLUDING GENERATED, PRIMARY KEY (symbol, bucket));
DROP TABLE ohlc_1m_unpartitioned;

-- Recomputes ohlc_1h over the hours and ohlc_1d over the days overlapping [lo, hi) from ohlc_1m (of one
-- symbol, or of all when p_symbol is NULL): the tiers of what ohlc_1m holds there. Returns the hours written.
-- open/close are those of the minute with the earliest open / latest close by (time, trade id), as the fold.
CREATE FUNCTION rebuild_tiers(p_symbol text, lo timestamptz, hi timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    epoch constant timestamptz := timestamptz '1970-01-01 00:00:00+00';
    hour_lo timestamptz := date_bin('1 hour', lo, epoch);
    hour_hi timestamptz := date_bin('1 hour', hi - interval '1 microsecond', epoch) + interval '1 hour';
    day_lo timestamptz := date_bin('1 day', lo, epoch);
    day_hi timestamptz := date_bin('1 day', hi - interval '1 microsecond', epoch) + interval '1 day';
    hours bigint;
BEGIN
    DELETE FROM ohlc_1h WHERE (p_symbol IS NULL OR symbol = p_symbol) AND bucket >= hour_lo AND bucket < hour_hi;
    INSERT INTO ohlc_1h (symbol, bucket, open, high, low, close, volume, trades, turnover, open_time, open_trade_id,
                         close_time, close_trade_id, taker_buy_volume, taker_buy_turnover)
    SELECT symbol, date_bin('1 hour', bucket, epoch),
           (array_agg(open ORDER BY open_time, open_trade_id))[1], max(high), min(low),
           (array_agg(close ORDER BY close_time DESC, close_trade_id DESC))[1],
           sum(volume), sum(trades), sum(turnover), min(open_time),
           (array_agg(open_trade_id ORDER BY open_time, open_trade_id))[1], max(close_time),
           (array_agg(close_trade_id ORDER BY close_time DESC, close_trade_id DESC))[1],
           sum(taker_buy_volume), sum(taker_buy_turnover)
    FROM ohlc_1m
    WHERE (p_symbol IS NULL OR symbol = p_symbol) AND bucket >= hour_lo AND bucket < hour_hi
    GROUP BY 1, 2;
    GET DIAGNOSTICS hours = ROW_COUNT;
    DELETE FROM ohlc_1d WHERE (p_symbol IS NULL OR symbol = p_symbol) AND bucket >= day_lo AND bucket < day_hi;
    INSERT INTO ohlc_1d (symbol, bucket, open, high, low, close, volume, trades, turnover, open_time, open_trade_id,
                         close_time, close_trade_id, taker_buy_volume, taker_buy_turnover)
    SELECT symbol, date_bin('1 day', bucket, epoch),
           (array_agg(open ORDER BY open_time, open_trade_id))[1], max(high), min(low),
           (array_agg(close ORDER BY close_time DESC, close_trade_id DESC))[1],
           sum(volume), sum(trades), sum(turnover), min(open_time),
           (array_agg(open_trade_id ORDER BY open_time, open_trade_id))[1], max(close_time),
           (array_agg(close_trade_id ORDER BY close_time DESC, close_trade_id DESC))[1],
           sum(taker_buy_volume), sum(taker_buy_turnover)
    FROM ohlc_1h
    WHERE (p_symbol IS NULL OR symbol = p_symbol) AND bucket >= day_lo AND bucket < day_hi
    GROUP BY 1, 2;
    RETURN hours;
END
$$;

SELECT rebuild_tiers(NULL, min(bucket), max(bucket) + interval '1 minute') FROM ohlc_1m HAVING count(*) > 0;
