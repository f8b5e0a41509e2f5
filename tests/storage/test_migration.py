"""Migrations 0004 to 0007 convert a database holding data: every row kept, in its day's (month's) partition,
the stored tiers built from the minutes with float8 copies of their numerics, and deduplication by
(symbol, event_time, trade_id)."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg

from marketdata.aggregator import rollup
from marketdata.migrate.migrations import DEFAULT_DIRECTORY, apply
from tests.support.infra import create_database, drop_database

TABLES = ("ticks_raw", "ticks_history", "ohlc_1m", "metrics_1m")


async def test_existing_data_is_converted_into_partitions(postgres_url: str, tmp_path: Path) -> None:
    before_0004 = tmp_path / "migrations"
    before_0004.mkdir()
    for path in sorted(DEFAULT_DIRECTORY.glob("000[123]_*.sql")):
        shutil.copy(path, before_0004)
    url = await create_database(postgres_url, migrate=False)
    try:
        await apply(url, before_0004)
        conn = await asyncpg.connect(url)
        try:
            now = datetime.now(timezone.utc)
            await conn.execute("INSERT INTO symbols (symbol, base, quote) VALUES ('MIGX', 'MIG', 'X')")
            # Ten days of a tick every 7 minutes, and one from 1999 (kept in DEFAULT) of size 0: candles without
            # volume, whose vwap is their close.
            await conn.execute("""
                INSERT INTO ticks_history (symbol, trade_id, event_time, price, size, side)
                SELECT 'MIGX', 't' || i, $1::timestamptz - i * interval '7 minutes', 100 + i % 7, 1 + i % 3, 1 + i % 2
                FROM generate_series(1, 2000) i
                UNION ALL SELECT 'MIGX', 'old', timestamptz '1999-06-01 00:00:00+00', 5, 0, 1""", now)
            await conn.execute("""
                INSERT INTO ticks_raw (stream, stream_seq, symbol, trade_id, event_time, price, size, side, source,
                                       received_at)
                SELECT 'S', 1, symbol, trade_id, event_time, price, size, side, source, event_time FROM ticks_history""")
            for table, columns in (("ohlc_1m", "open, high, low, close, volume, trades, turnover, open_time, "
                                                "open_trade_id, close_time, close_trade_id, taker_buy_volume, "
                                                "taker_buy_turnover"),
                                   ("metrics_1m", "min, max, price_sum, trades, volume, turnover, last, last_time, "
                                                  "last_trade_id")):
                values = ("price, price, price, price, size, 1, price * size, event_time, trade_id, event_time, "
                          "trade_id, CASE WHEN side = 1 THEN size ELSE 0 END, CASE WHEN side = 1 THEN price * size "
                          "ELSE 0 END") if table == "ohlc_1m" else \
                    "price, price, price, 1, size, price * size, price, event_time, trade_id"
                await conn.execute(f"INSERT INTO {table} (symbol, bucket, {columns}) SELECT symbol, "
                                   f"date_bin('1 minute', event_time, timestamptz 'epoch'), {values} FROM ticks_history")
            counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
            snapshot = {t: await conn.fetch(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4") for t in TABLES}
        finally:
            await conn.close()

        applied = await apply(url, DEFAULT_DIRECTORY)
        assert [m.version for m in applied] == [4, 5, 6, 7]

        conn = await asyncpg.connect(url)
        try:
            for table in TABLES:
                assert await conn.fetchval(f"SELECT count(*) FROM {table}") == counts[table], table
                rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4")
                columns = list(snapshot[table][0].keys())
                assert [{c: r[c] for c in columns} for r in rows] == [dict(r) for r in snapshot[table]], table
                # Every row in a partition of its own day (month); only the 1999 tick in DEFAULT.
                in_default = await conn.fetchval(f"SELECT count(*) FROM {table}_default")
                assert in_default == (1 if table in ("ticks_history", "ticks_raw", "ohlc_1m", "metrics_1m") else 0)
            days = await conn.fetchval("SELECT count(DISTINCT tableoid) FROM ticks_history WHERE trade_id <> 'old'")
            assert days >= 10
            # The tiers: one row per bucket with minutes, their sums equal the minutes'.
            for tier, step in rollup.TIERS.items():
                got = await conn.fetchrow(f"SELECT count(*) AS rows, sum(volume) AS volume, "
                                          f"sum(taker_buy_volume) AS taker FROM {tier}")
                want = await conn.fetchrow(f"SELECT count(DISTINCT date_bin('{step}', bucket, timestamptz 'epoch')) "
                                           "AS rows, sum(volume) AS volume, sum(taker_buy_volume) AS taker FROM ohlc_1m")
                assert dict(got) == dict(want), tier
            # Every tier's float8 copies are its numerics converted, vwap's included.
            for tier in ("ohlc_1m", *rollup.TIERS):
                differing = await conn.fetchval(f"""
                    SELECT count(*) FROM {tier}
                    WHERE (open_float8, high_float8, low_float8, close_float8, volume_float8, vwap_float8,
                           turnover_float8, taker_buy_volume_float8, taker_buy_turnover_float8)
                          IS DISTINCT FROM (open::float8, high::float8, low::float8, close::float8, volume::float8,
                                            vwap::float8, turnover::float8, taker_buy_volume::float8,
                                            taker_buy_turnover::float8)""")
                assert differing == 0, tier
                assert await conn.fetchval(f"SELECT vwap_float8 FROM {tier} WHERE bucket < '2000-01-01'") == 5.0, tier
            # ohlc_3m and ohlc_5m are partitioned like the minutes: only the 1999 minute's bucket in DEFAULT.
            assert await conn.fetchval("SELECT count(*) FROM ohlc_3m_default") == 1
            assert await conn.fetchval("SELECT count(*) FROM ohlc_5m_default") == 1
            first = await conn.fetchrow("SELECT * FROM ohlc_1h ORDER BY bucket DESC LIMIT 1")
            minutes = await conn.fetch("SELECT * FROM ohlc_1m WHERE bucket >= $1 AND bucket < $2 ORDER BY bucket",
                                       first["bucket"], first["bucket"] + timedelta(hours=1))
            assert first["open"] == minutes[0]["open"] and first["close"] == minutes[-1]["close"]
            assert first["high"] == max(m["high"] for m in minutes) and first["trades"] == len(minutes)
            # Dedup key (symbol, event_time, trade_id): the same tick again is refused, a trade id reused at
            # another time is another tick.
            row = await conn.fetchrow("SELECT * FROM ticks_history WHERE trade_id = 't1'")
            insert = ("INSERT INTO ticks_history (symbol, trade_id, event_time, price, size) VALUES ($1, $2, $3, 1, 1) "
                      "ON CONFLICT (symbol, event_time, trade_id) DO NOTHING")
            assert await conn.execute(insert, "MIGX", "t1", row["event_time"]) == "INSERT 0 0"
            assert await conn.execute(insert, "MIGX", "t1", row["event_time"] + timedelta(seconds=1)) == "INSERT 0 1"
            assert await conn.fetchval("SELECT count(*) FROM ticks_recent") > 0
        finally:
            await conn.close()
    finally:
        await drop_database(postgres_url, url)
