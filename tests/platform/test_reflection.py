"""grpcurl users need no proto files: reflection lists and describes every service, and calls work."""

from __future__ import annotations

import base64
import json
import subprocess

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.platform.test_contracts import REPO, buf
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


def test_the_descriptor_set_serves_grpcurl_without_reflection(stack: Stack) -> None:
    """`grpcurl -protoset proto/marketdata.binpb` (here buf curl --schema, reflection off) reaches health too, and
    the set describes the BadRequest of an INVALID_ARGUMENT."""
    def call(address: str, method: str, body: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect=false", "--schema",
             str(REPO / "proto" / "marketdata.binpb"), "-d", body, f"http://{address}/{method}"],
            capture_output=True, text=True, timeout=30)

    assert stack.ingest is not None and stack.query is not None
    health = call(stack.ingest.address, "grpc.health.v1.Health/Check", '{"service":"marketdata.v1.IngestService"}')
    assert health.returncode == 0 and json.loads(health.stdout) == {"status": "SERVING"}, health.stderr
    bad = call(stack.query.address, "marketdata.v1.QueryService/GetHistory", '{"symbol":"BTCUSDT","limit":99999}')
    assert bad.returncode != 0
    error = json.loads(bad.stderr)
    assert error["code"] == "invalid_argument"
    [detail] = error["details"]
    assert detail["type"] == "google.rpc.BadRequest"
    violations = error_details_pb2.BadRequest.FromString(base64.b64decode(detail["value"] + "=="))
    assert [v.field for v in violations.field_violations] == ["limit"]
    files = descriptor_pb2.FileDescriptorSet.FromString((REPO / "proto" / "marketdata.binpb").read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    assert pool.FindMessageTypeByName("google.rpc.BadRequest").fields_by_name["field_violations"]


def test_health_list_answers_every_status(stack: Stack) -> None:
    """grpc.health.v1.Health/List, which reflection lists, answers (grpcio-health-checking leaves it unimplemented)."""
    for process in (stack.ingest, stack.aggregator, stack.query):
        assert process is not None
        service, _ = EXPECTED[process.command]
        with grpc.insecure_channel(process.address) as channel:
            listed = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
        statuses = {name: response.status for name, response in listed.statuses.items()}
        assert {"", "liveness", service} <= set(statuses), statuses
        assert statuses["liveness"] == health_pb2.HealthCheckResponse.SERVING
