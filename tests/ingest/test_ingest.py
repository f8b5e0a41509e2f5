"""IngestService: validation with field paths, API keys, dedup, streaming, registry changes, NATS outages."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest

from marketdata.common.embedded import EmbeddedNats, free_port
from marketdata.common.errors import field_violations_of
from marketdata.v1 import ingest_pb2, ingest_pb2_grpc, market_pb2
from tests.conftest import API_KEY, KEY
from tests.support.processes import health_status, wait_for
from tests.support.stack import Stack


def new_symbol(prefix: str = "I") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


def tick(symbol: str, trade_id: str = "", price: float = 100.0, size: float = 1.0,
         at: float | None = None) -> market_pb2.Tick:
    message = market_pb2.Tick(symbol=symbol, trade_id=trade_id, price=price, size=size)
    message.event_time.FromNanoseconds(int((time.time() if at is None else at) * 1e9))
    return message


def stub_for(address: str) -> tuple[grpc.Channel, ingest_pb2_grpc.IngestServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, ingest_pb2_grpc.IngestServiceStub(channel)


@pytest.fixture(scope="module")
def symbol(pipeline: Stack) -> str:
    name = new_symbol()
    pipeline.seed_symbols(name)
    return name


@pytest.fixture(scope="module")
def ingest(pipeline: Stack):  # type: ignore[no-untyped-def]
    channel, stub = stub_for(pipeline.ingest.address)
    yield stub
    channel.close()


def rejected_fields(stub: ingest_pb2_grpc.IngestServiceStub, *ticks: market_pb2.Tick) -> list[str]:
    with pytest.raises(grpc.RpcError) as error:
        stub.PublishTicks(ingest_pb2.PublishTicksRequest(items=ticks), metadata=KEY, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return [field for field, _ in field_violations_of(error.value)]


def test_every_validation_rule_names_its_field(ingest, symbol: str) -> None:  # type: ignore[no-untyped-def]
    good = tick(symbol, "ok-1")
    no_time = market_pb2.Tick(symbol=symbol, price=1, size=1)
    cases = {
        "items[1].symbol": tick("btc usdt"),
        "items[1].price": tick(symbol, price=float("nan")),
        "items[1].size": tick(symbol, size=-1),
        "items[1].event_time": no_time,
        "items[1].trade_id": tick(symbol, trade_id="x" * 65),
    }
    for field, bad in cases.items():
        assert rejected_fields(ingest, good, bad) == [field], field
    assert rejected_fields(ingest, good, tick(symbol, price=0)) == ["items[1].price"]
    assert rejected_fields(ingest, good, tick(symbol, price=float("inf"))) == ["items[1].price"]
    assert rejected_fields(ingest, good, tick(symbol, at=time.time() + 3600)) == ["items[1].event_time"]
    assert rejected_fields(ingest, good, tick("NOTREGISTERED")) == ["items[1].symbol"]
    assert rejected_fields(ingest) == ["items"]
    several = rejected_fields(ingest, tick(symbol, price=-1), good, good, tick("?", size=float("nan")))
    assert several == ["items[0].price", "items[3].symbol", "items[3].size"]


def poison_ticks(symbol: str) -> dict[str, tuple[market_pb2.Tick, list[str]]]:
    """Ticks a database cannot keep (or a NATS subject cannot carry), with the fields each must be named by."""
    far_past = tick(symbol, "past")
    far_past.event_time.seconds = -298_800_000_000  # year -7500
    before_1970 = tick(symbol, "1969")
    before_1970.event_time.seconds = -1
    far_future = tick(symbol, "future")
    far_future.event_time.seconds = 253_402_300_799  # 9999-12-31
    control_source = tick(symbol, "ctl")
    control_source.source = "feed\x1ber"
    everything = tick("A..B", "x\x00", price=float("nan"), size=1e308)
    everything.ClearField("event_time")
    everything.source = "\x85"
    return {
        "nul trade id": (tick(symbol, "bad\x00id"), ["items[1].trade_id"]),
        "control character in source": (control_source, ["items[1].source"]),
        "far past": (far_past, ["items[1].event_time"]),
        "before 1970": (before_1970, ["items[1].event_time"]),
        "far future": (far_future, ["items[1].event_time"]),
        "price 1e308": (tick(symbol, "p", price=1e308), ["items[1].price"]),
        "size 1e308": (tick(symbol, "s", size=1e308), ["items[1].size"]),
        "price below 1e-12": (tick(symbol, "z", price=1e-300), ["items[1].price"]),
        "symbol BTC.": (tick("BTC.", "b"), ["items[1].symbol"]),
        "symbol A..B": (tick("A..B", "b"), ["items[1].symbol"]),
        "symbol -BTC": (tick("-BTC", "b"), ["items[1].symbol"]),
        "every field at once": (everything, ["items[1].symbol", "items[1].price", "items[1].size",
                                             "items[1].event_time", "items[1].trade_id", "items[1].source"]),
    }


def test_every_poison_class_is_rejected_naming_each_bad_field(ingest, symbol: str) -> None:  # type: ignore[no-untyped-def]
    good = tick(symbol, "fine")
    for name, (bad, fields) in poison_ticks(symbol).items():
        assert rejected_fields(ingest, good, bad) == fields, name


def test_the_symbol_rule_is_enforced_when_registering(ingest) -> None:  # type: ignore[no-untyped-def]
    for name in ("BTC.", "A..B", "-BTC", "B", "A" * 21, "A B", "A*B", "btc"):
        request = ingest_pb2.UpsertSymbolsRequest(items=[market_pb2.Symbol(symbol=name, base="A", quote="B")])
        with pytest.raises(grpc.RpcError) as error:
            ingest.UpsertSymbols(request, metadata=KEY, timeout=10)
        assert [f for f, _ in field_violations_of(error.value)] == ["items[0].symbol"], name
    good = [market_pb2.Symbol(symbol=f"{new_symbol()}{suffix}", base="A", quote="B") for suffix in ("-PERP", ".Z24", "_X")]
    assert ingest.UpsertSymbols(ingest_pb2.UpsertSymbolsRequest(items=good), metadata=KEY, timeout=10).upserted == 3


def test_inactive_symbol_is_rejected(pipeline: Stack, ingest) -> None:  # type: ignore[no-untyped-def]
    name = new_symbol()
    ingest.UpsertSymbols(ingest_pb2.UpsertSymbolsRequest(items=[
        market_pb2.Symbol(symbol=name, base="AAA", quote="USDT", active=False)]), metadata=KEY, timeout=10)
    with pytest.raises(grpc.RpcError) as error:
        ingest.PublishTicks(ingest_pb2.PublishTicksRequest(items=[tick(name)]), metadata=KEY, timeout=10)
    assert field_violations_of(error.value) == [("items[0].symbol", f"{name} is not active")]


def test_batch_and_message_size_limits(start_service, symbol: str) -> None:  # type: ignore[no-untyped-def]
    process = start_service("ingest", INGEST_MAX_BATCH_TICKS="10", INGEST_MAX_MESSAGE_BYTES="1024")
    channel, stub = stub_for(process.address)
    with channel:
        assert rejected_fields(stub, *[tick(symbol, f"b{n}") for n in range(11)]) == ["items"]
        big = [tick(symbol, f"{'y' * 60}{n}") for n in range(10)]
        for item in big:
            item.source = "s" * 60
        with pytest.raises(grpc.RpcError) as error:
            stub.PublishTicks(ingest_pb2.PublishTicksRequest(items=big), metadata=KEY, timeout=10)
        violations = field_violations_of(error.value)
        assert violations and violations[0][0] == "items" and "bytes" in violations[0][1]


def test_symbol_upsert_validation(ingest) -> None:  # type: ignore[no-untyped-def]
    request = ingest_pb2.UpsertSymbolsRequest(items=[
        market_pb2.Symbol(symbol="ok1", base="BTC", quote="USDT"),
        market_pb2.Symbol(symbol="GOOD", base="", quote="USDT"),
    ])
    with pytest.raises(grpc.RpcError) as error:
        ingest.UpsertSymbols(request, metadata=KEY, timeout=10)
    assert [f for f, _ in field_violations_of(error.value)] == ["items[0].symbol", "items[1].base"]


def test_an_upsert_without_active_makes_a_new_symbol_active_and_keeps_an_existing_ones(ingest) -> None:  # type: ignore[no-untyped-def]
    """`active` absent (a client that leaves it out) never deactivates: a new symbol takes ticks at once."""
    fresh, paused = new_symbol("NA"), new_symbol("PA")

    def upsert(*items: market_pb2.Symbol) -> None:
        ingest.UpsertSymbols(ingest_pb2.UpsertSymbolsRequest(items=items), metadata=KEY, timeout=10)

    def publish(symbol: str) -> grpc.StatusCode:
        try:
            ingest.PublishTicks(ingest_pb2.PublishTicksRequest(items=[tick(symbol, f"t-{uuid.uuid4()}")]),
                                metadata=KEY, timeout=10)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    upsert(market_pb2.Symbol(symbol=fresh, base="NA", quote="USDT"),
           market_pb2.Symbol(symbol=paused, base="PA", quote="USDT", active=False))
    assert publish(fresh) == grpc.StatusCode.OK
    assert publish(paused) == grpc.StatusCode.INVALID_ARGUMENT
    upsert(market_pb2.Symbol(symbol=fresh, base="NB", quote="USDT"),  # a new base, nothing said of active
           market_pb2.Symbol(symbol=paused, base="PB", quote="USDT"))
    assert publish(fresh) == grpc.StatusCode.OK
    assert publish(paused) == grpc.StatusCode.INVALID_ARGUMENT
    upsert(market_pb2.Symbol(symbol=paused, base="PB", quote="USDT", active=True))
    assert publish(paused) == grpc.StatusCode.OK


@pytest.mark.parametrize("metadata", [(), (("x-api-key", "wrong"),), (("x-api-key", ""),),
                                      (("x-api-key", "wrong"), ("x-api-key", API_KEY)),
                                      (("x-api-key", API_KEY), ("x-api-key", "wrong"))],
                         ids=["none", "wrong", "empty", "wrong-then-valid", "valid-then-wrong"])
def test_every_write_needs_a_valid_api_key(ingest, symbol: str, metadata) -> None:  # type: ignore[no-untyped-def]
    calls = [
        lambda: ingest.PublishTicks(ingest_pb2.PublishTicksRequest(items=[tick(symbol)]), metadata=metadata, timeout=5),
        lambda: ingest.UpsertSymbols(ingest_pb2.UpsertSymbolsRequest(items=[
            market_pb2.Symbol(symbol=symbol, base="A", quote="B", active=True)]), metadata=metadata, timeout=5),
        lambda: ingest.StreamTicks(iter([ingest_pb2.StreamTicksRequest(items=[tick(symbol)])]),
                                   metadata=metadata, timeout=5),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_any_configured_key_is_accepted(ingest, symbol: str) -> None:  # type: ignore[no-untyped-def]
    response = ingest.PublishTicks(ingest_pb2.PublishTicksRequest(items=[tick(symbol, f"k-{uuid.uuid4()}")]),
                                   metadata=(("x-api-key", "second-key"),), timeout=10)
    assert response.accepted == 1


def test_retried_batch_and_repeated_ticks_are_reported_as_duplicates(ingest, symbol: str) -> None:  # type: ignore[no-untyped-def]
    at = time.time()
    batch = [tick(symbol, f"r-{uuid.uuid4()}", at=at) for _ in range(3)]
    anonymous = tick(symbol, price=101.5, at=at)
    request = ingest_pb2.PublishTicksRequest(items=[*batch, batch[0], anonymous, anonymous])
    first = ingest.PublishTicks(request, metadata=KEY, timeout=10)
    assert (first.accepted, first.duplicates) == (4, 2)  # in-batch repeat + a tick without id sent twice
    retry = ingest.PublishTicks(request, metadata=KEY, timeout=10)
    assert (retry.accepted, retry.duplicates) == (0, 6)  # JetStream recognised the retried batch


def test_a_trade_id_reused_at_another_time_is_two_trades_in_one_batch_or_two(  # type: ignore[no-untyped-def]
        ingest, pipeline: Stack, database_url: str) -> None:
    """Ingest counts duplicates by the key storage keeps them by (symbol, event time to the microsecond, trade
    id): what is stored does not depend on how a producer cut its batches."""
    together, apart = new_symbol("RT"), new_symbol("RA")
    pipeline.seed_symbols(together, apart)
    at = time.time() - 60
    first, later = tick(together, "reused", at=at), tick(together, "reused", price=101.0, at=at + 2)
    first.event_time.nanos = first.event_time.nanos // 1000 * 1000 + 1
    # A nanosecond later is the same microsecond, all PostgreSQL keeps: the same tick to storage.
    nanosecond_later = market_pb2.Tick()
    nanosecond_later.CopyFrom(first)
    nanosecond_later.event_time.nanos += 1
    nanosecond_later.price = 99.0
    reply = ingest.PublishTicks(ingest_pb2.PublishTicksRequest(items=[first, later, first, nanosecond_later]),
                                metadata=KEY, timeout=10)
    assert (reply.accepted, reply.duplicates) == (2, 2)
    for n, moment in enumerate((at, at + 2, at)):
        reply = ingest.PublishTicks(ingest_pb2.PublishTicksRequest(items=[
            tick(apart, "reused", price=100.0 + n % 2, at=moment)]), metadata=KEY, timeout=10)
        # The third is the first again, in a batch of its own: JetStream knows it, and it is counted once.
        assert (reply.accepted, reply.duplicates) == ((1, 0) if n < 2 else (0, 1))

    async def stored() -> dict[str, int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT symbol, count(*) AS n FROM ticks_history WHERE symbol = ANY($1) "
                                    "GROUP BY symbol", [together, apart])
            return {row["symbol"]: row["n"] for row in rows}
        finally:
            await conn.close()

    wait_for(lambda: asyncio.run(stored()) == {together: 2, apart: 2}, 30, interval=0.3,
             message="two ticks of each symbol in ticks_history")


def test_stream_ticks_sums_batches_and_keeps_earlier_batches_on_error(ingest, symbol: str) -> None:  # type: ignore[no-untyped-def]
    def requests(bad_last: bool):  # type: ignore[no-untyped-def]
        for n in range(3):
            yield ingest_pb2.StreamTicksRequest(items=[tick(symbol, f"s-{uuid.uuid4()}") for _ in range(10)])
        if bad_last:
            yield ingest_pb2.StreamTicksRequest(items=[tick(symbol, price=-5)])

    response = ingest.StreamTicks(requests(False), metadata=KEY, timeout=10)
    assert (response.accepted, response.duplicates, response.batches) == (30, 0, 3)
    with pytest.raises(grpc.RpcError) as error:
        ingest.StreamTicks(requests(True), metadata=KEY, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "30 ticks of the 3 earlier batches were accepted" in error.value.details()
    assert [f for f, _ in field_violations_of(error.value)] == ["items[0].price"]


def test_replicas_learn_of_symbol_changes_without_restart(pipeline: Stack, start_service, database_url: str) -> None:  # type: ignore[no-untyped-def]
    other = start_service("ingest")
    name = new_symbol()
    pipeline.seed_symbols(name)  # through the shared replica
    channel, stub = stub_for(other.address)
    with channel:
        publish = lambda: stub.PublishTicks(  # noqa: E731
            ingest_pb2.PublishTicksRequest(items=[tick(name, f"n-{uuid.uuid4()}")]), metadata=KEY, timeout=5)

        def accepted() -> bool:
            try:
                return publish().accepted == 1
            except grpc.RpcError:
                return False

        wait_for(accepted, 5, message="the other replica accepts the new symbol")

        async def deactivate() -> None:  # a change made straight in the database reaches them too
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute("UPDATE symbols SET active = false WHERE symbol = $1", name)
            finally:
                await conn.close()

        asyncio.run(deactivate())
        wait_for(lambda: not accepted(), 5, message="the replica refuses the deactivated symbol")


def test_nats_outage_gives_unavailable_and_recovers_without_restart(start_service, tmp_path: Path,
                                                                     symbol: str) -> None:
    nats_server = EmbeddedNats(tmp_path / "nats", port=free_port())
    nats_server.start()
    try:
        process = start_service("ingest", NATS_URL=nats_server.url)
        channel, stub = stub_for(process.address)
        with channel:
            def send() -> ingest_pb2.PublishTicksResponse:
                return stub.PublishTicks(ingest_pb2.PublishTicksRequest(items=[tick(symbol, f"o-{uuid.uuid4()}")]),
                                         metadata=KEY, timeout=10)

            assert send().accepted == 1
            nats_server.stop()
            with pytest.raises(grpc.RpcError) as error:
                wait_for(lambda: health_status(process.address) == "NOT_SERVING", 10, message="NOT_SERVING")
                send()
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            nats_server.start()
            wait_for(lambda: health_status(process.address) == "SERVING", 20, message="SERVING again")
            assert send().accepted == 1
    finally:
        nats_server.stop()


def test_sigterm_drains_and_exits_cleanly(start_service) -> None:  # type: ignore[no-untyped-def]
    process = start_service("ingest")
    process.signal(signal.SIGTERM)
    assert process.process is not None
    assert process.process.wait(15) == 0
    assert "stopped" in process.log_text()


def test_busy_port_is_named(start_service, pipeline: Stack) -> None:  # type: ignore[no-untyped-def]
    process = start_service("ingest", wait=False, port=pipeline.ingest.port)
    assert process.process is not None
    assert process.process.wait(20) != 0
    assert f"port {pipeline.ingest.port} is already in use" in process.log_text()
    assert "INGEST_PORT" in process.log_text()


def test_ticks_older_than_the_ticks_kept_are_refused(ingest, symbol: str) -> None:  # type: ignore[no-untyped-def]
    """A tick whose day of ticks_history retention drops (RETENTION_TICKS_DAYS, 30 by default) could not be
    deduplicated: sent again after the drop it would count twice in every candle. Ingest refuses it, naming why;
    ticks of the days kept for a day more at least are taken."""
    day = 86_400
    now = time.time()
    first_kept = -(-int(now - 30 * day) // day) * day
    if int(now) // day != int(now + 30) // day:
        pytest.skip("at a UTC midnight the first day kept moves while the test runs")
    with pytest.raises(grpc.RpcError) as refused:
        ingest.PublishTicks(ingest_pb2.PublishTicksRequest(items=[tick(symbol, at=now), tick(symbol, at=first_kept - 1)]),
                            metadata=KEY, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = field_violations_of(refused.value)
    assert field == "items[1].event_time" and "RETENTION_TICKS_DAYS" in description
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first_kept)) in description
    accepted = ingest.PublishTicks(ingest_pb2.PublishTicksRequest(items=[tick(symbol, f"kept-{uuid.uuid4()}",
                                                                              at=first_kept)]),
                                   metadata=KEY, timeout=10)
    assert accepted.accepted == 1


def test_the_first_event_time_accepted_is_a_day_start() -> None:
    from marketdata.ingest.validation import TickRules

    rules_ = TickRules(10, 1 << 20, 5.0, 64, kept_ticks_days=2)
    at = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    # 2023-11-13T00:00:00Z: that day's partition is dropped at 11-16T00:00, more than a day after `at`.
    assert rules_.earliest_event_seconds(at) == 1_699_833_600
    assert rules_.earliest_event_seconds(1_699_833_600 + 2 * 86_400) == 1_699_833_600  # on a day start, that day
    assert TickRules(10, 1 << 20, 5.0, 64).earliest_event_seconds(at) == 0  # kept for ever: from 1970
