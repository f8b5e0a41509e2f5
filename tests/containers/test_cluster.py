"""The chart, rendered as the Tiltfile renders it, running as containers (tests/containers/harness.py), and
used from outside only through the edge container, as a user of the kind cluster would.

Shown here: the migration Job completes under the dev image and everything becomes ready in the
Tiltfile's order; the README's curl flow; a tick becoming a candle and an SSE event; `helm test`'s pod;
gRPC calls of the edge and the feeder spread over 2 ingest and 2 query replicas (each >= 30 %, counted by
the replicas' own metrics) while a plain channel pins to one; a replica started later gets calls within
the connection age + 30 s; a file synced into a dev container restarts its process; the runtime image
runs every command hardened as the chart says and drains on SIGTERM within the grace period."""

from __future__ import annotations

import concurrent.futures
import io
import json
import subprocess
import tarfile
import threading
import time
from datetime import datetime, timezone

import grpc
import httpx
import pytest

from marketdata.v1 import query_pb2, query_pb2_grpc
from tests.platform.test_readme import try_it_commands

from .conftest import FIGURES, render
from .engine import REPO, docker
from .harness import Harness, Pod, metric_total, scrape

RELEASE = "marketdata"
INGEST = f"{RELEASE}-ingest"
QUERY = f"{RELEASE}-query"
FAIR_SHARE = 0.30

# The first test of a session builds the images (minutes on a fresh machine, no layer cache).
pytestmark = pytest.mark.timeout(1800)


def edge_url(cluster: Harness) -> str:
    [edge] = cluster.pods[f"{RELEASE}-edge"]
    return f"http://{edge.ip}:8080"


def handled(pod: Pod, service: str) -> float:
    """gRPC calls of `service` the replica completed, from its own /metrics."""
    return metric_total(scrape(f"http://{pod.ip}:9090/metrics"), "grpc_server_handled_total", grpc_service=service)


def calls_per_replica(cluster: Harness, workload: str, service: str) -> dict[str, float]:
    return {pod.name: handled(pod, service) for pod in cluster.pods[workload]}


def shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    deltas = {name: after[name] - before.get(name, 0.0) for name in after}
    total = sum(deltas.values())
    assert total > 0, f"no calls counted: {deltas}"
    return {name: delta / total for name, delta in deltas.items()}


def config_value(cluster: Harness, key: str) -> str:
    [value] = {data[key] for data in cluster.config_maps.values() if key in data}
    return value


def post_tick(client: httpx.Client, symbol: str, price: float, trade_id: str) -> None:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    response = client.post("/api/v1/webhooks/ticks", headers={"x-api-key": "dev-key"},
                           json={"items": [{"symbol": symbol, "price": price, "size": 1.5, "eventTime": now,
                                            "tradeId": trade_id}]})
    assert response.status_code == 200, response.text


# --- deployment ------------------------------------------------------------------------------------

def test_migration_job_completes_under_the_dev_image_and_everything_gets_ready(cluster: Harness, images):
    [job] = [w for w in cluster.workloads.values() if w.kind == "Job"]
    [pod] = cluster.pods[job.name]
    state = pod.container.state()
    assert state["ExitCode"] == 0 and state["Status"] == "exited", pod.container.describe("the Job did not complete")
    image = docker("inspect", "--format", "{{.Config.Image}}", pod.container.name).stdout.strip()
    assert image == images.dev, "the harness runs what Tilt runs: the dev image"
    for name, workload in cluster.workloads.items():
        if workload.kind != "Job":
            assert len(cluster.pods[name]) == workload.replicas, name
            for replica in cluster.pods[name]:
                assert replica.container.running(), replica.container.describe("not running")


def test_pods_run_as_the_chart_says(cluster: Harness):
    """uid 10001, every capability dropped, no privilege escalation, the chart's emptyDir on /tmp."""
    for pod in (p for pods in cluster.pods.values() for p in pods if p.workload.kind != "Job"):
        host = json.loads(docker("inspect", "--format", "{{json .HostConfig}}", pod.container.name).stdout)
        assert host["CapDrop"] == ["ALL"], pod.name
        assert "no-new-privileges" in host["SecurityOpt"], pod.name
        assert "/tmp" in (host.get("Tmpfs") or {}), pod.name
        result = pod.container.exec("id", "-u")
        assert result.stdout.strip() == "10001", pod.container.describe(f"runs as {result.stdout!r}")


# --- through the edge only -------------------------------------------------------------------------

def test_readme_curl_flow_through_the_edge(cluster: Harness):
    base = edge_url(cluster)
    commands = [c for c in try_it_commands() if c.startswith("curl ")]
    assert len(commands) >= 8
    for command in commands:
        command = command.replace("http://localhost:8080", base)
        if command.startswith("curl -N "):
            # A live stream: still open, without an error, when curl gives up after 4 s (exit 28).
            result = subprocess.run(["bash", "-c", command.replace("curl -N ", "curl -sS -N --max-time 4 ", 1)],
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 28, f"{command}: {result.returncode} {result.stdout} {result.stderr}"
            continue
        result = subprocess.run(["bash", "-c", command.replace("curl ", "curl -sS --fail-with-body --max-time 20 ", 1)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


def test_a_tick_becomes_a_candle_and_an_sse_event(cluster: Harness):
    symbol = f"HARNESS{int(time.time()) % 100000}"
    with httpx.Client(base_url=edge_url(cluster), timeout=20) as client:
        response = client.post("/api/v1/webhooks/symbols", headers={"x-api-key": "dev-key"},
                               json={"items": [{"symbol": symbol, "base": "HAR", "quote": "USD", "active": True}]})
        assert response.status_code == 200, response.text
        event = None
        with client.stream("GET", "/realtime/ticks", params={"symbol": symbol}, timeout=30) as stream:
            assert stream.status_code == 200
            post_tick(client, symbol, 123.25, "harness-1")
            deadline = time.monotonic() + 30
            for line in stream.iter_lines():
                if line.startswith("data:") and symbol in line:
                    event = json.loads(line[len("data:"):])
                    break
                if time.monotonic() > deadline:
                    break
        assert event is not None, "no SSE event for the tick within 30 s"
        assert "123.25" in json.dumps(event)
        deadline = time.monotonic() + 30
        candles: list = []
        while time.monotonic() < deadline and not candles:
            body = client.get(f"/api/v1/ticks/{symbol}/history", params={"view": "ohlc1m", "limit": 5}).json()
            candles = body.get("candles") or body.get("items") or []
            time.sleep(0.5)
        assert candles, f"no candle for {symbol} within 30 s: {body}"
        assert "123.25" in json.dumps(candles[-1])


def test_helm_test_pod_passes(cluster: Harness):
    results = cluster.run_test_pods()
    assert results, "the chart renders a helm test pod"
    for name, code, logs in results:
        assert code == 0, f"container {cluster.prefix}{name}: helm test pod exited {code}\n{logs}"


# --- balancing ------------------------------------------------------------------------------------

def probes(pod: Pod) -> tuple[dict, dict]:
    [container] = pod.spec["containers"]
    return container["livenessProbe"], container["readinessProbe"]


def test_a_postgresql_outage_leaves_pods_live_but_takes_query_out_of_rotation(cluster: Harness):
    """The chart's probes as the kubelet runs them while PostgreSQL does not answer (its container frozen):
    query's readiness fails, so no call is routed to it, but its liveness passes, so nothing is restarted into
    back-off; ingest stays ready (it keeps accepting ticks, JetStream holds them). Afterwards query is ready again."""
    [postgres] = cluster.pods[f"{RELEASE}-postgresql"]
    query, ingest = cluster.pods[QUERY][0], cluster.pods[INGEST][0]
    query_liveness, query_readiness = probes(query)
    _, ingest_readiness = probes(ingest)
    assert query_liveness != query_readiness, "liveness and readiness ask the same thing"
    docker("pause", postgres.container.name)
    try:
        deadline = time.monotonic() + 90
        while cluster.probe_once(query, query_readiness) is None:
            assert time.monotonic() < deadline, "query stayed ready without PostgreSQL"
            time.sleep(1)
        for _ in range(5):  # across several kubelet periods, not one lucky probe
            assert cluster.probe_once(query, query_liveness) is None, "query's liveness depends on PostgreSQL"
            assert cluster.probe_once(ingest, ingest_readiness) is None, "ingest is not ready without PostgreSQL"
            time.sleep(1)
    finally:
        docker("unpause", postgres.container.name)
    FIGURES.append("PostgreSQL outage: query live but not ready, ingest ready; query ready again "
                   f"{cluster.wait_ready(query, timeout=120):.0f} s after PostgreSQL returned")


def test_a_plain_channel_pins_to_one_replica(cluster: Harness, images):
    """The control: what the clients did before (one channel to the Service name, pick_first) sends
    every call to one of the two query replicas, and the measurement below would see it."""
    before = calls_per_replica(cluster, QUERY, "marketdata.v1.QueryService")
    script = ("import grpc\nfrom marketdata.v1 import query_pb2, query_pb2_grpc\n"
              f"with grpc.insecure_channel('{RELEASE}-query:50052') as channel:\n"
              "    stub = query_pb2_grpc.QueryServiceStub(channel)\n"
              "    for _ in range(60):\n        stub.ListSymbols(query_pb2.ListSymbolsRequest(), timeout=10)\n")
    docker("run", "--rm", "--network", cluster.network, "--entrypoint", "python", images.runtime, "-c", script,
           timeout=120)
    split = shares(before, calls_per_replica(cluster, QUERY, "marketdata.v1.QueryService"))
    FIGURES.append("plain channel (old clients), query calls per replica: " + fmt(split))
    assert max(split.values()) >= 0.95, split


def fmt(split: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in sorted(split.items()))


def test_edge_and_feeder_calls_are_spread_over_replicas(cluster: Harness):
    assert len(cluster.pods[INGEST]) == 2 and len(cluster.pods[QUERY]) == 2
    # The feeder alone (PublishTicks every 0.2 s).
    before = calls_per_replica(cluster, INGEST, "marketdata.v1.IngestService")
    time.sleep(12)
    feeder_split = shares(before, calls_per_replica(cluster, INGEST, "marketdata.v1.IngestService"))
    # The edge: REST reads (query) and webhooks (ingest), feeder still running.
    before_query = calls_per_replica(cluster, QUERY, "marketdata.v1.QueryService")
    before_ingest = calls_per_replica(cluster, INGEST, "marketdata.v1.IngestService")
    with httpx.Client(base_url=edge_url(cluster), timeout=20) as client:
        for i in range(100):
            assert client.get("/api/v1/symbols").status_code == 200
            if i % 2 == 0:
                post_tick(client, "AAPL", 100 + i / 100, f"fair-{time.time_ns()}")
    query_split = shares(before_query, calls_per_replica(cluster, QUERY, "marketdata.v1.QueryService"))
    ingest_split = shares(before_ingest, calls_per_replica(cluster, INGEST, "marketdata.v1.IngestService"))
    FIGURES.append("feeder -> ingest calls per replica: " + fmt(feeder_split))
    FIGURES.append("edge -> query calls per replica: " + fmt(query_split))
    FIGURES.append("edge + feeder -> ingest calls per replica: " + fmt(ingest_split))
    for what, split in (("feeder->ingest", feeder_split), ("edge->query", query_split),
                        ("edge+feeder->ingest", ingest_split)):
        assert min(split.values()) >= FAIR_SHARE, f"{what}: {split}"


def test_a_replica_started_later_gets_calls(cluster: Harness):
    age = float(config_value(cluster, "GRPC_MAX_CONNECTION_AGE_SECONDS"))
    [new] = cluster.scale(QUERY, 3)
    ready = time.monotonic()
    budget = age + 30
    served = 0.0
    with httpx.Client(base_url=edge_url(cluster), timeout=20) as client:
        while time.monotonic() - ready < budget:
            for _ in range(10):
                client.get("/api/v1/symbols")
            served = handled(new, "marketdata.v1.QueryService")
            if served:
                break
            time.sleep(0.5)
    took = time.monotonic() - ready
    FIGURES.append(f"a query replica started later got its first edge call {took:.0f} s after it was ready "
                   f"(connection age {age:.0f} s)")
    assert served > 0, new.container.describe(f"no call within {budget:.0f} s (max connection age {age:.0f} s + 30 s)")


# --- the development loop ------------------------------------------------------------------------

def sync_into(pod: Pod, relative: str, content: bytes) -> None:
    """What Tilt's live update sync does: a tar stream extracted in the container, as its user."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(relative)
        info.size = len(content)
        info.mode = 0o644
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(content))
    result = pod.container.exec("tar", "-x", "-C", "/app/services", "-f", "-", input=buffer.getvalue(), text=False)
    assert result.returncode == 0, pod.container.describe(f"tar -x failed: {result.stderr!r}")


def test_a_file_synced_into_a_dev_container_restarts_the_service(cluster: Harness, tilt_plan):
    [pod] = cluster.pods[f"{RELEASE}-aggregator"]
    original = (REPO / "services" / "marketdata" / "cli.py").read_bytes()
    marker = f"synced-{time.time_ns()}"
    try:
        sync_into(pod, "marketdata/cli.py", original + f"\nimport sys\nprint({marker!r}, file=sys.stderr)\n".encode())
        result = pod.container.exec("sh", "-c", tilt_plan.restart_command)
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 30
        while marker not in pod.container.logs(200) and time.monotonic() < deadline:
            time.sleep(0.5)
        logs = pod.container.logs(200)
        assert marker in logs and "restart-on-change" in logs, pod.container.describe("the synced code did not run")
        cluster.wait_ready(pod, timeout=60)
        assert pod.container.restart_count() == 0, "restarted in place, not by a container restart"
    finally:
        sync_into(pod, "marketdata/cli.py", original)
        pod.container.exec("sh", "-c", tilt_plan.restart_command)


# --- the runtime image, hardened as the chart runs it -------------------------------------------------

@pytest.fixture(scope="module")
def hardened(cluster: Harness, images, tilt_plan):
    """The chart as plain Helm on kind renders it (no Tilt overrides: read-only root filesystem), one pod of
    every Deployment plus the migration Job, run from the runtime image beside the cluster (not behind
    its Services)."""
    args: list[str] = []
    pairs = iter(tilt_plan.helm_args)
    for arg in pairs:
        if arg == "--set":
            next(pairs)  # Tilt's development overrides
        else:
            args.append(arg)
    objects = render(args)
    harness = Harness(objects, network=cluster.network, prefix=cluster.prefix + "rt-", namespace=cluster.namespace,
                      image_for=lambda reference: images.runtime)
    pods: list[Pod] = []
    try:
        for workload in harness.workloads.values():
            if workload.kind == "Job":
                pods.append(harness.run_job(workload))
            elif workload.kind == "Deployment":
                pods.append(harness.start_pod(workload, suffix="hardened", service_aliases=False))
        yield harness, pods
    finally:
        for container in harness.extra + [p.container for p in pods]:
            container.remove()


def test_runtime_image_runs_every_command_hardened(hardened):
    harness, pods = hardened
    commands = set()
    for pod in pods:
        host = json.loads(docker("inspect", "--format", "{{json .HostConfig}}", pod.container.name).stdout)
        assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"], pod.name
        [container] = pod.spec["containers"]
        commands.add((container.get("args") or ["?"])[0])
        if pod.workload.kind == "Job":
            assert pod.container.state()["ExitCode"] == 0, pod.container.describe("migration failed")
            continue
        harness.wait_ready(pod)
        assert pod.container.exec("id", "-u").stdout.strip() == "10001"
        write = pod.container.exec("sh", "-c", "touch /app/x")
        assert write.returncode != 0 and "Read-only" in write.stderr, pod.container.describe("root fs is writable")
        assert pod.container.exec("sh", "-c", "touch /tmp/x").returncode == 0, "the emptyDir on /tmp is writable"
    assert commands == {"ingest", "query", "aggregator", "edge", "feeder", "migrate"}, commands


def watch_ticks(address: str, opened: threading.Event) -> str:
    """A WatchTicks stream until it ends: "OK" when the server ended it, else the status code."""
    with grpc.insecure_channel(address) as channel:
        call = query_pb2_grpc.QueryServiceStub(channel).WatchTicks(
            query_pb2.WatchTicksRequest(symbols=["AAPL"]), timeout=60)
        try:
            call.initial_metadata()
            opened.set()
            for _ in call:
                pass
        except grpc.RpcError as error:
            return error.code().name
        finally:
            opened.set()
    return "OK"


def test_sigterm_drains_within_the_grace_period(hardened):
    """`docker stop` with the pod's grace: SIGTERM, SIGKILL once the grace is over. Every process exits 0
    before it; an open WatchTicks stream on the query pod is ended by the server (status OK), not cut."""
    _, pods = hardened
    for pod in pods:
        if pod.workload.kind == "Job":
            continue
        grace = int(pod.spec["terminationGracePeriodSeconds"])
        stream = None
        if pod.spec["containers"][0]["args"] == ["query"]:
            opened = threading.Event()
            pool = concurrent.futures.ThreadPoolExecutor(1)
            stream = pool.submit(watch_ticks, f"{pod.ip}:50052", opened)
            assert opened.wait(20), pod.container.describe("WatchTicks did not open")
        code, seconds = pod.container.stop(grace)
        if stream is not None:
            assert stream.result(timeout=30) == "OK", pod.container.describe("the open stream was not ended cleanly")
        assert code == 0, pod.container.describe(f"exit code {code} after SIGTERM (137: killed after the grace)")
        assert seconds < grace, pod.container.describe(f"took {seconds:.1f} s of a {grace} s grace period")
        FIGURES.append(f"{pod.name}: SIGTERM -> exit 0 in {seconds:.1f} s (grace {grace} s)")
