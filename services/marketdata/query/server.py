"""Bootstrap of the query service: PostgreSQL pool, NATS connection, gRPC host with health and reflection."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from marketdata.common.config import Settings
from marketdata.common.database import DATABASE_ERRORS, SchemaCheck, create_pool
from marketdata.common.grpc_server import GrpcServiceHost
from marketdata.common.live import LiveFeed
from marketdata.common.nats import NatsConnection
from marketdata.migrate.migrations import latest_version, migrations_directory
from marketdata.query.history import History
from marketdata.query.servicer import WATCH_METRICS, QueryServicer
from marketdata.v1 import query_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "marketdata.v1.QueryService"
APPLICATION_NAME = "marketdata-query"
POOL_CLOSE_TIMEOUT_SECONDS = 5.0
# Daily candles over a long, dense history sort ~50k minute rows per request (~4 MB): with PostgreSQL's
# default 4MB that sort spills to disk; 16MB keeps it in memory (one sort per request, pool-sized).
WORK_MEM = "16MB"


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo. The service only runs single read-only statements that change no
    session state (no SET, cursors, LISTEN or advisory locks), so asyncpg's default reset query, a round trip
    to PostgreSQL on every release, is skipped; asyncpg still rolls back any open transaction itself."""


async def serve(settings: Settings) -> None:
    dsn = settings.require_database_url()
    required_version = latest_version(migrations_directory(settings.migrations_dir))
    # jit off: the bucket walks and the 100-symbol ticker have high cost estimates, and compiling them
    # (20-30 ms) costs more than running them (a few ms). Generic plans: every statement is prepared once and
    # run with new parameters; a custom plan per call re-plans 7 partitioned subqueries of the ticker (~1 ms)
    # and the candle walks, while run-time pruning keeps a generic plan to the partitions it needs.
    # The application name lets an operator (and the tests) find this service's queries in pg_stat_activity.
    pool = await create_pool(dsn, max_size=settings.pool_size_for("query"), application_name=APPLICATION_NAME,
                             reset=keep_session,
                             server_settings={"work_mem": WORK_MEM, "jit": "off", "plan_cache_mode": "force_generic_plan"})
    nats = NatsConnection(settings.nats_url, "query")
    nats.start()
    feed = LiveFeed(nats, settings.live_subject, WATCH_METRICS)

    host = GrpcServiceHost(settings=settings, port=settings.query_port, port_setting="QUERY_PORT")
    history = History(pool)
    query_pb2_grpc.add_QueryServiceServicer_to_server(QueryServicer(settings, history, feed), host.server)
    host.add_service(SERVICE_NAME)
    host.add_dependency("postgres", SchemaCheck(pool, required_version))

    async def nats_connected() -> bool:
        return nats.is_connected

    # History needs only PostgreSQL: without NATS the query stays ready and WatchTicks answers UNAVAILABLE.
    host.add_dependency("nats", nats_connected, required=False)

    async def end_streams_on_shutdown() -> None:
        # WatchTicks streams never end by themselves: end them as soon as shutdown starts, so the drain
        # of in-flight calls does not wait for them.
        await host.stopping.wait()
        feed.close_streams()

    host.add_background(end_streams_on_shutdown(), "end-watch-streams")

    async def close_pool() -> None:
        try:
            await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT_SECONDS)
        except (asyncio.TimeoutError, *DATABASE_ERRORS):  # closing anyway
            pool.terminate()

    # Cleanups run in reverse order: streams, then NATS, then PostgreSQL.
    host.add_cleanup(close_pool)
    host.add_cleanup(nats.close)
    host.add_cleanup(feed.close)
    await host.run()
