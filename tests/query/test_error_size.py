"""The query service's INVALID_ARGUMENT reaches a C-core client (grpcio) whole however many or long the bad
values (it was RESOURCE_EXHAUSTED without details over 8 KiB of trailers), and every RPC words a bad symbol the
same way, whether its own checks or the proto's rules (protovalidate) find it."""

from __future__ import annotations

import grpc
import pytest

from marketdata.common import rules
from marketdata.common.errors import field_violations_of
from marketdata.v1 import query_pb2, query_pb2_grpc
from tests.platform.test_error_budget import assert_fits

Stub = query_pb2_grpc.QueryServiceStub
LOWERCASE = [f"sym{k}usdt" for k in range(100)]
LONG = "S" * 9000
FRIENDLY_LONG = f"'{'S' * 24}'… (9000 characters) is not a symbol: {rules.SYMBOL_RULE_TEXT}"


async def refused(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call()
    return error.value


async def test_100_lowercase_symbols_are_named_by_every_symbol_list_rpc(query_stub: Stub) -> None:
    for call, field in (
        (lambda: query_stub.GetTicker(query_pb2.GetTickerRequest(symbol=LOWERCASE), timeout=10), "symbol"),
        (lambda: query_stub.WatchTicker(query_pb2.WatchTickerRequest(symbol=LOWERCASE), timeout=10).read(), "symbol"),
        (lambda: query_stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=LOWERCASE), timeout=10).read(), "symbols"),
    ):
        error = await refused(call)
        violations = assert_fits(error, [f"{field}[{k}]" for k in range(5)], total=100)
        assert violations[0] == (f"{field}[0]", f"'sym0usdt' is not a symbol: {rules.SYMBOL_RULE_TEXT}")
        assert violations[-1][0] == field and len(violations) < 100


async def test_a_9000_character_symbol_is_quoted_short_by_every_rpc(query_stub: Stub) -> None:
    for call, field in (
        (lambda: query_stub.GetHistory(query_pb2.GetHistoryRequest(symbol=LONG), timeout=10), "symbol"),
        (lambda: query_stub.GetLatest(query_pb2.GetLatestRequest(symbol=LONG), timeout=10), "symbol"),
        (lambda: query_stub.GetTicker(query_pb2.GetTickerRequest(symbol=[LONG]), timeout=10), "symbol[0]"),
        (lambda: query_stub.WatchTicker(query_pb2.WatchTickerRequest(symbol=[LONG]), timeout=10).read(), "symbol[0]"),
        (lambda: query_stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=[LONG]), timeout=10).read(), "symbols[0]"),
    ):
        error = await refused(call)
        assert assert_fits(error, [field], total=1) == [(field, FRIENDLY_LONG)]


@pytest.mark.parametrize(("symbol", "description"), [
    ("btc", f"'btc' is not a symbol: {rules.SYMBOL_RULE_TEXT}"),
    ("A..B", f"'A..B' is not a symbol: {rules.SYMBOL_RULE_TEXT}"),
    ("B", f"'B' is not a symbol: {rules.SYMBOL_RULE_TEXT}"),
    ("", "required"),
])
async def test_get_latest_words_a_bad_symbol_as_get_history_does(query_stub: Stub, symbol: str,
                                                                  description: str) -> None:
    """GetLatest is checked by the proto's rules only (protovalidate), GetHistory by its own code too."""
    for call in (lambda: query_stub.GetLatest(query_pb2.GetLatestRequest(symbol=symbol), timeout=10),
                 lambda: query_stub.GetHistory(query_pb2.GetHistoryRequest(symbol=symbol), timeout=10)):
        error = await refused(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations_of(error) == [("symbol", description)]
