"""AggregatorService (GetStatus, Rebuild) beside the consumer that does the aggregator's real work."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import asyncpg
import grpc

from marketdata.aggregator import rollup
from marketdata.aggregator.consumer import Aggregator
from marketdata.common.config import Settings
from marketdata.common.database import CONNECTION_ERRORS, SchemaCheck, create_pool
from marketdata.common.errors import FieldViolations
from marketdata.common.grpc_server import GrpcServiceHost
from marketdata.common.nats import NatsConnection
from marketdata.migrate.migrations import latest_version, migrations_directory
from marketdata.v1 import aggregator_pb2, aggregator_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = aggregator_pb2.DESCRIPTOR.services_by_name["AggregatorService"].full_name


def floor_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def ceil_minute(value: datetime) -> datetime:
    floored = floor_minute(value)
    return floored if floored == value else floored + timedelta(minutes=1)


class AggregatorServicer(aggregator_pb2_grpc.AggregatorServiceServicer):
    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    async def GetStatus(self, request: aggregator_pb2.GetStatusRequest,
                        context: grpc.aio.ServicerContext) -> aggregator_pb2.GetStatusResponse:
        stats = self.aggregator.stats
        response = aggregator_pb2.GetStatusResponse(
            ticks_per_second=stats.ticks_per_second(), ticks_committed=stats.ticks_committed,
            duplicates_skipped=stats.duplicates_skipped)
        if stats.last_commit is not None:
            response.last_commit_time.FromDatetime(stats.last_commit)
        try:
            info = await self.aggregator.consumer_info()
            response.consumer_pending = info.num_pending or 0
            response.ack_pending = info.num_ack_pending or 0
            response.dead_lettered = await self.aggregator.dead_lettered()
        except Exception as exc:  # noqa: BLE001 - NATS away
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"JetStream unavailable: {exc or type(exc).__name__}")
        return response

    async def Rebuild(self, request: aggregator_pb2.RebuildRequest,
                      context: grpc.aio.ServicerContext) -> aggregator_pb2.RebuildResponse:
        violations = FieldViolations()
        if not request.symbol:
            violations.add("symbol", "is required")
        if not request.HasField("from_time"):
            violations.add("from", "is required")
        if not request.HasField("to_time"):
            violations.add("to", "is required")
        start = floor_minute(request.from_time.ToDatetime(timezone.utc))
        end = ceil_minute(request.to_time.ToDatetime(timezone.utc))
        if not violations and start >= end:
            violations.add("to", "must be after from")
        await violations.abort_if_any(context)
        try:
            async with self.aggregator.pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM symbols WHERE symbol = $1)", request.symbol):
                    await context.abort(grpc.StatusCode.NOT_FOUND, f"symbol {request.symbol} is not registered")
                await conn.execute(rollup.REBUILD_LOCK)
                await conn.execute(rollup.REBUILD_DELETE, request.symbol, start, end)
                row = await conn.fetchrow(rollup.REBUILD_INSERT, request.symbol, start, end)
        except CONNECTION_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"PostgreSQL unavailable: {exc or type(exc).__name__}")
        except asyncpg.QueryCanceledError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "rebuild took longer than the deadline")
        log.info("rebuilt rollups", extra={"symbol": request.symbol, "from": start.isoformat(),
                                           "to": end.isoformat(), "minutes": row["minutes"]})
        return aggregator_pb2.RebuildResponse(minutes_rebuilt=row["minutes"], ticks_scanned=row["ticks"])


async def serve(settings: Settings) -> None:
    dsn = settings.require_database_url()
    required_schema = latest_version(migrations_directory(settings.migrations_dir))
    host = GrpcServiceHost(settings=settings, port=settings.aggregator_port, port_setting="AGGREGATOR_PORT")
    nats = NatsConnection(settings.nats_url, "aggregator")
    pool = await create_pool(dsn, max_size=settings.db_pool_size)
    aggregator = Aggregator(settings, nats, pool)

    async def nats_ready() -> bool:
        return nats.is_connected and aggregator.consuming

    aggregator_pb2_grpc.add_AggregatorServiceServicer_to_server(AggregatorServicer(aggregator), host.server)
    host.add_service(SERVICE_NAME)
    host.add_dependency("nats", nats_ready)
    host.add_dependency("postgres", SchemaCheck(pool, required_schema))
    nats.start()
    host.add_background(aggregator.run(host.stopping), "consume")
    host.add_background(aggregator.prune_ledger(host.stopping), "prune-ledger")
    host.add_cleanup(nats.close)
    host.add_cleanup(pool.close)
    await host.run()
