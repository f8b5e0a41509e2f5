"""The one way a marketdata process opens a gRPC channel to another one (edge -> ingest/query/aggregator,
feeder -> ingest): balanced over every replica, retried where a retry cannot do harm, traced when tracing is on.

A `host:port` address is dialled as `dns:///host:port`: the DNS resolver returns every address of
the name (in Kubernetes the pods of a headless Service) and `round_robin` keeps a connection to
each and spreads the calls over them. One HTTP/2 connection to a ClusterIP would pin every call of
the client to one pod. New pods are found when the resolver runs again: at the latest when a server
closes a connection for its age (`GRPC_MAX_CONNECTION_AGE_SECONDS` on the servers) or a connection
fails. Addresses with a scheme (`dns:`, `ipv4:`, `unix:` ...) are used as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

from marketdata.common.tracing import client_interceptors

# Re-resolving the name at most this often; below the servers' connection age so that a new pod is
# found on the first reconnection after it became ready.
DNS_MIN_RERESOLVE_MS = 10_000

# Calls that can be sent again without changing the outcome: reads, upserts, and PublishTicks, whose
# messages carry a content-derived Nats-Msg-Id so JetStream stores a retried batch once. Not
# StreamTicks (a client stream; the feeder re-sends its unacknowledged batches itself) nor Rebuild.
IDEMPOTENT_METHODS: tuple[tuple[str, str | None], ...] = (
    ("marketdata.v1.IngestService", "PublishTicks"),
    ("marketdata.v1.IngestService", "UpsertSymbols"),
    ("marketdata.v1.QueryService", None),
    ("marketdata.v1.AggregatorService", "GetStatus"),
    ("grpc.health.v1.Health", "Check"),
)

# UNAVAILABLE only: the call did not reach a server that processed it (connection refused or reset,
# server draining). A few quick attempts, each to the next replica in the rotation.
RETRY_POLICY = {
    "maxAttempts": 3,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config() -> str:
    """The channel's service config (JSON): round_robin over the resolved addresses, retries for
    idempotent methods."""
    names = [{"service": service, **({"method": method} if method else {})} for service, method in IDEMPOTENT_METHODS]
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}],
    })


def channel_target(address: str) -> str:
    """`host:port` -> `dns:///host:port`; an address that names its resolver scheme is kept."""
    return address if ":/" in address or address.startswith(("dns:", "ipv4:", "ipv6:", "unix:")) else f"dns:///{address}"


def channel_options(extra: Sequence[tuple[str, object]] = ()) -> list[tuple[str, object]]:
    return [
        ("grpc.service_config", service_config()),
        # Only this config applies, whatever DNS TXT records say.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.enable_retries", 1),
        ("grpc.dns_min_time_between_resolutions_ms", DNS_MIN_RERESOLVE_MS),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # A restarted replica is used again within a second of coming back (calls in between fail over).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
        *extra,
    ]


def open_channel(address: str, extra_options: Sequence[tuple[str, object]] = ()) -> grpc.aio.Channel:
    """An insecure grpc.aio channel to every replica behind `address` (see the module docstring), with client
    spans while tracing is on."""
    return grpc.aio.insecure_channel(channel_target(address), options=channel_options(extra_options),
                                     interceptors=client_interceptors())
