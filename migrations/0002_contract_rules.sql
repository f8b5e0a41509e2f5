-- The contract's rules (buf.validate annotations in proto/) kept by the database too, so no path around
-- ingest can store what the API refuses. A test checks these against the proto's annotations.

-- Symbols: segments of A-Z0-9 joined by single '.', '_' or '-', 2 to 20 characters (always a valid
-- sequence of NATS subject tokens). NOT VALID: rows stored under the old, looser rule stay readable;
-- every insert and update is checked.
ALTER TABLE symbols DROP CONSTRAINT symbols_symbol_check;
ALTER TABLE symbols ADD CONSTRAINT symbols_symbol_check
    CHECK (symbol ~ '^[A-Z0-9]+([._-][A-Z0-9]+)*$' AND length(symbol) BETWEEN 2 AND 20) NOT VALID;
ALTER TABLE symbols ADD CONSTRAINT symbols_base_check CHECK (base ~ '^[A-Z0-9]{1,12}$') NOT VALID;
ALTER TABLE symbols ADD CONSTRAINT symbols_quote_check CHECK (quote ~ '^[A-Z0-9]{1,12}$') NOT VALID;

-- Ticks: bounded prices and sizes (every sum over a minute stays finite as a double) and event times
-- from 1970 on. A message breaking them is refused (SQLSTATE 23514) and dead-lettered by the aggregator.
ALTER TABLE ticks_history ADD CONSTRAINT ticks_history_price_check
    CHECK (price >= 1e-12 AND price <= 1e+12) NOT VALID;
ALTER TABLE ticks_history ADD CONSTRAINT ticks_history_size_check
    CHECK (size >= 0 AND size <= 1e+15) NOT VALID;
ALTER TABLE ticks_history ADD CONSTRAINT ticks_history_event_time_check
    CHECK (event_time >= timestamptz '1970-01-01 00:00:00+00') NOT VALID;

-- The ledger survives the recreation of its stream: processed_messages.stream (and ticks_raw.stream) hold
-- the stream's incarnation, `<name>@<creation time>`, so the sequences of a recreated stream never meet
-- the rows of the old one. ledger_floors keeps, per incarnation, the highest sequence whose ledger rows
-- were pruned (the consumer's ack floor then): a message at or below it was applied, so a recreated
-- consumer delivering the stream from its start writes nothing twice.
CREATE TABLE ledger_floors (
    stream     text PRIMARY KEY,
    seq        bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
