-- float8 copies of the candle tiers' numerics, for reads (docs/architecture.md, "Storage lifecycle").
--
-- The numeric columns stay the truth: the fold merges them exactly and in any order. But a page of 500
-- candles converted nine numerics a row to float8 on every read, and PostgreSQL converts a numeric to float8
-- through its decimal text (numeric_out, then float8in): about a quarter of the statement's time. These
-- columns hold the same conversion, made once when a row is written; reads of stored candles return them as
-- they are. vwap_float8 restates vwap's expression, as a generated column cannot read another one.
--
-- Adding a stored generated column rewrites each table under an exclusive lock: ingest waits for it (14 s for
-- 2 million minutes and their tiers on a 2-core machine).

DO $$
DECLARE
    tier text;
BEGIN
    FOREACH tier IN ARRAY ARRAY['ohlc_1m', 'ohlc_3m', 'ohlc_5m', 'ohlc_15m', 'ohlc_30m', 'ohlc_1h', 'ohlc_2h',
                                'ohlc_4h', 'ohlc_6h', 'ohlc_1d'] LOOP
        EXECUTE format($sql$
            ALTER TABLE %I
                ADD COLUMN open_float8 float8 GENERATED ALWAYS AS (open::float8) STORED,
                ADD COLUMN high_float8 float8 GENERATED ALWAYS AS (high::float8) STORED,
                ADD COLUMN low_float8 float8 GENERATED ALWAYS AS (low::float8) STORED,
                ADD COLUMN close_float8 float8 GENERATED ALWAYS AS (close::float8) STORED,
                ADD COLUMN volume_float8 float8 GENERATED ALWAYS AS (volume::float8) STORED,
                ADD COLUMN vwap_float8 float8
                    GENERATED ALWAYS AS ((CASE WHEN volume > 0 THEN turnover / volume ELSE close END)::float8) STORED,
                ADD COLUMN turnover_float8 float8 GENERATED ALWAYS AS (turnover::float8) STORED,
                ADD COLUMN taker_buy_volume_float8 float8 GENERATED ALWAYS AS (taker_buy_volume::float8) STORED,
                ADD COLUMN taker_buy_turnover_float8 float8 GENERATED ALWAYS AS (taker_buy_turnover::float8) STORED
        $sql$, tier);
    END LOOP;
END
$$;
