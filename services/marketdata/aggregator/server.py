"""AggregatorService (GetStatus, Rebuild) beside the consumer that does the aggregator's real work."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import asyncpg
import grpc
from prometheus_client import Gauge

from marketdata.aggregator import rollup
from marketdata.aggregator.consumer import Aggregator
from marketdata.common import rules
from marketdata.common.auth import ApiKeyInterceptor
from marketdata.common.config import Settings, SettingsError
from marketdata.common.database import CONNECTION_ERRORS, DATABASE_ERRORS, SchemaCheck, create_pool
from marketdata.common.grpc_server import GrpcServiceHost
from marketdata.common.nats import NATS_ERRORS, NatsConnection
from marketdata.common.runner import sleep_unless
from marketdata.migrate.migrations import latest_version, migrations_directory
from marketdata.retention import lifecycle
from marketdata.v1 import aggregator_pb2, aggregator_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = aggregator_pb2.DESCRIPTOR.services_by_name["AggregatorService"].full_name
CONSUMER_PENDING = Gauge("aggregator_consumer_pending",
                         "Messages of the JetStream consumer not yet delivered or not yet acknowledged (lag)")
LAG_REPORT_SECONDS = 10.0


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
        except NATS_ERRORS as exc:  # NATS away
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"JetStream unavailable: {exc or type(exc).__name__}")
        return response

    async def Rebuild(self, request: aggregator_pb2.RebuildRequest,
                      context: grpc.aio.ServicerContext) -> aggregator_pb2.RebuildResponse:
        violations = rules.check(request)  # also timestamps that are not valid ones
        await violations.abort_if_any(context)
        start = floor_minute(request.from_time.ToDatetime(timezone.utc))
        end = ceil_minute(request.to_time.ToDatetime(timezone.utc))
        if start >= end:
            violations.add("to_time", "must be after from_time")
        await violations.abort_if_any(context)
        try:
            # Where ticks are gone, rebuilding would replace the stored candles with nothing.
            since, why = await self._ticks_kept_since()
            if since is not None and start < since:
                violations.add("from_time", f"must be within the ticks kept: from {since:%Y-%m-%dT%H:%M:%S}Z on "
                                            f"(the oldest partition of ticks_history, {why})")
                await violations.abort_if_any(context)
            async with self.aggregator.pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM symbols WHERE symbol = $1)", request.symbol):
                    await context.abort(grpc.StatusCode.NOT_FOUND, f"symbol {request.symbol} is not registered")
                await conn.execute(rollup.REBUILD_LOCK)
                await conn.execute(rollup.REBUILD_DELETE, request.symbol, start, end)
                row = await conn.fetchrow(rollup.REBUILD_INSERT, request.symbol, start, end)
                await conn.execute(rollup.REBUILD_TIERS, request.symbol, start, end)
        except CONNECTION_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"PostgreSQL unavailable: {exc or type(exc).__name__}")
        except lifecycle.TableBusy as exc:  # its partitions could not be listed: another session holds a lock
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except asyncpg.QueryCanceledError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "rebuild took longer than the deadline")
        log.info("rebuilt rollups", extra={"symbol": request.symbol, "from": start.isoformat(),
                                           "to": end.isoformat(), "minutes": row["minutes"]})
        return aggregator_pb2.RebuildResponse(minutes_rebuilt=row["minutes"], ticks_scanned=row["ticks"])

    async def _ticks_kept_since(self) -> tuple[datetime | None, str]:
        """Since when ticks_history holds every tick: the start of its oldest daily partition (retention drops
        whole partitions, and may have run with another RETENTION_TICKS_DAYS than this aggregator's)."""
        async with self.aggregator.pool.acquire() as conn:
            kept = await lifecycle.partitions(conn, "ticks_history")
        return (kept[0].lo, kept[0].name) if kept else (None, "")


async def report_lag(aggregator: Aggregator, stopping: asyncio.Event) -> None:
    """Keeps aggregator_consumer_pending current for alerts and dashboards (KEDA reads NATS itself)."""
    while not stopping.is_set():
        try:
            info = await aggregator.consumer_info()
            CONSUMER_PENDING.set((info.num_pending or 0) + (info.num_ack_pending or 0))
        except NATS_ERRORS as exc:  # NATS away or the consumer not created yet (NotFoundError): try again
            log.debug("consumer lag unknown", extra={"error": str(exc) or type(exc).__name__})
        await sleep_unless(stopping, LAG_REPORT_SECONDS)


async def maintain_storage(pool: asyncpg.Pool, settings: Settings, stopping: asyncio.Event) -> None:
    """Partitions ahead and retention (marketdata.retention.lifecycle), now and every maintenance_seconds."""
    while not stopping.is_set():
        try:
            await lifecycle.maintain(pool, settings, datetime.now(timezone.utc))
        except DATABASE_ERRORS as exc:  # PostgreSQL away: ticks land in DEFAULT meanwhile; try again
            log.warning("storage maintenance failed", extra={"error": str(exc) or type(exc).__name__})
        await sleep_unless(stopping, settings.maintenance_seconds)


async def serve(settings: Settings) -> None:
    dsn = settings.require_database_url()
    required_schema = latest_version(migrations_directory(settings.migrations_dir))
    # Rebuild rewrites stored candles: a write, so it takes an API key as ingest does; GetStatus is open.
    host = GrpcServiceHost(settings=settings, port=settings.aggregator_port, port_setting="AGGREGATOR_PORT",
                           interceptors=[ApiKeyInterceptor(settings.require_api_keys(), f"/{SERVICE_NAME}/Rebuild")])
    nats = NatsConnection(settings.nats_url, "aggregator")
    pool_size = settings.pool_size_for("aggregator")
    if pool_size <= settings.commit_concurrency:
        # Every committing batch holds a connection; pruning the ledger, storage maintenance and Rebuild need
        # one more (they wait for it).
        raise SettingsError(f"DB_POOL_SIZE={pool_size}: the aggregator needs more connections than "
                            f"AGGREGATOR_COMMIT_CONCURRENCY={settings.commit_concurrency} (at least "
                            f"{settings.commit_concurrency + 1})")
    # Doubles reach numeric columns through their text form, the shortest exact one (rollup.COMMIT_BATCH).
    pool = await create_pool(dsn, max_size=pool_size, application_name="marketdata-aggregator",
                             server_settings={"extra_float_digits": "1"})
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
    host.add_background(report_lag(aggregator, host.stopping), "report-lag")
    host.add_background(maintain_storage(pool, settings, host.stopping), "maintain-storage")
    host.add_cleanup(nats.close)
    host.add_cleanup(pool.close)
    await host.run()
