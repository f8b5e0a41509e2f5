"""marketdata.v1.QueryService: validation, deadlines and the mapping of failures to gRPC status codes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import NoReturn, TypeVar

import asyncpg
import grpc

from marketdata.common import rules
from marketdata.common.config import Settings
from marketdata.common.database import CONNECTION_ERRORS
from marketdata.common.errors import FieldViolations
from marketdata.common.live import LiveFeed, LiveMetrics, LiveUnavailable
from marketdata.query.history import History, SymbolNotFound, TooManyRows, parse_history_request
from marketdata.query.ticker import (
    DEFAULT_WINDOW,
    MAX_TICKER_SYMBOLS,
    PUSH_SECONDS,
    TickerFeed,
    parse_window,
)
from marketdata.v1 import query_pb2, query_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

# A remaining time above this means the caller set no deadline (gRPC reports an "infinite" one as huge).
NO_DEADLINE_SECONDS = 365 * 24 * 3600.0
WATCH_METRICS = LiveMetrics("query_watch", "WatchTicks and WatchTicker streams")
LIVE_GAP_DETAILS = "the live feed was interrupted and updates may be missing; reload history and watch again"


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline on the event loop's clock, or None without one."""
    left = context.time_remaining()
    if left is None or left > NO_DEADLINE_SECONDS:
        return None
    return asyncio.get_running_loop().time() + left


# Named in a NOT_FOUND message at most: the message travels in a trailer, which clients cap at 8 to 16 KiB.
MAX_NAMED_UNKNOWN = 20


def unknown_symbols_text(symbols: Sequence[str]) -> str:
    named = ", ".join(symbols[:MAX_NAMED_UNKNOWN])
    more = f" and {len(symbols) - MAX_NAMED_UNKNOWN} more" if len(symbols) > MAX_NAMED_UNKNOWN else ""
    return f"unknown symbol: {named}{more}"


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, settings: Settings, history: History, feed: LiveFeed) -> None:
        self.settings = settings
        self.history = history
        self.feed = feed
        self.ticker_feed = TickerFeed(lambda symbols, window_size, length: history.ticker(
            symbols, window_size, length, None))

    async def _run(self, context: grpc.aio.ServicerContext, call: Callable[[float | None], Awaitable[T]]) -> T:
        """Runs a database read within the caller's deadline; maps its failures to status codes."""
        try:
            return await call(_deadline(context))
        except SymbolNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, unknown_symbols_text(exc.symbols))
        except (TimeoutError, asyncpg.exceptions.QueryCanceledError):
            # TimeoutError first: it is also an OSError, which CONNECTION_ERRORS counts as "down".
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while reading PostgreSQL")
        except CONNECTION_ERRORS as exc:
            await self._unavailable(context, exc)
        except asyncpg.exceptions.PostgresError as exc:
            # Connection exceptions (08), operator intervention (57P), insufficient resources (53), and a
            # database without the schema yet (42P01): health is NOT_SERVING meanwhile, the caller may retry.
            if (exc.sqlstate or "").startswith(("08", "57P", "53", "42P01")):
                await self._unavailable(context, exc)
            log.exception("query failed")
            await context.abort(grpc.StatusCode.INTERNAL, "query failed")
        raise AssertionError("unreachable")

    async def _unavailable(self, context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
        # One line per call; the log's RepeatFilter (common/logging.py) keeps an outage to a line every 30 s.
        log.warning("PostgreSQL unavailable", extra={"error": str(exc) or type(exc).__name__})
        await context.abort(grpc.StatusCode.UNAVAILABLE, "PostgreSQL is unavailable, retry later")
        raise AssertionError("unreachable")

    async def ListSymbols(self, request: query_pb2.ListSymbolsRequest,
                          context: grpc.aio.ServicerContext) -> query_pb2.ListSymbolsResponse:
        active = request.active if request.HasField("active") else None
        items = await self._run(context, lambda deadline: self.history.list_symbols(active, deadline))
        return query_pb2.ListSymbolsResponse(items=items)

    async def GetLatest(self, request: query_pb2.GetLatestRequest,
                        context: grpc.aio.ServicerContext) -> query_pb2.GetLatestResponse:
        await rules.check(request).abort_if_any(context)
        return await self._run(context, lambda deadline: self.history.latest(request.symbol, deadline))

    async def GetHistory(self, request: query_pb2.GetHistoryRequest,
                         context: grpc.aio.ServicerContext) -> query_pb2.GetHistoryResponse:
        query, violations = parse_history_request(request, self.settings.query_max_limit)
        await rules.check(request, also=violations).abort_if_any(context)
        assert query is not None
        try:
            return await self._run(context, lambda deadline: self.history.history(
                query, deadline, self.settings.query_max_limit))
        except TooManyRows as exc:
            violations.add("fill", str(exc))
            await violations.abort_if_any(context)
            raise

    @staticmethod
    def _ticker_arguments(fields: Sequence[str], window_size: str, max_symbols: int,
                          per: str) -> tuple[list[str], str, timedelta | None, FieldViolations]:
        """The symbols (also comma-separated), the window and its length, and what is wrong with them."""
        violations = FieldViolations()
        symbols = list(dict.fromkeys(part for value in fields for part in value.split(",")))
        if len(fields) > max_symbols or len(symbols) > max_symbols:  # first: the entries' problems may be many
            violations.add("symbol", f"at most {max_symbols} symbols per {per}")
        for index, value in enumerate(fields[:max_symbols]):  # the paths name the request's own entries
            problem = rules.symbol_list_problem(value)
            if problem:
                violations.add(f"symbol[{index}]", problem)
        window_size = window_size or DEFAULT_WINDOW
        length = parse_window(window_size)
        if length is None:
            violations.add("window_size", rules.WINDOW_RULE)
        return symbols, window_size, length, violations

    async def GetTicker(self, request: query_pb2.GetTickerRequest,
                        context: grpc.aio.ServicerContext) -> query_pb2.GetTickerResponse:
        symbols, window_size, length, violations = self._ticker_arguments(request.symbol, request.window_size,
                                                                          MAX_TICKER_SYMBOLS, "request")
        await violations.abort_if_any(context)
        assert length is not None
        return await self._run(context, lambda deadline: self.history.ticker(symbols, window_size, length, deadline))

    async def WatchTicker(self, request: query_pb2.WatchTickerRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[query_pb2.WatchTickerResponse]:
        symbols, window_size, length, violations = self._ticker_arguments(request.symbol, request.window_size,
                                                                          rules.MAX_WATCH_SYMBOLS, "stream")
        if not request.symbol:
            violations.add("symbol", "give at least one symbol")
        await violations.abort_if_any(context)
        assert length is not None
        first = await self._run(context, lambda deadline: self.history.ticker(symbols, window_size, length, deadline))
        try:
            async with self.feed.watch(symbols) as subscriber:
                await context.send_initial_metadata(())
                yield query_pb2.WatchTickerResponse(items=first.items)
                while (taken := await subscriber.take()) is not None:
                    await asyncio.sleep(PUSH_SECONDS)  # a second's trades in one message
                    (gap, updates), (later_gap, later) = taken, subscriber.drain()
                    # After a gap in the feed any symbol may have traded unseen: every ticker is sent again.
                    changed = (set(symbols) if gap is not None or later_gap is not None
                               else {update.symbol for update in (*updates, *later)})
                    items = await self._run(context, lambda _: self.ticker_feed.tickers(
                        [s for s in symbols if s in changed], window_size, length))
                    yield query_pb2.WatchTickerResponse(items=items)
                await self._end_watch(context, subscriber.reason)
        except LiveUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def WatchTicks(self, request: query_pb2.WatchTicksRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[query_pb2.WatchTicksResponse]:
        violations = FieldViolations()
        if not request.symbols:
            violations.add("symbols", "give at least one symbol")
        elif len(request.symbols) > rules.MAX_WATCH_SYMBOLS:
            violations.add("symbols", f"at most {rules.MAX_WATCH_SYMBOLS} symbols per stream")
        for index, symbol in enumerate(request.symbols):
            problem = rules.symbol_problem(symbol)
            if problem:
                violations.add(f"symbols[{index}]", problem)
        await rules.check(request, also=violations).abort_if_any(context)
        symbols = list(dict.fromkeys(request.symbols))
        unknown = await self._run(context, lambda deadline: self.history.unknown_symbols(symbols, deadline))
        if unknown:
            await context.abort(grpc.StatusCode.NOT_FOUND, unknown_symbols_text(unknown))
        try:
            async with self.feed.watch(symbols) as subscriber:
                # Headers go out once the subscriptions are in place: a client awaiting the initial
                # metadata knows that every update committed from then on reaches it.
                await context.send_initial_metadata(())
                while (taken := await subscriber.take()) is not None:
                    gap, updates = taken
                    if gap is not None:  # updates were lost: only a reload can make the client's view whole
                        await context.abort(grpc.StatusCode.UNAVAILABLE, LIVE_GAP_DETAILS)
                    for update in updates:
                        yield query_pb2.WatchTicksResponse(update=update.message)
                await self._end_watch(context, subscriber.reason)
        except LiveUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    @staticmethod
    async def _end_watch(context: grpc.aio.ServicerContext, reason: str) -> None:
        """A stream the feed ended: OK at shutdown, RESOURCE_EXHAUSTED for a client that stopped reading."""
        if reason == "behind":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "the stream fell too far behind the live feed; watch again")
