"""The per-stream queue of WatchTicks: bounded, coalescing to the latest update per symbol when full."""

from __future__ import annotations

import asyncio

from marketdata.query.live import UpdateQueue
from marketdata.v1 import events_pb2, market_pb2


def update(symbol: str, n: int) -> events_pb2.LiveUpdate:
    return events_pb2.LiveUpdate(symbol=symbol, last_tick=market_pb2.Tick(symbol=symbol, trade_id=str(n)))


async def test_fifo_until_full() -> None:
    queue = UpdateQueue(maxsize=8)
    for n in range(8):
        queue.put("A" if n % 2 else "B", update("A" if n % 2 else "B", n))
    assert len(queue) == 8 and queue.coalesced == 0
    got = [await queue.get() for _ in range(8)]
    assert [int(u.last_tick.trade_id) for _, u in got] == list(range(8))


async def test_full_queue_keeps_the_latest_update_per_symbol() -> None:
    queue = UpdateQueue(maxsize=8)
    for n in range(1000):
        symbol = "ABC"[n % 3]
        queue.put(symbol, update(symbol, n))
        assert len(queue) <= 8
    assert queue.coalesced > 900
    items = []
    while len(queue):
        items.append(await queue.get())
    latest = {symbol: int(u.last_tick.trade_id) for symbol, u in items}
    assert latest == {"A": 999, "B": 997, "C": 998}
    for symbol in "ABC":  # still in order per symbol
        ids = [int(u.last_tick.trade_id) for s, u in items if s == symbol]
        assert ids == sorted(ids)


async def test_get_waits_and_close_ends() -> None:
    queue = UpdateQueue()
    waiter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    queue.put("A", update("A", 1))
    assert (await asyncio.wait_for(waiter, 1))[0] == "A"
    waiter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.01)
    queue.close()
    assert await asyncio.wait_for(waiter, 1) is None
    queue.put("A", update("A", 2))  # ignored once closed
    assert len(queue) == 0
