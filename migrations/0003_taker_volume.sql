-- Taker-side volume per minute: the trades whose aggressor bought (side 1 = BUY), in base units and in quote
-- units (price * size). Folded like volume and turnover (sums), so candles at every interval carry them.
ALTER TABLE ohlc_1m
    ADD COLUMN taker_buy_volume   numeric NOT NULL DEFAULT 0,
    ADD COLUMN taker_buy_turnover numeric NOT NULL DEFAULT 0;

-- Existing minutes get theirs from the ticks they were folded from.
UPDATE ohlc_1m o
SET taker_buy_volume = t.volume, taker_buy_turnover = t.turnover
FROM (SELECT symbol, date_trunc('minute', event_time) AS bucket, sum(size) AS volume, sum(price * size) AS turnover
      FROM ticks_history
      WHERE side = 1
      GROUP BY 1, 2) t
WHERE o.symbol = t.symbol AND o.bucket = t.bucket;
