"""The aggregator under failure: undecodable messages, PostgreSQL outages."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats

from tests.aggregator.test_exactly_once import aggregator_status, history_count, unique_symbols, wait_committed
from tests.conftest import API_KEY
from tests.support.infra import create_database, embedded_postgres
from tests.support.processes import health_status, wait_for
from tests.support.stack import Stack
from tests.support.ticks import make_ticks, publish


def test_undecodable_message_is_dead_lettered_and_does_not_block(pipeline: Stack, database_url: str) -> None:
    symbols = unique_symbols("D", 1)
    pipeline.seed_symbols(*symbols)
    before = aggregator_status(pipeline.aggregator.address).dead_lettered

    async def publish_garbage() -> None:
        client = await nats.connect(pipeline.env["NATS_URL"])
        try:
            js = client.jetstream()
            await js.publish(f"{pipeline.env['MD_SUBJECT_PREFIX']}.ticks.{symbols[0]}", b"\xff\xfenot protobuf")
        finally:
            await client.close()

    asyncio.run(publish_garbage())
    ticks = make_ticks(symbols, 50, seed=3)
    publish(pipeline.ingest.address, pipeline.api_key, ticks)

    wait_committed(database_url, symbols, len(ticks), timeout=30)
    wait_for(lambda: aggregator_status(pipeline.aggregator.address).dead_lettered == before + 1, 10,
             message="dead-letter count")


def test_postgres_outage_turns_health_off_then_catches_up(start_service, tmp_path: Path) -> None:
    with embedded_postgres() as postgres:
        database_url = asyncio.run(create_database(postgres.url))
        namespace = uuid.uuid4().hex[:8]
        env = {"DATABASE_URL": database_url, "MD_STREAM": f"P{namespace}", "MD_SUBJECT_PREFIX": f"p{namespace}",
               "MD_CONSUMER": f"c{namespace}"}
        ingest = start_service("ingest", **env)
        aggregator = start_service("aggregator", **env)
        symbols = unique_symbols("P", 2)
        Stack(ingest.env, tmp_path, API_KEY, ingest, aggregator).seed_symbols(*symbols)

        postgres.stop()
        wait_for(lambda: health_status(aggregator.address) == "NOT_SERVING", 15, message="aggregator NOT_SERVING")
        assert health_status(aggregator.address, "marketdata.v1.AggregatorService") == "NOT_SERVING"
        # JetStream keeps what ingest accepts meanwhile (ingest validates against its cached registry).
        ticks = make_ticks(symbols, 2_000, seed=9)
        publish(ingest.address, API_KEY, ticks)

        postgres.start()
        wait_for(lambda: health_status(aggregator.address) == "SERVING", 30, message="aggregator SERVING again")
        wait_committed(database_url, symbols, len(ticks), timeout=60)
        assert asyncio.run(history_count(database_url, symbols)) == len(ticks)
