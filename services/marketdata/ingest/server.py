"""IngestService over gRPC: PublishTicks, StreamTicks, UpsertSymbols."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from grpc_status import rpc_status
from prometheus_client import Counter

from marketdata.common import rules
from marketdata.common.auth import ApiKeyInterceptor
from marketdata.common.config import Settings
from marketdata.common.database import CONNECTION_ERRORS, SchemaCheck, create_pool
from marketdata.common.grpc_server import GrpcServiceHost
from marketdata.common.nats import NATS_ERRORS, NatsConnection, ensure_streams
from marketdata.ingest.publisher import JetStreamUnavailable, PublishResult, TickPublisher
from marketdata.ingest.registry import SymbolRegistry
from marketdata.ingest.validation import TickRules, validate_ticks
from marketdata.migrate.migrations import latest_version, migrations_directory
from marketdata.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
TICKS = Counter("ingest_ticks_total", "Ticks handled by ingest", ["outcome"])

# An absent `active` (NULL here) keeps an existing symbol's, and makes a new one active.
UPSERT_SYMBOLS_SQL = """
INSERT INTO symbols (symbol, base, quote, active)
SELECT given.symbol, given.base, given.quote, coalesce(given.active, symbols.active, true)
FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[]) AS given (symbol, base, quote, active)
LEFT JOIN symbols USING (symbol)
ON CONFLICT (symbol) DO UPDATE
SET base = excluded.base, quote = excluded.quote, active = excluded.active, updated_at = now()
"""


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, settings: Settings, nats: NatsConnection, registry: SymbolRegistry) -> None:
        self.nats = nats
        self.registry = registry
        self.publisher = TickPublisher(settings)
        self.rules = TickRules(settings.max_batch_ticks, settings.max_message_bytes,
                               settings.max_future_skew_seconds, settings.max_trade_id_length,
                               settings.retention_ticks_days)

    async def _publish(self, request: ingest_pb2.PublishTicksRequest | ingest_pb2.StreamTicksRequest,
                       context: grpc.aio.ServicerContext, summary_prefix: str = "") -> PublishResult:
        batch, violations = validate_ticks(request.items, request.ByteSize(), self.rules, self.registry.status)
        if violations:
            TICKS.labels("rejected").inc(len(request.items))
            status = violations.status()
            status.message = summary_prefix + status.message
            await context.abort_with_status(rpc_status.to_status(status))
        try:
            result = await self.publisher.publish(self.nats.client, batch, context.time_remaining())
        except JetStreamUnavailable as exc:
            TICKS.labels("unavailable").inc(len(request.items))
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"{summary_prefix}JetStream did not acknowledge the batch ({exc}); retry it: "
                                "retries of the same batch are deduplicated")
        TICKS.labels("accepted").inc(result.accepted)
        TICKS.labels("duplicate").inc(result.duplicates)
        return result

    async def PublishTicks(self, request: ingest_pb2.PublishTicksRequest,
                           context: grpc.aio.ServicerContext) -> ingest_pb2.PublishTicksResponse:
        result = await self._publish(request, context)
        return ingest_pb2.PublishTicksResponse(accepted=result.accepted, duplicates=result.duplicates)

    async def StreamTicks(self, request_iterator: AsyncIterator[ingest_pb2.StreamTicksRequest],
                          context: grpc.aio.ServicerContext) -> ingest_pb2.StreamTicksResponse:
        response = ingest_pb2.StreamTicksResponse()
        async for request in request_iterator:
            # Earlier batches are already durable; an error names the batch and what was kept.
            prefix = (f"batch {response.batches} rejected ({response.accepted} ticks of the "
                      f"{response.batches} earlier batches were accepted): ")
            result = await self._publish(request, context, prefix)
            response.batches += 1
            response.accepted += result.accepted
            response.duplicates += result.duplicates
        return response

    async def UpsertSymbols(self, request: ingest_pb2.UpsertSymbolsRequest,
                            context: grpc.aio.ServicerContext) -> ingest_pb2.UpsertSymbolsResponse:
        await rules.check(request).abort_if_any(context)  # the proto's rules are all a symbol upsert has
        # A symbol given twice takes its last entry (one row can be upserted once per statement).
        items = list({item.symbol: item for item in request.items}.values())
        try:
            await self.registry.pool.execute(
                UPSERT_SYMBOLS_SQL, [s.symbol for s in items], [s.base for s in items], [s.quote for s in items],
                [s.active if s.HasField("active") else None for s in items], timeout=context.time_remaining())
            # This replica answers with the new registry; the others reload on the NOTIFY.
            await self.registry.reload()
        except CONNECTION_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"PostgreSQL unavailable: {exc}")
        return ingest_pb2.UpsertSymbolsResponse(upserted=len(items))


async def serve(settings: Settings) -> None:
    dsn = settings.require_database_url()
    required_schema = latest_version(migrations_directory(settings.migrations_dir))
    host = GrpcServiceHost(
        settings=settings, port=settings.ingest_port, port_setting="INGEST_PORT",
        interceptors=[ApiKeyInterceptor(settings.require_api_keys(), f"/{SERVICE_NAME}/")])
    nats = NatsConnection(settings.nats_url, "ingest")
    pool = await create_pool(dsn, max_size=settings.pool_size_for("ingest"), application_name="marketdata-ingest")
    registry = SymbolRegistry(pool, dsn)
    streams_ready = False

    async def prepare_streams() -> None:
        nonlocal streams_ready
        client = await nats.wait_connected()
        while not streams_ready:
            try:
                await ensure_streams(client, settings)
                streams_ready = True
            except NATS_ERRORS as exc:  # NATS away or JetStream disabled: say so and retry
                log.warning("cannot create the JetStream streams", extra={"error": str(exc)})
                await asyncio.sleep(1)

    async def nats_ready() -> bool:
        return streams_ready and nats.is_connected

    schema_ready = SchemaCheck(pool, required_schema)

    async def symbols_ready() -> bool:
        # Publishing validates against the cached registry: once it is loaded from a migrated schema, a
        # PostgreSQL outage only degrades UpsertSymbols (UNAVAILABLE) while ticks keep flowing into JetStream.
        return registry.loaded and schema_ready.passed_once

    ingest_pb2_grpc.add_IngestServiceServicer_to_server(IngestServicer(settings, nats, registry), host.server)
    host.add_service(SERVICE_NAME)
    host.add_dependency("nats", nats_ready)
    host.add_dependency("symbols", symbols_ready)
    host.add_dependency("postgres", schema_ready, required=False)
    nats.start()
    host.add_background(prepare_streams(), "ensure-streams")
    host.add_background(registry.run(), "symbol-registry")
    host.add_cleanup(nats.close)
    host.add_cleanup(pool.close)
    await host.run()
