-- A stored 15-minute tier (docs/architecture.md, "Storage lifecycle").
--
-- 15m and 30m candles read 15 or 30 minute rows each from ohlc_1m; ohlc_15m makes that 1 or 2. Every UTC
-- offset in use is a multiple of 15 minutes, so in zones such as Asia/Kolkata (+05:30) or Asia/Kathmandu
-- (+05:45) hour, day, week and month buckets are whole quarter hours too: those read ohlc_15m instead of
-- ohlc_1m. The aggregator folds it in the batch's transaction like the other tiers; kept for ever.

CREATE TABLE ohlc_15m (LIKE ohlc_1h INCLUDING DEFAULTS INCLUDING GENERATED, PRIMARY KEY (symbol, bucket));

-- Recomputes the tiers over [lo, hi) (rounded out to whole days), each from the one below it: ohlc_15m from
-- ohlc_1m, ohlc_1h from ohlc_15m, ohlc_1d from ohlc_1h (of one symbol, or of all when p_symbol is NULL).
-- Returns the hours written. open/close are those of the bucket with the earliest open / latest close by
-- (time, trade id), as the fold.
CREATE OR REPLACE FUNCTION rebuild_tiers(p_symbol text, lo timestamptz, hi timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    epoch constant timestamptz := timestamptz '1970-01-01 00:00:00+00';
    day_lo timestamptz := date_bin('1 day', lo, epoch);
    day_hi timestamptz := date_bin('1 day', hi - interval '1 microsecond', epoch) + interval '1 day';
    tiers constant text[][] := ARRAY[['ohlc_15m', 'ohlc_1m', '15 minutes'], ['ohlc_1h', 'ohlc_15m', '1 hour'],
                                     ['ohlc_1d', 'ohlc_1h', '1 day']];
    hours bigint;
    written bigint;
BEGIN
    FOR i IN 1 .. array_length(tiers, 1) LOOP
        EXECUTE format('DELETE FROM %I WHERE ($1 IS NULL OR symbol = $1) AND bucket >= $2 AND bucket < $3',
                       tiers[i][1]) USING p_symbol, day_lo, day_hi;
        EXECUTE format($sql$
            INSERT INTO %1$I (symbol, bucket, open, high, low, close, volume, trades, turnover, open_time,
                              open_trade_id, close_time, close_trade_id, taker_buy_volume, taker_buy_turnover)
            SELECT symbol, date_bin(%3$L, bucket, $4),
                   (array_agg(open ORDER BY open_time, open_trade_id))[1], max(high), min(low),
                   (array_agg(close ORDER BY close_time DESC, close_trade_id DESC))[1],
                   sum(volume), sum(trades), sum(turnover), min(open_time),
                   (array_agg(open_trade_id ORDER BY open_time, open_trade_id))[1], max(close_time),
                   (array_agg(close_trade_id ORDER BY close_time DESC, close_trade_id DESC))[1],
                   sum(taker_buy_volume), sum(taker_buy_turnover)
            FROM %2$I
            WHERE ($1 IS NULL OR symbol = $1) AND bucket >= $2 AND bucket < $3
            GROUP BY 1, 2$sql$, tiers[i][1], tiers[i][2], tiers[i][3]) USING p_symbol, day_lo, day_hi, epoch;
        GET DIAGNOSTICS written = ROW_COUNT;
        IF tiers[i][1] = 'ohlc_1h' THEN
            hours := written;
        END IF;
    END LOOP;
    RETURN hours;
END
$$;

SELECT rebuild_tiers(NULL, min(bucket), max(bucket) + interval '1 minute') FROM ohlc_1m HAVING count(*) > 0;
