"""grpcurl users need no proto files: reflection lists and describes every service, and calls work."""

from __future__ import annotations

import json
import subprocess

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.platform.test_contracts import buf
from tests.support.stack import Stack

EXPECTED = {
    "ingest": ("marketdata.v1.IngestService", {"PublishTicks", "StreamTicks", "UpsertSymbols"}),
    "aggregator": ("marketdata.v1.AggregatorService", {"GetStatus", "Rebuild"}),
    "query": ("marketdata.v1.QueryService", {"ListSymbols", "GetLatest", "GetHistory", "GetTicker", "WatchTicks", "WatchTicker"}),
}


def test_reflection_lists_and_describes_every_service(stack: Stack) -> None:
    for process in (stack.ingest, stack.aggregator, stack.query):
        assert process is not None
        service, methods = EXPECTED[process.command]
        with grpc.insecure_channel(process.address) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = set(database.get_services())
            assert {service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
            pool = descriptor_pool.DescriptorPool(database)
            assert {m.name for m in pool.FindServiceByName(service).methods} == methods
            assert pool.FindMessageTypeByName("marketdata.v1.Tick").fields_by_name["event_time"]


def test_buf_curl_calls_through_reflection_like_grpcurl(pipeline: Stack) -> None:
    """`buf curl` is a grpcurl-compatible client: what it gets, grpcurl users get."""
    result = subprocess.run(
        [buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--emit-defaults",
         f"http://{pipeline.aggregator.address}/marketdata.v1.AggregatorService/GetStatus"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert {"consumerPending", "ackPending", "ticksPerSecond", "deadLettered", "ticksCommitted",
            "duplicatesSkipped"} <= set(status)
    assert int(status["ticksCommitted"]) >= 0 and int(status["deadLettered"]) >= 0
    health = subprocess.run(
        [buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", '{"service":"marketdata.v1.IngestService"}',
         f"http://{pipeline.ingest.address}/grpc.health.v1.Health/Check"], capture_output=True, text=True, timeout=30)
    assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr
