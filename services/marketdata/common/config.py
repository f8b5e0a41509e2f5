"""Typed settings read from environment variables, with errors that name the variable and the rule."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

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


def _address(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{name}={value!r}: must be host:port")
    return value


# Prometheus endpoints when METRICS_PORT is unset (the edge serves /metrics on its HTTP port instead).
DEFAULT_METRICS_PORTS = {"ingest": 9101, "query": 9102, "aggregator": 9103, "feeder": 9104}


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
    # Runtime.
    db_pool_size: int
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

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError("DATABASE_URL is not set: give a postgresql:// URL (or run `marketdata dev`, "
                                "which starts an embedded PostgreSQL)")
        return self.database_url


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Reads settings from env (default os.environ); raises SettingsError naming the first bad variable."""
    env = os.environ if env is None else env
    metrics_port = _int(env, "METRICS_PORT", -1, 0, 65535)
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
        max_batch_ticks=_int(env, "INGEST_MAX_BATCH_TICKS", 10_000, 1, 1_000_000),
        max_message_bytes=_int(env, "INGEST_MAX_MESSAGE_BYTES", 16 * 1024 * 1024, 1024, 256 * 1024 * 1024),
        max_future_skew_seconds=_float(env, "INGEST_MAX_FUTURE_SKEW_SECONDS", 5.0, 0.0, 86_400.0),
        max_trade_id_length=_int(env, "INGEST_MAX_TRADE_ID_LENGTH", 64, 1, 1024),
        batch_max_ticks=_int(env, "AGGREGATOR_BATCH_MAX_TICKS", 5_000, 1, 1_000_000),
        batch_max_wait_ms=_int(env, "AGGREGATOR_BATCH_MAX_WAIT_MS", 100, 1, 60_000),
        commit_concurrency=_int(env, "AGGREGATOR_COMMIT_CONCURRENCY", 2, 1, 16),
        query_max_limit=_int(env, "QUERY_MAX_LIMIT", 5_000, 1, 1_000_000),
        web_dist_dir=Path(web_dist) if web_dist else None,
        cors_origins=tuple(o.strip() for o in (env.get("CORS_ORIGINS") or "").split(",") if o.strip()),
        sse_max_streams=_int(env, "SSE_MAX_STREAMS", 1_000, 1, 100_000),
        sse_queue_size=_int(env, "SSE_QUEUE_SIZE", 64, 1, 100_000),
        sse_max_behind_seconds=_float(env, "SSE_MAX_BEHIND_SECONDS", 5.0, 0.1, 3_600.0),
        sse_replay_size=_int(env, "SSE_REPLAY_SIZE", 1_024, 0, 1_000_000),
        sse_ping_seconds=_float(env, "SSE_PING_SECONDS", 15.0, 0.1, 3_600.0),
        request_timeout_seconds=_float(env, "REQUEST_TIMEOUT_SECONDS", 10.0, 0.1, 600.0),
        db_pool_size=_int(env, "DB_POOL_SIZE", 10, 1, 1_000),
        log_level=_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        log_format=_choice(env, "LOG_FORMAT", "json", ("json", "text")),
        shutdown_grace_seconds=_float(env, "SHUTDOWN_GRACE_SECONDS", 10.0, 0.0, 600.0),
        migrations_dir=Path(migrations) if migrations else None,
    )

