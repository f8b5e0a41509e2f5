"""`marketdata dev`: the whole platform on this machine, with one command.

Uses NATS_URL / DATABASE_URL when they are set; otherwise starts an embedded nats-server (JetStream) and an
embedded PostgreSQL whose data stays in --data-dir between runs (restarted if they die). Applies the migrations,
starts ingest, aggregator, query, edge and the feeder as supervised child processes, waits until all are healthy
and prints where to look. Ctrl-C stops everything, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

# This process forks children while its own gRPC channels (the health probes) exist: without this, gRPC
# prints "skipping fork() handlers" at every start. Must be set before grpc is imported.
_FORK_SUPPORT_SET_HERE = "GRPC_ENABLE_FORK_SUPPORT" not in os.environ
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
import httpx  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc

from marketdata.common.embedded import free_port
from marketdata.common.runner import signals_ignored, sigterm_interrupts
from marketdata.dev.environment import DevError, Environment, DataDirLock, PortRequest, busy_ports, wipe
from marketdata.dev.supervisor import ChildSpec, Output, Probe, Supervisor

GRPC_SERVICES = {
    "ingest": "marketdata.v1.IngestService",
    "aggregator": "marketdata.v1.AggregatorService",
    "query": "marketdata.v1.QueryService",
}
START_ORDER = ("ingest", "aggregator", "query", "edge")
STOP_ORDER = ("feeder", "edge", "query", "aggregator", "ingest")
REPO_ROOT = Path(__file__).resolve().parents[3]
WEB_BUILD_HINT = "npm --prefix web ci && npm --prefix web run build"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="marketdata dev", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MD_DEV_DATA_DIR") or ".data"),
                        help="where the embedded NATS and PostgreSQL keep their data (default ./.data)")
    parser.add_argument("--fresh", action="store_true", help="wipe the data directory first")
    parser.add_argument("--edge-port", type=int, default=8080, help="HTTP edge: dashboard, REST, docs (8080)")
    parser.add_argument("--ingest-port", type=int, default=50051, help="gRPC IngestService (50051)")
    parser.add_argument("--query-port", type=int, default=50052, help="gRPC QueryService (50052)")
    parser.add_argument("--aggregator-port", type=int, default=50053, help="gRPC AggregatorService (50053)")
    parser.add_argument("--nats-port", type=int, default=None,
                        help="port of the embedded NATS (default: a free one; a system NATS may hold 4222)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the services listen on (default 127.0.0.1; 0.0.0.0 to share on the network)")
    parser.add_argument("--no-feeder", action="store_true", help="do not start the synthetic feeder")
    parser.add_argument("--rate", type=float, default=None, help="feeder ticks per second (default 50)")
    parser.add_argument("--symbols", default=None, help="feeder symbols, comma-separated "
                                                        "(default BTCUSDT,ETHUSDT,SOLUSDT)")
    parser.add_argument("--max-restarts", type=int, default=5,
                        help="restarts of a crashing service (or embedded NATS or PostgreSQL) before dev gives up "
                             "(default 5)")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="seconds to wait for every service to be healthy (default 120)")
    args = parser.parse_args(argv)
    for flag in ("edge_port", "ingest_port", "query_port", "aggregator_port", "nats_port"):
        value = getattr(args, flag)
        if value is not None and not 0 < value < 65536:
            parser.error(f"--{flag.replace('_', '-')} {value}: ports are 1 to 65535")
    if args.rate is not None and not args.rate > 0:
        parser.error("--rate must be > 0")
    return args


def find_web_dist() -> Path | None:
    configured = os.environ.get("WEB_DIST_DIR")
    candidates = [Path(configured)] if configured else [REPO_ROOT / "web" / "dist", Path.cwd() / "web" / "dist"]
    for candidate in candidates:
        if (candidate / "index.html").is_file():
            return candidate.resolve()
    return None


def grpc_probe(address: str, service: str) -> Probe:
    async def probe() -> bool:
        async with grpc.aio.insecure_channel(address) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.5)
            return response.status == health_pb2.HealthCheckResponse.SERVING
    return probe


def http_probe(url: str) -> Probe:
    async def probe() -> bool:
        async with httpx.AsyncClient(timeout=1.5) as client:
            return (await client.get(url)).status_code == 200
    return probe


class Dev:
    def __init__(self, args: argparse.Namespace, output: Output) -> None:
        self.args = args
        self.output = output
        self.data_dir: Path = args.data_dir.expanduser().resolve()
        self.environment = Environment(self.data_dir, nats_port=args.nats_port)
        self.lock = DataDirLock(self.data_dir)
        self.web_dist = find_web_dist()
        self.api_key = ""
        self.client_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host

    # -- before anything starts ---------------------------------------------------------------------------
    def check_ports(self, embedded_nats: bool) -> None:
        a = self.args
        requests = [PortRequest(a.edge_port, "--edge-port", "edge, HTTP"),
                    PortRequest(a.ingest_port, "--ingest-port", "ingest, gRPC"),
                    PortRequest(a.query_port, "--query-port", "query, gRPC"),
                    PortRequest(a.aggregator_port, "--aggregator-port", "aggregator, gRPC")]
        if embedded_nats and a.nats_port:
            requests.append(PortRequest(a.nats_port, "--nats-port", "embedded NATS"))
        problems = busy_ports(requests, a.host)
        if problems:
            raise DevError("cannot start:\n  " + "\n  ".join(problems))

    def child_env(self) -> dict[str, str]:
        a = self.args
        env = dict(os.environ)
        keys = env.get("API_KEYS") or env.get("API_KEY") or "dev-key"
        self.api_key = keys.split(",")[0].strip()
        env.update({
            "DATABASE_URL": self.environment.database_url,
            "NATS_URL": self.environment.nats_url,
            "API_KEYS": keys,
            "BIND_HOST": a.host,
            "INGEST_PORT": str(a.ingest_port), "QUERY_PORT": str(a.query_port),
            "AGGREGATOR_PORT": str(a.aggregator_port), "EDGE_PORT": str(a.edge_port),
            "INGEST_ADDR": f"{self.client_host}:{a.ingest_port}",
            "QUERY_ADDR": f"{self.client_host}:{a.query_port}",
            "AGGREGATOR_ADDR": f"{self.client_host}:{a.aggregator_port}",
            "LOG_FORMAT": env.get("LOG_FORMAT") or "text",
            "PYTHONUNBUFFERED": "1",
            "SHUTDOWN_GRACE_SECONDS": env.get("SHUTDOWN_GRACE_SECONDS") or "5",
        })
        if self.web_dist is not None:
            env["WEB_DIST_DIR"] = str(self.web_dist)
        env.pop("API_KEY", None)
        if _FORK_SUPPORT_SET_HERE:
            env.pop("GRPC_ENABLE_FORK_SUPPORT", None)
        return env

    def specs(self) -> list[ChildSpec]:
        a = self.args
        base = self.child_env()
        specs = []
        for name in (*START_ORDER, "feeder"):
            if name == "feeder" and a.no_feeder:
                continue
            env = {**base, "METRICS_PORT": str(free_port(self.client_host))}
            probe: Probe | None = None
            if name in GRPC_SERVICES:
                port = getattr(a, f"{name}_port")
                probe = grpc_probe(f"{self.client_host}:{port}", GRPC_SERVICES[name])
            elif name == "edge":
                probe = http_probe(f"http://{self.client_host}:{a.edge_port}/api/v1/health/readiness")
            elif name == "feeder":
                if a.rate is not None:
                    env["FEEDER_RATE"] = f"{a.rate:g}"
                if a.symbols:
                    env["FEEDER_SYMBOLS"] = a.symbols
                env["FEEDER_API_KEY"] = env.get("FEEDER_API_KEY") or self.api_key
            specs.append(ChildSpec(name, [sys.executable, "-m", "marketdata", name], env, probe))
        return specs

    # -- the children --------------------------------------------------------------------------------------
    async def run_children(self) -> int:
        supervisor = Supervisor(self.output, max_restarts=self.args.max_restarts)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals_seen = 0

        def on_signal(sig: signal.Signals) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                self.output.raw("\n")
                self.output.say(f"{sig.name}: stopping (press Ctrl-C again to kill at once)")
                stop.set()
            else:
                self.output.say("killing every service now")
                supervisor.kill_all()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        for name, exited, restart in self.environment.watched():
            supervisor.watch(name, exited, restart)

        specs = {s.name: s for s in self.specs()}
        code = 0
        try:
            for name in START_ORDER:
                await supervisor.start(specs[name])
            waiting = asyncio.create_task(supervisor.wait_healthy(START_ORDER, self.args.startup_timeout))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
                return 0
            stopped.cancel()
            try:
                waiting.result()
            except (TimeoutError, RuntimeError) as exc:
                self.output.say(f"error: {exc}")
                return 1
            if "feeder" in specs:
                await supervisor.start(specs["feeder"])
            self.banner()
            failed = asyncio.create_task(supervisor.failed.wait())
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in (failed, stopped):
                task.cancel()
            if supervisor.failed.is_set() and not stop.is_set():
                self.output.say(f"error: {supervisor.failure}; stopping everything")
                code = 1
        finally:
            await supervisor.stop_all(STOP_ORDER)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return code

    def banner(self) -> None:
        a = self.args
        host = "localhost" if self.client_host == "127.0.0.1" else self.client_host
        web = f"http://{host}:{a.edge_port}"
        symbol = (a.symbols or "BTCUSDT").split(",")[0].strip().upper()
        lines = [
            "",
            "marketdata is running",
            f"  dashboard    {web}/",
            f"  REST API     {web}/api/v1   (e.g. {web}/api/v1/symbols)",
            f"  Swagger UI   {web}/docs",
            f"  gRPC         ingest {host}:{a.ingest_port}, query {host}:{a.query_port}, "
            f"aggregator {host}:{a.aggregator_port} (server reflection on)",
            *(f"  {note}" for note in self.environment.notes),
            f"  API key      {self.api_key}",
            "",
            "try:",
            f"  curl \"{web}/api/v1/ticks/{symbol}/history?view=ohlc1m&limit=30\"",
            f"  curl \"{web}/api/v1/ticks/{symbol}/latest\"",
            f"  curl -N \"{web}/realtime/ticks?symbol={symbol}\"        # live updates (SSE)",
            f"  grpcurl -plaintext {host}:{a.query_port} list",
            f"  grpcurl -plaintext {host}:{a.query_port} describe marketdata.v1.QueryService",
            f"  grpcurl -plaintext -d '{{\"symbols\":[\"{symbol}\"]}}' {host}:{a.query_port} "
            "marketdata.v1.QueryService/WatchTicks",
            f"  grpcurl -plaintext -d '{{\"symbol\":\"{symbol}\",\"view\":\"ohlc1m\",\"limit\":5}}' "
            f"{host}:{a.query_port} marketdata.v1.QueryService/GetHistory",
            f"  curl -X POST {web}/api/v1/webhooks/ticks -H 'x-api-key: {self.api_key}' "
            "-H 'content-type: application/json' \\",
            f"       -d '{{\"items\":[{{\"symbol\":\"{symbol}\",\"price\":43000.5,\"size\":0.1,"
            "\"eventTime\":\"'$(date -u +%FT%TZ)'\",\"tradeId\":\"manual-1\",\"side\":\"SIDE_BUY\"}]}'",
        ]
        if self.web_dist is None:
            lines += ["", f"note: the dashboard is not built (no web/dist): {WEB_BUILD_HINT}"]
        lines += ["", "press Ctrl-C to stop", ""]
        self.output.raw("\n".join(self.output.prefix("dev") + line for line in lines) + "\n")

    # -- the whole run ---------------------------------------------------------------------------------------
    def run(self) -> int:
        given_nats = os.environ.get("NATS_URL") or None
        given_db = os.environ.get("DATABASE_URL") or None
        self.check_ports(embedded_nats=given_nats is None)
        self.lock.acquire()
        try:
            if self.args.fresh:
                self.output.say(f"--fresh: wiping {self.data_dir}")
                wipe(self.data_dir)
            if self.web_dist is None:
                self.output.say(f"the dashboard is not built (no web/dist): run `{WEB_BUILD_HINT}`; "
                                "the API works without it")
            self.environment.start_nats(given_nats)
            self.environment.start_postgres(given_db)
            applied = self.environment.migrate()
            self.output.say(f"database ready ({applied} migration(s) applied)")
            return asyncio.run(self.run_children())
        finally:
            with signals_ignored():
                try:
                    self.environment.stop()
                finally:
                    self.lock.release()
                    self.output.say("stopped")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output = Output()
    # Until the event loop takes over, SIGTERM behaves like Ctrl-C: what was started is stopped.
    sigterm_interrupts()
    handler = logging.Handler()
    handler.emit = lambda record: output.say(record.getMessage())  # type: ignore[method-assign]
    dev_log = logging.getLogger("marketdata.dev")
    dev_log.handlers[:] = [handler]
    dev_log.setLevel(logging.INFO)
    dev_log.propagate = False
    try:
        code = Dev(args, output).run()
    except DevError as exc:
        output.say(f"error: {exc}")
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
