"""The SQL that folds ticks into ticks_history, ohlc_1m and metrics_1m.

Only ticks newly inserted into ticks_history are folded, and every merge is order-independent:
open/close/last keep the tick with the earliest/latest (event_time, trade_id), high/low/min/max take
extremes, and sums add. So duplicates, redeliveries and out-of-order arrival all leave each candle
exactly as if every distinct tick had arrived once, in time order. Upserts are sorted by key so
concurrent replicas take row locks in the same order and cannot deadlock.
"""

from __future__ import annotations

# Aggregates of one (symbol, minute) over a set of ticks named {source}.
_MINUTES = """
SELECT symbol, date_trunc('minute', event_time) AS bucket,
       min(price) AS low, max(price) AS high, sum(size) AS volume, count(*) AS trades,
       sum(price * size) AS turnover, sum(price) AS price_sum,
       (array_agg(price ORDER BY event_time, trade_id))[1] AS open,
       (array_agg(event_time ORDER BY event_time, trade_id))[1] AS open_time,
       (array_agg(trade_id ORDER BY event_time, trade_id))[1] AS open_trade_id,
       (array_agg(price ORDER BY event_time, trade_id))[count(*)] AS close,
       (array_agg(event_time ORDER BY event_time, trade_id))[count(*)] AS close_time,
       (array_agg(trade_id ORDER BY event_time, trade_id))[count(*)] AS close_trade_id
FROM {source}
GROUP BY 1, 2
"""

_UPSERT_OHLC = """
INSERT INTO ohlc_1m AS c (symbol, bucket, open, high, low, close, volume, trades, turnover,
                          open_time, open_trade_id, close_time, close_trade_id)
SELECT symbol, bucket, open, high, low, close, volume, trades, turnover,
       open_time, open_trade_id, close_time, close_trade_id
FROM minutes ORDER BY symbol, bucket
ON CONFLICT (symbol, bucket) DO UPDATE SET
    open = CASE WHEN (excluded.open_time, excluded.open_trade_id) < (c.open_time, c.open_trade_id)
                THEN excluded.open ELSE c.open END,
    open_trade_id = CASE WHEN (excluded.open_time, excluded.open_trade_id) < (c.open_time, c.open_trade_id)
                         THEN excluded.open_trade_id ELSE c.open_trade_id END,
    open_time = least(c.open_time, excluded.open_time),
    close = CASE WHEN (excluded.close_time, excluded.close_trade_id) > (c.close_time, c.close_trade_id)
                 THEN excluded.close ELSE c.close END,
    close_trade_id = CASE WHEN (excluded.close_time, excluded.close_trade_id) > (c.close_time, c.close_trade_id)
                          THEN excluded.close_trade_id ELSE c.close_trade_id END,
    close_time = greatest(c.close_time, excluded.close_time),
    high = greatest(c.high, excluded.high),
    low = least(c.low, excluded.low),
    volume = c.volume + excluded.volume,
    trades = c.trades + excluded.trades,
    turnover = c.turnover + excluded.turnover,
    updated_at = now()
RETURNING symbol, bucket, open::float8, high::float8, low::float8, close::float8, volume::float8, trades,
          vwap::float8
"""

_UPSERT_METRICS = """
INSERT INTO metrics_1m AS m (symbol, bucket, min, max, price_sum, trades, volume, turnover,
                             last, last_time, last_trade_id)
SELECT symbol, bucket, low, high, price_sum, trades, volume, turnover, close, close_time, close_trade_id
FROM minutes ORDER BY symbol, bucket
ON CONFLICT (symbol, bucket) DO UPDATE SET
    min = least(m.min, excluded.min),
    max = greatest(m.max, excluded.max),
    price_sum = m.price_sum + excluded.price_sum,
    trades = m.trades + excluded.trades,
    volume = m.volume + excluded.volume,
    turnover = m.turnover + excluded.turnover,
    last = CASE WHEN (excluded.last_time, excluded.last_trade_id) > (m.last_time, m.last_trade_id)
                THEN excluded.last ELSE m.last END,
    last_trade_id = CASE WHEN (excluded.last_time, excluded.last_trade_id) > (m.last_time, m.last_trade_id)
                         THEN excluded.last_trade_id ELSE m.last_trade_id END,
    last_time = greatest(m.last_time, excluded.last_time),
    updated_at = now()
RETURNING 1
"""

# $1 symbol text[], $2 trade_id text[], $3 event time as µs since the epoch int8[], $4 price float8[],
# $5 size float8[], $6 side int2[], $7 source text[].
# Returns one row per symbol that gained ticks: its latest new tick and that tick's committed candle,
# plus the number of new ticks of the whole batch (same on every row).
FOLD_TICKS = f"""
WITH batch AS (
    SELECT symbol, trade_id, timestamptz 'epoch' + event_us * interval '1 microsecond' AS event_time,
           price::numeric AS price, size::numeric AS size, side, source
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::float8[], $5::float8[], $6::int2[], $7::text[])
         AS t(symbol, trade_id, event_us, price, size, side, source)
),
inserted AS (
    INSERT INTO ticks_history (symbol, trade_id, event_time, price, size, side, source)
    SELECT * FROM batch ORDER BY symbol, trade_id
    ON CONFLICT (symbol, trade_id) DO NOTHING
    RETURNING symbol, trade_id, event_time, price, size, side, source
),
minutes AS ({_MINUTES.format(source="inserted")}),
candles AS ({_UPSERT_OHLC}),
metrics AS ({_UPSERT_METRICS}),
latest AS (
    SELECT DISTINCT ON (symbol) symbol, trade_id, event_time, price::float8 AS price, size::float8 AS size,
           side, source
    FROM inserted ORDER BY symbol, event_time DESC, trade_id DESC
)
SELECT l.symbol, l.trade_id, l.event_time, l.price, l.size, l.side, l.source,
       c.bucket, c.open, c.high, c.low, c.close, c.volume, c.trades, c.vwap,
       (SELECT count(*) FROM inserted) AS inserted,
       (SELECT count(*) FROM metrics) AS minutes
FROM latest l
JOIN candles c ON c.symbol = l.symbol AND c.bucket = date_trunc('minute', l.event_time)
"""

# Rebuild: $1 symbol, $2 from (inclusive), $3 to (exclusive), both minute-aligned.
REBUILD_DELETE = """
WITH o AS (DELETE FROM ohlc_1m WHERE symbol = $1 AND bucket >= $2 AND bucket < $3)
DELETE FROM metrics_1m WHERE symbol = $1 AND bucket >= $2 AND bucket < $3
"""

REBUILD_INSERT = f"""
WITH minutes AS ({_MINUTES.format(
    source="(SELECT * FROM ticks_history WHERE symbol = $1 AND event_time >= $2 AND event_time < $3) AS t")}),
candles AS ({_UPSERT_OHLC}),
metrics AS ({_UPSERT_METRICS})
SELECT (SELECT count(*) FROM candles) AS minutes, (SELECT coalesce(sum(trades), 0) FROM minutes)::int8 AS ticks
"""

# Rebuilding must not interleave with folding the same rows: folds take ROW EXCLUSIVE on these tables.
REBUILD_LOCK = "LOCK TABLE ohlc_1m, metrics_1m IN SHARE ROW EXCLUSIVE MODE"

LEDGER_INSERT = """
INSERT INTO processed_messages (stream, seq)
SELECT $1, seq FROM unnest($2::int8[]) AS seq ORDER BY seq
ON CONFLICT DO NOTHING
RETURNING seq
"""

LEDGER_PRUNE = "DELETE FROM processed_messages WHERE stream = $1 AND seq <= $2"

RAW_COLUMNS = ("stream", "stream_seq", "symbol", "trade_id", "event_time", "price", "size", "side", "source")
