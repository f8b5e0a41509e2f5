"""Synthetic ticks for the bench, and the same ticks in every shape a measured hop needs: PublishTicks
request bytes, webhook JSON, JetStream TickBatch payloads (as ingest would publish them), unnest arrays for
the rollup SQL and records for COPY. All of it is built before a timed section starts."""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from marketdata.ingest.publisher import TICKS_PER_MESSAGE
from marketdata.v1 import events_pb2, ingest_pb2, market_pb2

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SOURCE = "bench"


@dataclass
class Batch:
    """One client batch of ticks, as columns."""

    symbols: list[str]
    trade_ids: list[str]
    event_us: list[int]
    prices: list[float]
    sizes: list[float]
    sides: list[int]

    def __len__(self) -> int:
        return len(self.symbols)

    def protos(self) -> list[market_pb2.Tick]:
        return [market_pb2.Tick(symbol=s, price=p, size=z, trade_id=t, side=d, source=SOURCE,
                                event_time=Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000))
                for s, t, us, p, z, d in zip(self.symbols, self.trade_ids, self.event_us, self.prices,
                                             self.sizes, self.sides)]

    def request_bytes(self) -> bytes:
        return ingest_pb2.PublishTicksRequest(items=self.protos()).SerializeToString()

    def webhook_json(self) -> bytes:
        items = [{"symbol": s, "price": p, "size": z, "tradeId": t, "side": "SIDE_BUY" if d == 1 else "SIDE_SELL",
                  "source": SOURCE, "eventTime": _rfc3339(us)}
                 for s, t, us, p, z, d in zip(self.symbols, self.trade_ids, self.event_us, self.prices,
                                              self.sizes, self.sides)]
        return json.dumps({"items": items}, separators=(",", ":")).encode()

    def jetstream_messages(self, subject_prefix: str) -> list[tuple[str, bytes]]:
        """(subject, TickBatch payload) per symbol chunk, exactly as ingest splits a batch."""
        groups: dict[str, list[market_pb2.Tick]] = defaultdict(list)
        for tick in self.protos():
            groups[tick.symbol].append(tick)
        out = []
        for symbol, ticks in groups.items():
            for start in range(0, len(ticks), TICKS_PER_MESSAGE):
                payload = events_pb2.TickBatch(items=ticks[start:start + TICKS_PER_MESSAGE]).SerializeToString(
                    deterministic=True)
                out.append((f"{subject_prefix}.{symbol}", payload))
        return out

    def fold_args(self, symbol_prefix: str = "") -> tuple[list, ...]:
        """The 7 arrays of measure.FOLD_TICKS; symbols renamed with symbol_prefix (fresh symbols)."""
        symbols = [symbol_prefix + s for s in self.symbols] if symbol_prefix else list(self.symbols)
        return (symbols, list(self.trade_ids), list(self.event_us), list(self.prices), list(self.sizes),
                list(self.sides), [SOURCE] * len(self))

    def raw_records(self, stream: str, seq: int) -> list[tuple[object, ...]]:
        return [(stream, seq, s, t, EPOCH + timedelta(microseconds=us), p, z, d, SOURCE)
                for s, t, us, p, z, d in zip(self.symbols, self.trade_ids, self.event_us, self.prices,
                                             self.sizes, self.sides)]


def _rfc3339(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_us() -> int:
    return time.time_ns() // 1000


def make_batches(tag: str, symbols: list[str], count: int, batch_size: int, seed: int = 1,
                 span_seconds: float | None = None) -> list[Batch]:
    """count distinct ticks (trade ids '<tag>-<n>') in time order, ending 2 s ago, round-robin over symbols.

    Ticks are 1 ms apart unless span_seconds is given, so a 5,000-tick batch covers ~5 s (a few minutes
    of candles per symbol), like a live feed."""
    rng = random.Random(seed)
    step = int(span_seconds * 1e6 / count) if span_seconds else 1000
    end = now_us() - 2_000_000
    start = end - step * count
    batches = []
    for first in range(0, count, batch_size):
        n = min(batch_size, count - first)
        idx = range(first, first + n)
        batches.append(Batch(
            symbols=[symbols[i % len(symbols)] for i in idx],
            trade_ids=[f"{tag}-{i}" for i in idx],
            event_us=[start + i * step for i in idx],
            prices=[round(100 + rng.uniform(-5, 5), 2) for _ in idx],
            sizes=[round(rng.uniform(0.001, 3), 4) for _ in idx],
            sides=[1 + (i & 1) for i in idx],
        ))
    return batches


def live_batch(tag: str, sequence: int, symbols: list[str], count: int, rng: random.Random) -> bytes:
    """PublishTicksRequest bytes of `count` ticks stamped now; trade ids '<tag><sequence>-<n>'."""
    us = now_us()
    seconds, nanos = divmod(us, 1_000_000)
    items = [market_pb2.Tick(symbol=symbols[n % len(symbols)], price=round(100 + rng.uniform(-5, 5), 2),
                             size=1.0, trade_id=f"{tag}{sequence}-{n}", side=1 + (n & 1), source=SOURCE,
                             event_time=Timestamp(seconds=seconds, nanos=nanos * 1000 + n))
             for n in range(count)]
    return ingest_pb2.PublishTicksRequest(items=items).SerializeToString()
