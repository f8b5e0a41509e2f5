"""The SQL that folds ticks into ticks_history, ohlc_1m, metrics_1m and the stored tiers (TIERS).

Only ticks newly inserted into ticks_history are folded, and every merge is order-independent:
open/close/last keep the tick with the earliest/latest (event_time, trade_id), high/low/min/max take
extremes, and sums add. So duplicates, redeliveries and out-of-order arrival all leave each candle
exactly as if every distinct tick had arrived once, in time order. Upserts are sorted by key so
concurrent replicas take row locks in the same order and cannot deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone


def utc_bucket(step: str, time: str) -> str:
    """SQL for the start of the UTC bucket of `step` (an interval literal such as '1 minute') holding `time`:
    the one bucketing of the aggregator, Rebuild, the stored tiers and the query service."""
    return f"date_bin('{step}', {time}, timestamptz 'epoch')"


def _minutes(source: str, close_tick: bool = False) -> str:
    """Aggregates of each (symbol, minute) of the ticks in `source`; with close_tick, the full latest tick too
    (for the live updates)."""
    close_tick_columns = """,
       (array_agg(size ORDER BY event_time, trade_id COLLATE "C"))[count(*)] AS close_size,
       (array_agg(side ORDER BY event_time, trade_id COLLATE "C"))[count(*)] AS close_side,
       (array_agg(source ORDER BY event_time, trade_id COLLATE "C"))[count(*)] AS close_source""" if close_tick else ""
    return f"""
SELECT symbol COLLATE "C" AS symbol, {utc_bucket('1 minute', 'event_time')} AS bucket,
       min(price) AS low, max(price) AS high, sum(size) AS volume, count(*) AS trades,
       sum(price * size) AS turnover, sum(price) AS price_sum,
       (array_agg(price ORDER BY event_time, trade_id COLLATE "C"))[1] AS open,
       (array_agg(event_time ORDER BY event_time, trade_id COLLATE "C"))[1] AS open_time,
       (array_agg(trade_id ORDER BY event_time, trade_id COLLATE "C"))[1] AS open_trade_id,
       (array_agg(price ORDER BY event_time, trade_id COLLATE "C"))[count(*)] AS close,
       (array_agg(event_time ORDER BY event_time, trade_id COLLATE "C"))[count(*)] AS close_time,
       (array_agg(trade_id ORDER BY event_time, trade_id COLLATE "C"))[count(*)] AS close_trade_id,
       coalesce(sum(size) FILTER (WHERE side = 1), 0) AS taker_buy_volume,
       coalesce(sum(price * size) FILTER (WHERE side = 1), 0) AS taker_buy_turnover{close_tick_columns}
FROM {source}
GROUP BY 1, 2
"""


def _upsert_candles(table: str, source: str, returning: str) -> str:
    """Merges the candles of `source` into `table`: order-independent (earliest open, latest close, sums)."""
    return f"""
INSERT INTO {table} AS c (symbol, bucket, open, high, low, close, volume, trades, turnover,
                          open_time, open_trade_id, close_time, close_trade_id,
                          taker_buy_volume, taker_buy_turnover)
SELECT symbol, bucket, open, high, low, close, volume, trades, turnover,
       open_time, open_trade_id, close_time, close_trade_id,
       taker_buy_volume, taker_buy_turnover
FROM {source} ORDER BY symbol, bucket
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
    taker_buy_volume = c.taker_buy_volume + excluded.taker_buy_volume,
    taker_buy_turnover = c.taker_buy_turnover + excluded.taker_buy_turnover,
    updated_at = now()
{returning}
"""


# The committed candle as doubles: its float8 copies (migration 0007), converted once as the row was written.
_CANDLE_RETURNING = """RETURNING symbol, bucket, open_float8 AS open, high_float8 AS high, low_float8 AS low,
          close_float8 AS close, volume_float8 AS volume, trades, vwap_float8 AS vwap, turnover_float8 AS quote_volume,
          taker_buy_volume_float8 AS taker_buy_volume, taker_buy_turnover_float8 AS taker_buy_quote_volume"""

# The stored tiers: candles of UTC 3, 5, 15 and 30 minutes, 1, 2, 4 and 6 hours and days, built from the batch's
# minute aggregates and merged exactly as minutes are (so they equal rebuild_tiers() over ohlc_1m, whatever the
# order of the ticks).
TIERS = {"ohlc_3m": "3 minutes", "ohlc_5m": "5 minutes", "ohlc_15m": "15 minutes", "ohlc_30m": "30 minutes",
         "ohlc_1h": "1 hour", "ohlc_2h": "2 hours", "ohlc_4h": "4 hours", "ohlc_6h": "6 hours", "ohlc_1d": "1 day"}


def _tier_buckets(step: str) -> str:
    return f"""
SELECT symbol, {utc_bucket(step, 'bucket')} AS bucket,
       min(low) AS low, max(high) AS high, sum(volume) AS volume, sum(trades) AS trades, sum(turnover) AS turnover,
       (array_agg(open ORDER BY open_time, open_trade_id COLLATE "C"))[1] AS open, min(open_time) AS open_time,
       (array_agg(open_trade_id ORDER BY open_time, open_trade_id COLLATE "C"))[1] AS open_trade_id,
       (array_agg(close ORDER BY close_time DESC, close_trade_id COLLATE "C" DESC))[1] AS close,
       max(close_time) AS close_time,
       (array_agg(close_trade_id ORDER BY close_time DESC, close_trade_id COLLATE "C" DESC))[1] AS close_trade_id,
       sum(taker_buy_volume) AS taker_buy_volume, sum(taker_buy_turnover) AS taker_buy_turnover
FROM minutes
GROUP BY 1, 2
"""


# A metrics row is locked only once its candle is (the semi-join on the candle upsert's RETURNING): whatever
# order the executor runs the two upserts in, concurrent batches meet first on a candle row, locked in key
# order, and so cannot deadlock.
_UPSERT_METRICS = """
INSERT INTO metrics_1m AS m (symbol, bucket, min, max, price_sum, trades, volume, turnover,
                             last, last_time, last_trade_id)
SELECT symbol, bucket, low, high, price_sum, trades, volume, turnover, close, close_time, close_trade_id
FROM minutes WHERE (symbol, bucket) IN (SELECT symbol, bucket FROM candles) ORDER BY symbol, bucket
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

# Sorts and groupings compare symbols and trade ids with COLLATE "C" (bytewise, no strcoll): symbols are
# [A-Z0-9._-] (ingest validates them), so upserts still take their row locks in one global order; each
# minute's latest tick is read from the per-minute aggregates (a few rows) rather than re-sorting every
# inserted tick.
def fold_sql(received: str = "") -> str:
    """The CTEs after `batch` (the ticks to fold) and the final SELECT: one row per (symbol, minute) that
    gained ticks, with the minute's latest new tick and its committed candle (each becomes a live update), and
    the number of new ticks of the whole batch (the same on every row). `received` adds a column."""
    tiers = "".join(f"""{table}_buckets AS ({_tier_buckets(step)}),
{table}_upserted AS ({_upsert_candles(table, f"{table}_buckets", "RETURNING 1")}),
""" for table, step in TIERS.items())
    return f"""
inserted AS (
    INSERT INTO ticks_history (symbol, trade_id, event_time, price, size, side, source)
    SELECT symbol, trade_id, event_time, price, size, side, source FROM batch
    ORDER BY symbol COLLATE "C", event_time, trade_id COLLATE "C"
    ON CONFLICT (symbol, event_time, trade_id) DO NOTHING
    RETURNING symbol, trade_id, event_time, price, size, side, source
),
minutes AS ({_minutes("inserted", close_tick=True)}),
candles AS ({_upsert_candles("ohlc_1m", "minutes", _CANDLE_RETURNING)}),
metrics AS ({_UPSERT_METRICS}),
{tiers}touched AS (
    SELECT symbol, bucket, close_trade_id AS trade_id, close_time AS event_time,
           close::float8 AS price, close_size::float8 AS size, close_side AS side, close_source AS source
    FROM minutes
),
counts AS (
    SELECT coalesce(sum(trades), 0)::int8 AS inserted, count(*) AS minutes FROM minutes
)
SELECT l.symbol, l.trade_id, l.event_time, l.price, l.size, l.side, l.source,
       c.bucket, c.open, c.high, c.low, c.close, c.volume, c.trades, c.vwap,
       c.quote_volume, c.taker_buy_volume, c.taker_buy_quote_volume,
       CASE WHEN p.closes = 9 THEN (p.close_sum + c.close) / 10 END AS sma10,
       n.inserted, n.minutes, (SELECT count(*) FROM metrics) AS metrics_rows{received}
FROM counts n
LEFT JOIN (touched l JOIN candles c ON c.symbol = l.symbol AND c.bucket = l.bucket) ON true
-- SMA10 of each minute: its close and the 9 stored minutes before it (the statement's own upserts are not
-- visible to it: a minute before it that this batch also touched counts with its previous close).
-- l.symbol is COLLATE "C": compared in the column's own collation, so each partition's primary key serves
-- the probe (else: a scan of every minute).
LEFT JOIN LATERAL (
    SELECT count(*) AS closes, sum(x.close)::float8 AS close_sum
    FROM (SELECT o.close FROM ohlc_1m o WHERE o.symbol = l.symbol COLLATE "default" AND o.bucket < l.bucket
          ORDER BY o.bucket DESC LIMIT 9) x
) p ON l.symbol IS NOT NULL
ORDER BY l.symbol, l.bucket
"""


# The aggregator's whole batch in one statement (one round trip, one implicit transaction): the ledger
# insert of the batch's message sequences (those above the stream incarnation's pruned floor: at or below
# it, a message was applied before its ledger row was pruned), the ticks of the messages that were new to the ledger into
# ticks_raw (as received, doubles) and folded (fold_sql). A redelivered message finds its
# sequence in the ledger and contributes nothing.
# $1 stream incarnation (`<name>@<created>`), $2 message seqs int8[], then per tick: $3 message seq, $4 symbol, $5 trade_id, $6 event µs,
# $7 price float8[], $8 size float8[], $9 side, $10 source.
# COMMIT_BATCH takes $3..$6, $9 and $10 as arrays. COMMIT_BATCH_JOINED takes them as one text each: the
# integers joined by ',', the strings by JOINED_SEPARATOR (when no string contains it), which costs the
# client a fraction of encoding arrays element by element (asyncpg type-checks every element).
# Always returns at least one row: `received` (ticks of new messages) and `inserted` (distinct new ticks);
# symbol is NULL on that row when no tick was new.
JOINED_SEPARATOR = "\x1f"


# Doubles become numerics through their text form (`batch`), the shortest decimal that reads back as the same
# double (extra_float_digits >= 1, which the aggregator's pool sets): a direct float8::numeric keeps only 15
# significant digits. So ticks_raw, ticks_history and the candles agree.
def _commit_batch(inputs: str) -> str:
    return f"""
WITH ledger AS (
    INSERT INTO processed_messages (stream, seq)
    SELECT $1, seq FROM unnest($2::int8[]) AS seq
    WHERE seq > coalesce((SELECT f.seq FROM ledger_floors f WHERE f.stream = $1), 0)
    ORDER BY seq
    ON CONFLICT DO NOTHING
    RETURNING seq
),
fresh AS (
    SELECT t.seq, t.symbol, t.trade_id, timestamptz 'epoch' + t.event_us * interval '1 microsecond' AS event_time,
           t.price AS price_f, t.size AS size_f, t.side, t.source
    FROM unnest({inputs}) AS t(seq, symbol, trade_id, event_us, price, size, side, source)
    WHERE t.seq IN (SELECT seq FROM ledger)
),
raw AS (
    INSERT INTO ticks_raw (stream, stream_seq, symbol, trade_id, event_time, price, size, side, source)
    SELECT $1, seq, symbol, trade_id, event_time, price_f, size_f, side, source FROM fresh
),
batch AS (
    SELECT symbol, trade_id, event_time, price_f::text::numeric AS price, size_f::text::numeric AS size, side, source
    FROM fresh
),
{fold_sql(received=", (SELECT count(*) FROM fresh) AS received")}"""


COMMIT_BATCH = _commit_batch(
    "$3::int8[], $4::text[], $5::text[], $6::int8[], $7::float8[], $8::float8[], $9::int2[], $10::text[]")

COMMIT_BATCH_JOINED = _commit_batch("string_to_array($3::text, ',')::int8[], string_to_array($4::text, E'\\x1f'), "
           "string_to_array($5::text, E'\\x1f'), string_to_array($6::text, ',')::int8[], $7::float8[], $8::float8[], "
           "string_to_array($9::text, ',')::int2[], string_to_array($10::text, E'\\x1f')")

# Rebuild: $1 symbol, $2 from (inclusive), $3 to (exclusive), both minute-aligned.
REBUILD_DELETE = """
WITH o AS (DELETE FROM ohlc_1m WHERE symbol = $1 AND bucket >= $2 AND bucket < $3)
DELETE FROM metrics_1m WHERE symbol = $1 AND bucket >= $2 AND bucket < $3
"""

REBUILD_INSERT = f"""
WITH minutes AS ({_minutes("(SELECT * FROM ticks_history WHERE symbol = $1 AND event_time >= $2 AND event_time < $3) AS t")}),
candles AS ({_upsert_candles("ohlc_1m", "minutes", _CANDLE_RETURNING)}),
metrics AS ({_UPSERT_METRICS})
SELECT (SELECT count(*) FROM candles) AS minutes, (SELECT coalesce(sum(trades), 0) FROM minutes)::int8 AS ticks
"""

# The stored tiers over the days overlapping [$2, $3), from the rebuilt minutes (rebuild_tiers, migration 0006).
REBUILD_TIERS = "SELECT rebuild_tiers($1, $2, $3)"

# Rebuilding must not interleave with folding the same rows: folds take ROW EXCLUSIVE on these tables.
REBUILD_LOCK = f"LOCK TABLE ohlc_1m, metrics_1m, {', '.join(TIERS)} IN SHARE ROW EXCLUSIVE MODE"

# $1 stream incarnation, $2 the consumer's ack floor: every message at or below it is done for good. The
# floor is kept (never lowered: a recreated consumer starts at 0) and the ledger rows below it dropped.
LEDGER_PRUNE = """
WITH floor AS (
    INSERT INTO ledger_floors AS f (stream, seq) VALUES ($1, $2)
    ON CONFLICT (stream) DO UPDATE SET seq = greatest(f.seq, excluded.seq), updated_at = now()
)
DELETE FROM processed_messages WHERE stream = $1 AND seq <= $2
"""

# On subscribe: $1 the stream's name, $2 its current incarnation. Ledger rows written under the bare name
# (before incarnations) become the current incarnation's; those of older incarnations, whose messages
# can never be delivered again, are dropped.
LEDGER_RECONCILE = """
WITH adopted AS (
    UPDATE processed_messages SET stream = $2 WHERE stream = $1
),
adopted_floor AS (
    UPDATE ledger_floors SET stream = $2 WHERE stream = $1
        AND NOT EXISTS (SELECT 1 FROM ledger_floors WHERE stream = $2)
),
stale_floors AS (
    DELETE FROM ledger_floors WHERE left(stream, length($1) + 1) = $1 || '@' AND stream <> $2
)
DELETE FROM processed_messages WHERE left(stream, length($1) + 1) = $1 || '@' AND stream <> $2
"""


def stream_incarnation(name: str, created: datetime | None) -> str:
    """The ledger's key of one incarnation of a stream: its name and creation time."""
    if created is None:
        return name
    return f"{name}@{created.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S.%fZ}"

# Columns of ticks_raw, in the order the audit rows are written (the benchmark COPYs them as a ceiling).
RAW_COLUMNS = ("stream", "stream_seq", "symbol", "trade_id", "event_time", "price", "size", "side", "source")


@dataclass
class TickColumns:
    """Ticks as the columns COMMIT_BATCH takes (event time in µs since the epoch)."""

    symbols: list[str] = field(default_factory=list)
    trade_ids: list[str] = field(default_factory=list)
    event_us: list[int] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)
    sizes: list[float] = field(default_factory=list)
    sides: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.symbols)

    def extend(self, other: TickColumns) -> None:
        self.symbols.extend(other.symbols)
        self.trade_ids.extend(other.trade_ids)
        self.event_us.extend(other.event_us)
        self.prices.extend(other.prices)
        self.sizes.extend(other.sizes)
        self.sides.extend(other.sides)
        self.sources.extend(other.sources)


def _joined(values: list[str]) -> str | None:
    """The strings joined by the separator, or None if one of them contains it (or the result would be the
    empty string, which string_to_array reads as no element at all)."""
    joined = JOINED_SEPARATOR.join(values)
    return joined if joined and joined.count(JOINED_SEPARATOR) == len(values) - 1 else None


def commit_arguments(stream: str, seqs: list[int], tick_seqs: list[int], ticks: TickColumns) -> tuple[object, ...]:
    """COMMIT_BATCH_JOINED and its arguments, or COMMIT_BATCH's when a string holds the separator.

    seqs: the stream sequences of the messages; tick_seqs: the sequence of each tick's message."""
    texts = [_joined(ticks.symbols), _joined(ticks.trade_ids), _joined(ticks.sources)]
    if all(text is not None for text in texts):
        return (COMMIT_BATCH_JOINED, stream, seqs, ",".join(map(str, tick_seqs)), texts[0], texts[1],
                ",".join(map(str, ticks.event_us)), ticks.prices, ticks.sizes, ",".join(map(str, ticks.sides)),
                texts[2])
    return (COMMIT_BATCH, stream, seqs, tick_seqs, ticks.symbols, ticks.trade_ids, ticks.event_us, ticks.prices,
            ticks.sizes, ticks.sides, ticks.sources)
