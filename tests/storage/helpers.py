"""Committing ticks with the aggregator's own statement, and reading the stored tiers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from marketdata.aggregator import rollup
from tests.support.ticks import TickSpec, expected_candles

TIER_STEPS = {"ohlc_1m": timedelta(minutes=1), "ohlc_3m": timedelta(minutes=3), "ohlc_5m": timedelta(minutes=5),
              "ohlc_15m": timedelta(minutes=15), "ohlc_30m": timedelta(minutes=30), "ohlc_1h": timedelta(hours=1),
              "ohlc_2h": timedelta(hours=2), "ohlc_4h": timedelta(hours=4), "ohlc_6h": timedelta(hours=6),
              "ohlc_1d": timedelta(days=1)}
COLUMNS = ("open", "high", "low", "close", "volume", "trades", "turnover", "taker_buy_volume")


def columns_of(ticks: Sequence[TickSpec]) -> rollup.TickColumns:
    columns = rollup.TickColumns()
    for tick in ticks:
        columns.extend(rollup.TickColumns([tick.symbol], [tick.trade_id], [tick.event_us], [tick.price],
                                          [tick.size], [side_of(tick)], ["test"]))
    return columns


def side_of(tick: TickSpec) -> int:
    return 1 if int(tick.trade_id.rsplit("-", 1)[-1]) % 3 else 2


async def commit(pool: asyncpg.Pool, stream: str, messages: Sequence[tuple[int, Sequence[TickSpec]]]) -> int:
    """Commits messages (sequence, ticks) as one aggregator batch; returns the ticks new to ticks_history."""
    seqs = [seq for seq, _ in messages]
    tick_seqs = [seq for seq, ticks in messages for _ in ticks]
    ticks = columns_of([tick for _, ticks in messages for tick in ticks])
    rows = await pool.fetch(*rollup.commit_arguments(stream, seqs, tick_seqs, ticks))
    return rows[0]["inserted"]


def expected_tier(ticks: Sequence[TickSpec], tier: str,
                  sided: bool = True) -> dict[tuple[str, datetime], dict[str, object]]:
    """The tier's candles computed in Python from the distinct ticks, plus their taker-buy volume: of the ticks
    whose side_of is BUY when they were committed with sides, none otherwise (ingested without a side)."""
    step = TIER_STEPS[tier]
    expected = expected_candles(ticks, step)
    buys = expected_candles([t for t in ticks if sided and side_of(t) == 1], step)
    for key, candle in expected.items():
        candle["taker_buy_volume"] = buys[key]["volume"] if key in buys else Decimal(0)
    return expected


async def stored_tier(conn: asyncpg.Connection, tier: str, symbols: Sequence[str]) -> dict:
    rows = await conn.fetch(f"SELECT * FROM {tier} WHERE symbol = ANY($1)", list(symbols))
    return {(r["symbol"], r["bucket"]): {name: r[name] for name in COLUMNS} for r in rows}


def assert_tier(tier: str, stored: dict, expected: dict) -> None:
    assert set(stored) == set(expected), f"{tier} has other buckets than the ticks"
    for key, want in expected.items():
        got = stored[key]
        for name in COLUMNS:
            assert got[name] == want[name], f"{tier} {key} {name}: {got[name]} != {want[name]}"
