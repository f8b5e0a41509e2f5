"""Ingest's INVALID_ARGUMENT reaches a C-core client (grpcio) whole, however many or long the bad values: the
BadRequest names the first fields, counts the rest, and never outgrows the client's metadata limit (which
turned it into RESOURCE_EXHAUSTED without details). And a tick whose event time is not a valid Timestamp
(nanos outside 0..999,999,999) is refused, not acknowledged and then dead-lettered by the aggregator."""

from __future__ import annotations

import grpc
import pytest

from marketdata.common import rules
from marketdata.common.errors import field_violations_of
from marketdata.v1 import ingest_pb2, ingest_pb2_grpc, market_pb2
from tests.aggregator.test_exactly_once import aggregator_status, wait_committed
from tests.conftest import KEY
from tests.ingest.test_ingest import ingest, new_symbol, symbol, tick  # noqa: F401 - fixtures
from tests.platform.test_error_budget import assert_fits
from tests.support.stack import Stack

Stub = ingest_pb2_grpc.IngestServiceStub


def refused(call, request) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as error:
        call(request, metadata=KEY, timeout=10)
    return error.value


def test_a_batch_of_100_lowercase_symbols_is_named_not_resource_exhausted(ingest: Stub) -> None:
    items = [tick(f"sym{k}usdt", f"t{k}") for k in range(100)]
    error = refused(ingest.PublishTicks, ingest_pb2.PublishTicksRequest(items=items))
    violations = assert_fits(error, [f"items[{k}].symbol" for k in range(5)], total=100)
    assert violations[0] == ("items[0].symbol", f"'sym0usdt' is not a symbol: {rules.SYMBOL_RULE_TEXT}")
    assert violations[-1][0] == "items" and len(violations) < 100


def test_a_stream_batch_of_100_lowercase_symbols_is_named(ingest: Stub) -> None:
    items = [tick(f"sym{k}usdt", f"t{k}") for k in range(100)]
    error = refused(ingest.StreamTicks, iter([ingest_pb2.StreamTicksRequest(items=items)]))
    assert_fits(error, ["items[0].symbol", "items[1].symbol"], total=100)
    assert error.details().startswith("batch 0 rejected")


def test_a_batch_of_100_zero_prices_is_named_every_time(ingest: Stub, symbol: str) -> None:
    """Was near the limit (about 1 such batch in 20 came back RESOURCE_EXHAUSTED): now well within it."""
    for attempt in range(40):
        items = [tick(symbol, f"z{attempt}-{k}", price=0.0) for k in range(100)]
        error = refused(ingest.PublishTicks, ingest_pb2.PublishTicksRequest(items=items))
        assert_fits(error, ["items[0].price", "items[1].price"], total=100)


def test_a_9000_character_symbol_is_quoted_short(ingest: Stub) -> None:
    error = refused(ingest.PublishTicks, ingest_pb2.PublishTicksRequest(items=[tick("s" * 9000, "long")]))
    [(field, description)] = assert_fits(error, ["items[0].symbol"], total=1)
    assert description.startswith("'ssssssssssssssssssssssss'… (9000 characters) is not a symbol")


def test_upserting_100_bad_symbols_is_named_in_the_words_of_every_rpc(ingest: Stub) -> None:
    items = [market_pb2.Symbol(symbol=f"sym{k}usdt", base="SYM", quote="USDT") for k in range(100)]
    error = refused(ingest.UpsertSymbols, ingest_pb2.UpsertSymbolsRequest(items=items))
    violations = assert_fits(error, [f"items[{k}].symbol" for k in range(5)], total=100)
    assert violations[0] == ("items[0].symbol", f"'sym0usdt' is not a symbol: {rules.SYMBOL_RULE_TEXT}")
    # An empty symbol is `required`, as GetHistory says; a long one is quoted short.
    error = refused(ingest.UpsertSymbols, ingest_pb2.UpsertSymbolsRequest(items=[
        market_pb2.Symbol(symbol="", base="A", quote="B"), market_pb2.Symbol(symbol="Q" * 9000, base="A", quote="B")]))
    assert field_violations_of(error) == [
        ("items[0].symbol", "required"),
        ("items[1].symbol", f"'{'Q' * 24}'… (9000 characters) is not a symbol: {rules.SYMBOL_RULE_TEXT}")]


# --- event times that are not valid Timestamps ---------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "nanos"), [(0, -1), (1_700_000_000, -1), (1_700_000_000, 1_999_999_999),
                                                (1_700_000_000, 1_000_000_000)])
def test_an_event_time_with_nanos_out_of_range_rejects_the_batch_whole(pipeline: Stack, ingest: Stub,
                                                                       database_url: str, seconds: int,
                                                                       nanos: int) -> None:
    name = new_symbol("N")
    pipeline.seed_symbols(name)
    letters_before = aggregator_status(pipeline.aggregator.address).dead_lettered
    items = [tick(name, f"good-{k}") for k in range(10)]
    bad = tick(name, "bad")
    bad.event_time.seconds, bad.event_time.nanos = seconds, nanos
    items.insert(4, bad)
    for call, request in ((ingest.PublishTicks, ingest_pb2.PublishTicksRequest(items=items)),
                          (ingest.StreamTicks, iter([ingest_pb2.StreamTicksRequest(items=items)]))):
        error = refused(call, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations_of(error) == [("items[4].event_time", rules.TIMESTAMP_RULE_TEXT)]
    # Nothing of the batch is stored or dead-lettered: a later good batch is all the symbol has.
    later = [tick(name, f"later-{k}") for k in range(3)]
    assert ingest.PublishTicks(ingest_pb2.PublishTicksRequest(items=later), metadata=KEY, timeout=10).accepted == 3
    wait_committed(database_url, [name], 3)
    assert aggregator_status(pipeline.aggregator.address).dead_lettered == letters_before
