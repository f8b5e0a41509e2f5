"""Typed settings read from environment variables (pydantic-settings), with errors that name the variable,
its value and the rule."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from marketdata.common import rules


class SettingsError(ValueError):
    """An environment variable has a value the platform cannot use."""


# Each field's description is its rule: an error reads `<VARIABLE>=<value>: must be <description>`.
def _int(variable: str, default: int | None, low: int, high: int) -> Any:
    return Field(default, ge=low, le=high, validation_alias=variable, description=f"an integer from {low} to {high}")


def _float(variable: str, default: float, low: float, high: float) -> Any:
    return Field(default, ge=low, le=high, allow_inf_nan=False, validation_alias=variable,
                 description=f"a number from {low} to {high}")


def _url(variable: str, default: str | None, *schemes: str) -> Any:
    return Field(default, pattern=f"^({'|'.join(schemes)})://", validation_alias=variable,
                 description="a URL starting with " + " or ".join(f"{scheme}://" for scheme in schemes))


def _token(variable: str, default: str) -> Any:
    return Field(default, pattern=r"^[A-Za-z0-9_-]+$", validation_alias=variable,
                 description="made of letters, digits, '_' and '-' only")


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("not host:port")
    return value


_SIZE = re.compile(r"^(\d+)\s*([KMGT]i?)?B?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
MIN_STREAM_BYTES = 1 << 20


def _stream_bytes(raw: str) -> int:
    """A byte size (`1073741824`, `1G`, `512Mi`) of at least MIN_STREAM_BYTES; -1: no limit."""
    if raw.strip() == "-1":
        return -1
    match = _SIZE.match(raw.strip())
    size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()] if match else 0
    if size < MIN_STREAM_BYTES:
        raise ValueError("not a size")
    return size


def _comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


HostPort = Annotated[str, AfterValidator(_host_port)]
StreamBytes = Annotated[int, BeforeValidator(_stream_bytes)]
CommaList = Annotated[tuple[str, ...], BeforeValidator(_comma_list)]
STREAM_BYTES_RULE = (f"a size of at least {MIN_STREAM_BYTES} bytes (e.g. 1073741824, 1G, 512Mi), "
                     "or -1 for no limit")

# Prometheus endpoints when METRICS_PORT is unset.
DEFAULT_METRICS_PORTS = {"ingest": 9101, "query": 9102, "aggregator": 9103, "feeder": 9104, "edge": 9105}
# PostgreSQL connections per process when DB_POOL_SIZE is unset: query serves concurrent reads; the aggregator
# commits AGGREGATOR_COMMIT_CONCURRENCY batches at once plus ledger pruning and Rebuild; ingest only reloads its
# symbol registry and upserts symbols (plus one LISTEN connection outside the pool).
DEFAULT_POOL_SIZES = {"query": 10, "aggregator": 4, "ingest": 3}


class Settings(BaseSettings):
    """Every knob of the platform. Each service reads the ones it needs. An empty variable counts as unset."""

    # Variables are parsed from their text by the fields' validators; the defaults are already values.
    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, enable_decoding=False,
                                      validate_default=False, extra="ignore", frozen=True)

    # Dependencies. DATABASE_URL has no default: services refuse to start without it, `marketdata dev`
    # and the tests provide an embedded PostgreSQL when it is unset.
    database_url: str | None = _url("DATABASE_URL", None, "postgresql", "postgres")
    nats_url: str = _url("NATS_URL", "nats://127.0.0.1:4222", "nats", "tls")
    # JetStream stream of ticks, and the prefix of every subject: <prefix>.ticks.<SYMBOL>,
    # <prefix>.live.<SYMBOL>, <prefix>.deadletter. Tests use their own so runs never meet.
    stream: str = _token("MD_STREAM", "MD_TICKS")
    subject_prefix: str = _token("MD_SUBJECT_PREFIX", "md")
    # Of a stream the services create (an existing one is never downgraded, see common/nats.py):
    # replicas (R3 needs a JetStream cluster), byte limits (-1: none) and the age of the oldest message kept.
    stream_replicas: int = _int("MD_STREAM_REPLICAS", 1, 1, 5)
    stream_max_bytes: StreamBytes = Field(-1, validation_alias="MD_STREAM_MAX_BYTES", description=STREAM_BYTES_RULE)
    stream_max_age_seconds: float = _float("MD_STREAM_MAX_AGE_SECONDS", 7 * 24 * 3600.0, 300.0, 10 * 365 * 86_400.0)
    deadletter_max_bytes: StreamBytes = Field(-1, validation_alias="MD_DEADLETTER_MAX_BYTES",
                                              description=STREAM_BYTES_RULE)
    consumer: str = _token("MD_CONSUMER", "aggregator")
    # Where servers listen, and where clients find them.
    bind_host: str = Field("0.0.0.0", validation_alias="BIND_HOST")
    ingest_port: int = _int("INGEST_PORT", 50051, 1, 65535)
    query_port: int = _int("QUERY_PORT", 50052, 1, 65535)
    aggregator_port: int = _int("AGGREGATOR_PORT", 50053, 1, 65535)
    edge_port: int = _int("EDGE_PORT", 8080, 1, 65535)
    # None: the service's default (DEFAULT_METRICS_PORTS); 0: no metrics endpoint.
    metrics_port: int | None = _int("METRICS_PORT", None, 0, 65535)
    ingest_addr: HostPort = Field("127.0.0.1:50051", validation_alias="INGEST_ADDR", description="host:port")
    query_addr: HostPort = Field("127.0.0.1:50052", validation_alias="QUERY_ADDR", description="host:port")
    aggregator_addr: HostPort = Field("127.0.0.1:50053", validation_alias="AGGREGATOR_ADDR", description="host:port")
    # Ingest rules. No keys by default: ingest refuses to start without them (require_api_keys).
    api_keys: CommaList = Field((), validation_alias=AliasChoices("API_KEYS", "API_KEY"),
                                description="comma-separated keys")
    # The contract's limits (buf.validate annotations) are the ceilings: a setting may only tighten them.
    max_batch_ticks: int = _int("INGEST_MAX_BATCH_TICKS", rules.MAX_BATCH_TICKS, 1, rules.MAX_BATCH_TICKS)
    max_message_bytes: int = _int("INGEST_MAX_MESSAGE_BYTES", 16 * 1024 * 1024, 1024, 256 * 1024 * 1024)
    max_future_skew_seconds: float = _float("INGEST_MAX_FUTURE_SKEW_SECONDS", 5.0, 0.0, 86_400.0)
    max_trade_id_length: int = _int("INGEST_MAX_TRADE_ID_LENGTH", rules.TRADE_ID_MAX_LENGTH, 1,
                                    rules.TRADE_ID_MAX_LENGTH)
    # Aggregator batching.
    batch_max_ticks: int = _int("AGGREGATOR_BATCH_MAX_TICKS", 5_000, 1, 1_000_000)
    batch_max_wait_ms: int = _int("AGGREGATOR_BATCH_MAX_WAIT_MS", 100, 1, 60_000)
    # Batches committing at once (the next is decoded meanwhile); row locks are taken in key order.
    commit_concurrency: int = _int("AGGREGATOR_COMMIT_CONCURRENCY", 2, 1, 16)
    # Deliveries of a message that keeps failing (not for its data) before it is dead-lettered.
    max_deliver: int = _int("AGGREGATOR_MAX_DELIVER", 50, 2, 10_000)
    # How often ledger rows below the consumer's ack floor are pruned.
    ledger_prune_seconds: float = _float("AGGREGATOR_LEDGER_PRUNE_SECONDS", 60.0, 0.1, 3_600.0)
    # Storage lifecycle (marketdata.retention): days kept per table (0: for ever), partitions created ahead,
    # and how often the aggregator does both.
    retention_raw_days: int = _int("RETENTION_RAW_DAYS", 2, 0, 36_500)
    retention_ticks_days: int = _int("RETENTION_TICKS_DAYS", 30, 0, 36_500)
    retention_minutes_days: int = _int("RETENTION_MINUTES_DAYS", 730, 0, 36_500)
    partitions_ahead_days: int = _int("PARTITIONS_AHEAD_DAYS", 3, 1, 366)
    maintenance_seconds: float = _float("AGGREGATOR_MAINTENANCE_SECONDS", 300.0, 0.1, 86_400.0)
    # Query limits.
    query_max_limit: int = _int("QUERY_MAX_LIMIT", rules.HISTORY_MAX_LIMIT, 1, rules.HISTORY_MAX_LIMIT)
    # Edge.
    web_dist_dir: Path | None = Field(None, validation_alias="WEB_DIST_DIR", description="a path")
    cors_origins: CommaList = Field((), validation_alias="CORS_ORIGINS", description="comma-separated origins")
    sse_max_streams: int = _int("SSE_MAX_STREAMS", 1_000, 1, 100_000)
    # A client whose bounded queue is full gets the latest update per (symbol, minute), and is dropped after
    # sse_max_behind_seconds still behind; each symbol keeps its last sse_replay_size updates for Last-Event-ID.
    sse_queue_size: int = _int("SSE_QUEUE_SIZE", 64, 1, 100_000)
    sse_max_behind_seconds: float = _float("SSE_MAX_BEHIND_SECONDS", 5.0, 0.1, 3_600.0)
    sse_replay_size: int = _int("SSE_REPLAY_SIZE", 64, 0, 100_000)
    sse_ping_seconds: float = _float("SSE_PING_SECONDS", 15.0, 0.1, 3_600.0)
    request_timeout_seconds: float = _float("REQUEST_TIMEOUT_SECONDS", 10.0, 0.1, 600.0)
    # Largest request body the edge reads (after gzip decoding; for an NDJSON stream, largest line).
    edge_max_body_bytes: int = _int("EDGE_MAX_BODY_BYTES", 8 << 20, 1024, 1 << 30)
    # gRPC channels of the tick webhook to ingest.
    edge_ingest_channels: int = _int("EDGE_INGEST_CHANNELS", 2, 1, 64)
    # Runtime. None: the service's default (DEFAULT_POOL_SIZES).
    db_pool_size: int | None = _int("DB_POOL_SIZE", None, 1, 1_000)
    # gRPC servers close each connection after this age (± 10 %, with a GOAWAY, in-flight calls
    # finishing within the grace: a longer stream, e.g. WatchTicks, is then ended with UNAVAILABLE and
    # re-opened by its client), so clients resolve the name again and spread over new replicas.
    grpc_max_connection_age_seconds: float = _float("GRPC_MAX_CONNECTION_AGE_SECONDS", 60.0, 1.0, 86_400.0)
    grpc_max_connection_age_grace_seconds: float = _float("GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", 300.0, 0.0,
                                                          86_400.0)
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(str.lower)] = Field(
        "info", validation_alias="LOG_LEVEL", description="one of debug, info, warning, error")
    log_format: Annotated[Literal["json", "text"], BeforeValidator(str.lower)] = Field(
        "json", validation_alias="LOG_FORMAT", description="one of json, text")
    shutdown_grace_seconds: float = _float("SHUTDOWN_GRACE_SECONDS", 10.0, 0.0, 600.0)
    migrations_dir: Path | None = Field(None, validation_alias="MIGRATIONS_DIR", description="a path")

    @model_validator(mode="after")
    def _minutes_outlive_ticks(self) -> Settings:
        ticks_days, minutes_days = self.retention_ticks_days, self.retention_minutes_days
        if ticks_days == 0 and minutes_days or minutes_days and minutes_days < ticks_days:
            # Rebuild recomputes minutes from ticks: minutes must outlive the ticks they are built from.
            raise ValueError(f"RETENTION_MINUTES_DAYS={minutes_days}: minute rollups must be kept at least as long "
                             f"as the ticks they are built from (RETENTION_TICKS_DAYS={ticks_days}; 0 keeps for ever)")
        return self

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

    def require_api_keys(self) -> tuple[str, ...]:
        if not self.api_keys:
            raise SettingsError("API_KEYS is not set: give the keys accepted in x-api-key, comma-separated "
                                "(e.g. API_KEYS=$(openssl rand -hex 16)), or run `marketdata dev`, which sets one")
        return self.api_keys


class _GivenSettings(Settings):
    """Settings from the variables given to load_settings only, not from the process environment."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   **_: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _error_text(error: Any, env: Mapping[str, str]) -> str:
    """`VARIABLE='value as given': must be <the field's rule>`; a rule across fields says its own text."""
    if not error["loc"]:
        return str(error["ctx"]["error"])
    variable = str(error["loc"][0])
    field = next(f for f in Settings.model_fields.values()
                 if variable in getattr(f.validation_alias, "choices", [f.validation_alias]))
    return f"{variable}={env.get(variable, error['input'])!r}: must be {field.description}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Reads settings from env (default os.environ); raises SettingsError naming every bad variable."""
    try:
        if env is None:
            return Settings()
        return _GivenSettings(**{name: value for name, value in env.items() if value != ""})
    except ValidationError as exc:
        given = os.environ if env is None else env
        raise SettingsError("; ".join(_error_text(error, given) for error in exc.errors())) from None
