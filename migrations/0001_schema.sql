-- Instruments. A statement-level trigger tells every listener (ingest replicas) that the registry changed.
CREATE TABLE symbols (
    symbol     text PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9._-]{2,20}$'),
    base       text NOT NULL,
    quote      text NOT NULL,
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION notify_symbols_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('marketdata_symbols', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER symbols_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON symbols
    FOR EACH STATEMENT EXECUTE FUNCTION notify_symbols_changed();

-- Ledger of the JetStream messages already applied, written in the same transaction as their ticks:
-- a redelivered message finds its sequence here and is skipped whole. Rows below the consumer's
-- ack floor can never be redelivered and are pruned.
CREATE TABLE processed_messages (
    stream       text NOT NULL,
    seq          bigint NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, seq)
);

-- Audit: every tick of every applied message, as received (doubles, exactly as on the wire).
CREATE TABLE ticks_raw (
    stream      text NOT NULL,
    stream_seq  bigint NOT NULL,
    symbol      text NOT NULL,
    trade_id    text NOT NULL,
    event_time  timestamptz NOT NULL,
    price       double precision NOT NULL,
    size        double precision NOT NULL,
    side        smallint NOT NULL,
    source      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticks_raw_received_at_brin ON ticks_raw USING brin (received_at);

-- Deduplicated ticks: one row per (symbol, trade_id). Exact numerics so sums never drift.
CREATE TABLE ticks_history (
    symbol      text NOT NULL,
    trade_id    text COLLATE "C" NOT NULL,
    event_time  timestamptz NOT NULL,
    price       numeric NOT NULL,
    size        numeric NOT NULL,
    side        smallint NOT NULL DEFAULT 0,
    source      text NOT NULL DEFAULT '',
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, trade_id)
);
CREATE INDEX ticks_history_symbol_time ON ticks_history (symbol, event_time, trade_id);
CREATE INDEX ticks_history_event_time_brin ON ticks_history USING brin (event_time);

-- The latest hour of ticks.
CREATE VIEW ticks_recent AS
SELECT symbol, trade_id, event_time, price, size, side, source
FROM ticks_history
WHERE event_time >= now() - interval '1 hour';

-- One candle per symbol and minute. open/close remember which tick set them, (event_time, trade_id),
-- so ticks folded in any order and any grouping give the same candle. Trade ids compare bytewise
-- (COLLATE "C") so ties break the same way whatever the database locale.
CREATE TABLE ohlc_1m (
    symbol         text NOT NULL,
    bucket         timestamptz NOT NULL,
    open           numeric NOT NULL,
    high           numeric NOT NULL,
    low            numeric NOT NULL,
    close          numeric NOT NULL,
    volume         numeric NOT NULL,
    trades         bigint NOT NULL,
    turnover       numeric NOT NULL,
    vwap           numeric GENERATED ALWAYS AS (CASE WHEN volume > 0 THEN turnover / volume ELSE close END) STORED,
    open_time      timestamptz NOT NULL,
    open_trade_id  text COLLATE "C" NOT NULL,
    close_time     timestamptz NOT NULL,
    close_trade_id text COLLATE "C" NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, bucket)
);
CREATE INDEX ohlc_1m_bucket_brin ON ohlc_1m USING brin (bucket);

-- Minute statistics: min/max/avg/vwap/volume/last.
CREATE TABLE metrics_1m (
    symbol        text NOT NULL,
    bucket        timestamptz NOT NULL,
    min           numeric NOT NULL,
    max           numeric NOT NULL,
    price_sum     numeric NOT NULL,
    trades        bigint NOT NULL,
    volume        numeric NOT NULL,
    turnover      numeric NOT NULL,
    avg           numeric GENERATED ALWAYS AS (price_sum / trades) STORED,
    vwap          numeric GENERATED ALWAYS AS (CASE WHEN volume > 0 THEN turnover / volume ELSE price_sum / trades END) STORED,
    last          numeric NOT NULL,
    last_time     timestamptz NOT NULL,
    last_trade_id text COLLATE "C" NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, bucket)
);
CREATE INDEX metrics_1m_bucket_brin ON metrics_1m USING brin (bucket);
