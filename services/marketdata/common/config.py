"""Typed settings read from environment variables, with errors that name the variable and the rule."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from marketdata.common import rules

_N = TypeVar("_N", int, float)


class SettingsError(ValueError):
    """An environment variable has a value the platform cannot use."""


_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _number(env: Mapping[str, str], name: str, default: _N, low: _N, high: _N, parse: Callable[[str], _N]) -> _N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    kind = "an integer" if parse is int else "a number"
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: must be {kind} from {low} to {high}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r}: must be {kind} from {low} to {high}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _number(env, name, default, low, high, int)


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _number(env, name, default, low, high, float)


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value.lower() not in choices:
        raise SettingsError(f"{name}={value!r}: must be one of {', '.join(choices)}")
    return value.lower()


def _url(env: Mapping[str, str], name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
    value = env.get(name) or default
    if value is None:
        return None
    if not value.startswith(tuple(f"{scheme}://" for scheme in schemes)):
        raise SettingsError(f"{name}={value!r}: must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return value


def _token(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    if not _SUBJECT_TOKEN.match(value):
        raise SettingsError(f"{name}={value!r}: only letters, digits, '_' and '-' are allowed")
    return value


_SIZE = re.compile(r"^(\d+)\s*([KMGT]i?)?B?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def _size(env: Mapping[str, str], name: str, low: int) -> int:
    """A byte size (`1073741824`, `1G`, `512Mi`); empty or -1: no limit (-1)."""
    raw = (env.get(name) or "").strip()
    if raw in ("", "-1"):
        return -1
    match = _SIZE.match(raw)
    value = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()] if match else None
    if value is None or value < low:
        raise SettingsError(f"{name}={raw!r}: must be a size of at least {low} bytes (e.g. 1073741824, 1G, 512Mi), "
                            "or -1 for no limit")
    return value


def _address(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{name}={value!r}: must be host:port")
    return value


# Prometheus endpoints when METRICS_PORT is unset.
DEFAULT_METRICS_PORTS = {"ingest": 9101, "query": 9102, "aggregator": 9103, "feeder": 9104, "edge": 9105}
# PostgreSQL connections per process when DB_POOL_SIZE is unset: query serves concurrent reads; the aggregator
# commits AGGREGATOR_COMMIT_CONCURRENCY batches at once plus ledger pruning and Rebuild; ingest only reloads its
# symbol registry and upserts symbols (plus one LISTEN connection outside the pool).
DEFAULT_POOL_SIZES = {"query": 10, "aggregator": 4, "ingest": 3}
# Connections a process holds outside its pool (ingest's LISTEN for registry changes).
EXTRA_CONNECTIONS = {"ingest": 1}


@dataclass(frozen=True)
class Settings:
    """Every knob of the platform. Each service reads the ones it needs."""

    # Dependencies. DATABASE_URL has no default: services refuse to start without it, `marketdata dev`
    # and the tests provide an embedded PostgreSQL when it is unset.
    database_url: str | None
    nats_url: str
    # JetStream stream of ticks, and the prefix of every subject: <prefix>.ticks.<SYMBOL>,
    # <prefix>.live.<SYMBOL>, <prefix>.deadletter. Tests use their own so runs never meet.
    stream: str
    subject_prefix: str
    # Of a stream the services create (an existing one is never downgraded, see common/nats.py):
    # replicas (R3 needs a JetStream cluster), byte limits (-1: none) and the age of the oldest message kept.
    stream_replicas: int
    stream_max_bytes: int
    stream_max_age_seconds: float
    deadletter_max_bytes: int
    consumer: str
    # Where servers listen, and where clients find them.
    bind_host: str
    ingest_port: int
    query_port: int
    aggregator_port: int
    edge_port: int
    # None: the service's default (DEFAULT_METRICS_PORTS); 0: no metrics endpoint.
    metrics_port: int | None
    ingest_addr: str
    query_addr: str
    aggregator_addr: str
    # Ingest rules.
    api_keys: tuple[str, ...]
    max_batch_ticks: int
    max_message_bytes: int
    max_future_skew_seconds: float
    max_trade_id_length: int
    # Aggregator batching.
    batch_max_ticks: int
    batch_max_wait_ms: int
    # Batches committing at once (the next is decoded meanwhile); row locks are taken in key order.
    commit_concurrency: int
    # Deliveries of a message that keeps failing (not for its data) before it is dead-lettered.
    max_deliver: int
    # How often ledger rows below the consumer's ack floor are pruned.
    ledger_prune_seconds: float
    # Storage lifecycle (marketdata.retention): days kept per table (0: for ever), partitions created ahead,
    # and how often the aggregator does both.
    retention_raw_days: int
    retention_ticks_days: int
    retention_minutes_days: int
    partitions_ahead_days: int
    maintenance_seconds: float
    # Query limits.
    query_max_limit: int
    # Edge.
    web_dist_dir: Path | None
    cors_origins: tuple[str, ...]
    sse_max_streams: int
    # A client whose bounded queue is full gets the latest update per symbol, and is dropped after
    # sse_max_behind_seconds still behind; sse_replay_size updates are kept for Last-Event-ID.
    sse_queue_size: int
    sse_max_behind_seconds: float
    sse_replay_size: int
    sse_ping_seconds: float
    request_timeout_seconds: float
    # Largest request body the edge reads (after gzip decoding; for an NDJSON stream, largest line).
    edge_max_body_bytes: int
    # gRPC channels of the tick webhook to ingest.
    edge_ingest_channels: int
    # Runtime. None: the service's default (DEFAULT_POOL_SIZES).
    db_pool_size: int | None
    # gRPC servers close each connection after this age (± 10 %, with a GOAWAY, in-flight calls
    # finishing within the grace: a longer stream, e.g. WatchTicks, is then ended with UNAVAILABLE and
    # re-opened by its client), so clients resolve the name again and spread over new replicas.
    grpc_max_connection_age_seconds: float
    grpc_max_connection_age_grace_seconds: float
    log_level: str
    log_format: str
    shutdown_grace_seconds: float
    migrations_dir: Path | None

    @property
    def ticks_subject_prefix(self) -> str:
        return f"{self.subject_prefix}.ticks"

    def ticks_subject(self, symbol: str) -> str:
        return f"{self.subject_prefix}.ticks.{symbol}"

    def live_subject(self, symbol: str) -> str:
        return f"{self.subject_prefix}.live.{symbol}"

    @property
    def deadletter_subject(self) -> str:
        return f"{self.subject_prefix}.deadletter"

    @property
    def deadletter_stream(self) -> str:
        return f"{self.stream}_DEADLETTER"

    def metrics_port_for(self, service: str) -> int:
        """The port of the service's Prometheus endpoint; 0 when disabled."""
        return DEFAULT_METRICS_PORTS.get(service, 0) if self.metrics_port is None else self.metrics_port

    def pool_size_for(self, service: str) -> int:
        """Connections of the service's PostgreSQL pool (DB_POOL_SIZE, else the service's default)."""
        return DEFAULT_POOL_SIZES.get(service, 10) if self.db_pool_size is None else self.db_pool_size

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError("DATABASE_URL is not set: give a postgresql:// URL (or run `marketdata dev`, "
                                "which starts an embedded PostgreSQL)")
        return self.database_url


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Reads settings from env (default os.environ); raises SettingsError naming the first bad variable."""
    env = os.environ if env is None else env
    metrics_port = _int(env, "METRICS_PORT", -1, 0, 65535)
    ticks_days = _int(env, "RETENTION_TICKS_DAYS", 30, 0, 36_500)
    minutes_days = _int(env, "RETENTION_MINUTES_DAYS", 730, 0, 36_500)
    if ticks_days == 0 and minutes_days or minutes_days and minutes_days < ticks_days:
        # Rebuild recomputes minutes from ticks: minutes must outlive the ticks they are built from.
        raise SettingsError(f"RETENTION_MINUTES_DAYS={minutes_days}: minute rollups must be kept at least as long "
                            f"as the ticks they are built from (RETENTION_TICKS_DAYS={ticks_days}; 0 keeps for ever)")
    api_keys = tuple(k.strip() for k in (env.get("API_KEYS") or env.get("API_KEY") or "dev-key").split(",") if k.strip())
    if not api_keys:
        raise SettingsError("API_KEYS is empty: give at least one key (comma-separated)")
    web_dist = env.get("WEB_DIST_DIR")
    migrations = env.get("MIGRATIONS_DIR")
    return Settings(
        database_url=_url(env, "DATABASE_URL", None, ("postgresql", "postgres")),
        nats_url=_url(env, "NATS_URL", "nats://127.0.0.1:4222", ("nats", "tls")) or "",
        stream=_token(env, "MD_STREAM", "MD_TICKS"),
        subject_prefix=_token(env, "MD_SUBJECT_PREFIX", "md"),
        stream_replicas=_int(env, "MD_STREAM_REPLICAS", 1, 1, 5),
        stream_max_bytes=_size(env, "MD_STREAM_MAX_BYTES", 1 << 20),
        stream_max_age_seconds=_float(env, "MD_STREAM_MAX_AGE_SECONDS", 7 * 24 * 3600.0, 300.0, 10 * 365 * 86_400.0),
        deadletter_max_bytes=_size(env, "MD_DEADLETTER_MAX_BYTES", 1 << 20),
        consumer=_token(env, "MD_CONSUMER", "aggregator"),
        bind_host=env.get("BIND_HOST") or "0.0.0.0",
        ingest_port=_int(env, "INGEST_PORT", 50051, 1, 65535),
        query_port=_int(env, "QUERY_PORT", 50052, 1, 65535),
        aggregator_port=_int(env, "AGGREGATOR_PORT", 50053, 1, 65535),
        edge_port=_int(env, "EDGE_PORT", 8080, 1, 65535),
        metrics_port=None if metrics_port < 0 else metrics_port,
        ingest_addr=_address(env, "INGEST_ADDR", "127.0.0.1:50051"),
        query_addr=_address(env, "QUERY_ADDR", "127.0.0.1:50052"),
        aggregator_addr=_address(env, "AGGREGATOR_ADDR", "127.0.0.1:50053"),
        api_keys=api_keys,
        # The contract's limits (buf.validate annotations) are the ceilings: a setting may only tighten them.
        max_batch_ticks=_int(env, "INGEST_MAX_BATCH_TICKS", rules.MAX_BATCH_TICKS, 1, rules.MAX_BATCH_TICKS),
        max_message_bytes=_int(env, "INGEST_MAX_MESSAGE_BYTES", 16 * 1024 * 1024, 1024, 256 * 1024 * 1024),
        max_future_skew_seconds=_float(env, "INGEST_MAX_FUTURE_SKEW_SECONDS", 5.0, 0.0, 86_400.0),
        max_trade_id_length=_int(env, "INGEST_MAX_TRADE_ID_LENGTH", rules.TRADE_ID_MAX_LENGTH, 1,
                                 rules.TRADE_ID_MAX_LENGTH),
        batch_max_ticks=_int(env, "AGGREGATOR_BATCH_MAX_TICKS", 5_000, 1, 1_000_000),
        batch_max_wait_ms=_int(env, "AGGREGATOR_BATCH_MAX_WAIT_MS", 100, 1, 60_000),
        commit_concurrency=_int(env, "AGGREGATOR_COMMIT_CONCURRENCY", 2, 1, 16),
        max_deliver=_int(env, "AGGREGATOR_MAX_DELIVER", 50, 2, 10_000),
        ledger_prune_seconds=_float(env, "AGGREGATOR_LEDGER_PRUNE_SECONDS", 60.0, 0.1, 3_600.0),
        retention_raw_days=_int(env, "RETENTION_RAW_DAYS", 2, 0, 36_500),
        retention_ticks_days=ticks_days,
        retention_minutes_days=minutes_days,
        partitions_ahead_days=_int(env, "PARTITIONS_AHEAD_DAYS", 3, 1, 366),
        maintenance_seconds=_float(env, "AGGREGATOR_MAINTENANCE_SECONDS", 300.0, 0.1, 86_400.0),
        query_max_limit=_int(env, "QUERY_MAX_LIMIT", rules.HISTORY_MAX_LIMIT, 1, rules.HISTORY_MAX_LIMIT),
        web_dist_dir=Path(web_dist) if web_dist else None,
        cors_origins=tuple(o.strip() for o in (env.get("CORS_ORIGINS") or "").split(",") if o.strip()),
        sse_max_streams=_int(env, "SSE_MAX_STREAMS", 1_000, 1, 100_000),
        sse_queue_size=_int(env, "SSE_QUEUE_SIZE", 64, 1, 100_000),
        sse_max_behind_seconds=_float(env, "SSE_MAX_BEHIND_SECONDS", 5.0, 0.1, 3_600.0),
        sse_replay_size=_int(env, "SSE_REPLAY_SIZE", 1_024, 0, 1_000_000),
        sse_ping_seconds=_float(env, "SSE_PING_SECONDS", 15.0, 0.1, 3_600.0),
        request_timeout_seconds=_float(env, "REQUEST_TIMEOUT_SECONDS", 10.0, 0.1, 600.0),
        edge_max_body_bytes=_int(env, "EDGE_MAX_BODY_BYTES", 8 << 20, 1024, 1 << 30),
        edge_ingest_channels=_int(env, "EDGE_INGEST_CHANNELS", 2, 1, 64),
        db_pool_size=None if not env.get("DB_POOL_SIZE") else _int(env, "DB_POOL_SIZE", 10, 1, 1_000),
        grpc_max_connection_age_seconds=_float(env, "GRPC_MAX_CONNECTION_AGE_SECONDS", 60.0, 1.0, 86_400.0),
        grpc_max_connection_age_grace_seconds=_float(env, "GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", 300.0, 0.0, 86_400.0),
        log_level=_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        log_format=_choice(env, "LOG_FORMAT", "json", ("json", "text")),
        shutdown_grace_seconds=_float(env, "SHUTDOWN_GRACE_SECONDS", 10.0, 0.0, 600.0),
        migrations_dir=Path(migrations) if migrations else None,
    )

