-- Stored tiers for the named intervals below a day (docs/architecture.md, "Storage lifecycle").
--
-- A candle grouped from n rows of a finer tier costs about n times a stored one. With ohlc_3m, ohlc_5m,
-- ohlc_30m, ohlc_2h, ohlc_4h and ohlc_6h beside ohlc_1m, ohlc_15m, ohlc_1h and ohlc_1d, every named interval
-- from 1m to 1d is one stored row per candle in UTC except 8h and 12h (two rows of ohlc_4h / ohlc_6h).
-- ohlc_3m and ohlc_5m are partitioned by month and kept as long as the minutes (RETENTION_MINUTES_DAYS);
-- ohlc_30m, ohlc_2h, ohlc_4h and ohlc_6h are kept for ever, like the quarter hours, hours and days. The
-- aggregator folds every tier in the batch's transaction.

CREATE TABLE ohlc_3m (LIKE ohlc_1h INCLUDING DEFAULTS INCLUDING GENERATED, PRIMARY KEY (symbol, bucket))
    PARTITION BY RANGE (bucket);
CREATE TABLE ohlc_3m_default PARTITION OF ohlc_3m DEFAULT;
CREATE TABLE ohlc_5m (LIKE ohlc_1h INCLUDING DEFAULTS INCLUDING GENERATED, PRIMARY KEY (symbol, bucket))
    PARTITION BY RANGE (bucket);
CREATE TABLE ohlc_5m_default PARTITION OF ohlc_5m DEFAULT;
CREATE TABLE ohlc_30m (LIKE ohlc_1h INCLUDING DEFAULTS INCLUDING GENERATED, PRIMARY KEY (symbol, bucket));
CREATE TABLE ohlc_2h (LIKE ohlc_1h INCLUDING DEFAULTS INCLUDING GENERATED, PRIMARY KEY (symbol, bucket));
CREATE TABLE ohlc_4h (LIKE ohlc_1h INCLUDING DEFAULTS INCLUDING GENERATED, PRIMARY KEY (symbol, bucket));
CREATE TABLE ohlc_6h (LIKE ohlc_1h INCLUDING DEFAULTS INCLUDING GENERATED, PRIMARY KEY (symbol, bucket));

-- Inserts the candles of `target` over [lo, hi) (of one symbol, or of all when p_symbol is NULL) grouped from
-- the rows of `source`, a finer tier, into buckets of `step` from the epoch; the range must hold none yet.
-- open/close are those of the row with the earliest open / latest close by (time, trade id), as the fold.
-- Returns the rows written.
CREATE FUNCTION fold_tier(target text, source text, step interval, p_symbol text, lo timestamptz,
                          hi timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    EXECUTE format($sql$
        INSERT INTO %1$I (symbol, bucket, open, high, low, close, volume, trades, turnover, open_time,
                          open_trade_id, close_time, close_trade_id, taker_buy_volume, taker_buy_turnover)
        SELECT symbol, date_bin($4, bucket, timestamptz 'epoch'),
               (array_agg(open ORDER BY open_time, open_trade_id COLLATE "C"))[1], max(high), min(low),
               (array_agg(close ORDER BY close_time DESC, close_trade_id COLLATE "C" DESC))[1],
               sum(volume), sum(trades), sum(turnover), min(open_time),
               (array_agg(open_trade_id ORDER BY open_time, open_trade_id COLLATE "C"))[1], max(close_time),
               (array_agg(close_trade_id ORDER BY close_time DESC, close_trade_id COLLATE "C" DESC))[1],
               sum(taker_buy_volume), sum(taker_buy_turnover)
        FROM %2$I
        WHERE ($1 IS NULL OR symbol = $1) AND bucket >= $2 AND bucket < $3
        GROUP BY 1, 2$sql$, target, source) USING p_symbol, lo, hi, step;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;

-- Recomputes the tiers over [lo, hi) (rounded out to whole UTC days), each from a finer one that divides it:
-- ohlc_3m and ohlc_5m from ohlc_1m, then ohlc_15m from ohlc_5m, ohlc_30m, ohlc_1h, ohlc_2h and ohlc_4h each
-- from the one before, ohlc_6h from ohlc_2h and ohlc_1d from ohlc_4h. Returns the hours written.
CREATE OR REPLACE FUNCTION rebuild_tiers(p_symbol text, lo timestamptz, hi timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    day_lo timestamptz := date_bin('1 day', lo, timestamptz 'epoch');
    day_hi timestamptz := date_bin('1 day', hi - interval '1 microsecond', timestamptz 'epoch') + interval '1 day';
    tiers constant text[][] := ARRAY[['ohlc_3m', 'ohlc_1m', '3 minutes'], ['ohlc_5m', 'ohlc_1m', '5 minutes'],
                                     ['ohlc_15m', 'ohlc_5m', '15 minutes'], ['ohlc_30m', 'ohlc_15m', '30 minutes'],
                                     ['ohlc_1h', 'ohlc_30m', '1 hour'], ['ohlc_2h', 'ohlc_1h', '2 hours'],
                                     ['ohlc_4h', 'ohlc_2h', '4 hours'], ['ohlc_6h', 'ohlc_2h', '6 hours'],
                                     ['ohlc_1d', 'ohlc_4h', '1 day']];
    hours bigint;
    written bigint;
BEGIN
    FOR i IN 1 .. array_length(tiers, 1) LOOP
        EXECUTE format('DELETE FROM %I WHERE ($1 IS NULL OR symbol = $1) AND bucket >= $2 AND bucket < $3',
                       tiers[i][1]) USING p_symbol, day_lo, day_hi;
        written := fold_tier(tiers[i][1], tiers[i][2], tiers[i][3]::interval, p_symbol, day_lo, day_hi);
        IF tiers[i][1] = 'ohlc_1h' THEN
            hours := written;
        END IF;
    END LOOP;
    RETURN hours;
END
$$;

-- The new tiers of what is stored: ohlc_3m and ohlc_5m in a partition per month that ohlc_1m has rows of (from
-- 2000 on; older ones stay in DEFAULT) and for the next days, from the minutes; ohlc_30m from the quarter hours,
-- ohlc_2h and ohlc_4h from the hours, which outlive the minutes.
SELECT ensure_partition(t.name, month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC')
FROM (SELECT DISTINCT date_trunc('month', bucket AT TIME ZONE 'UTC') AS month
      FROM ohlc_1m WHERE bucket >= timestamptz '2000-01-01 00:00:00+00') months
CROSS JOIN (VALUES ('ohlc_3m'), ('ohlc_5m')) t(name);
SELECT ensure_partitions(name, '1 month', now(), now() + interval '3 days') FROM (VALUES ('ohlc_3m'), ('ohlc_5m')) t(name);
SELECT fold_tier('ohlc_3m', 'ohlc_1m', '3 minutes', NULL, '-infinity', 'infinity');
SELECT fold_tier('ohlc_5m', 'ohlc_1m', '5 minutes', NULL, '-infinity', 'infinity');
SELECT fold_tier('ohlc_30m', 'ohlc_15m', '30 minutes', NULL, '-infinity', 'infinity');
SELECT fold_tier('ohlc_2h', 'ohlc_1h', '2 hours', NULL, '-infinity', 'infinity');
SELECT fold_tier('ohlc_4h', 'ohlc_2h', '4 hours', NULL, '-infinity', 'infinity');
SELECT fold_tier('ohlc_6h', 'ohlc_2h', '6 hours', NULL, '-infinity', 'infinity');
