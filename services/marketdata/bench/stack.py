"""The benchmarked platform: NATS and PostgreSQL (given or embedded), a database and stream namespace of the
bench's own, and the services as real processes (`python -m marketdata <service>`) on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from marketdata.common.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from marketdata.migrate.migrations import DEFAULT_DIRECTORY, apply

API_KEY = "bench-key"
HOST = "127.0.0.1"
SERVICE_NAMES = {
    "ingest": "marketdata.v1.IngestService",
    "aggregator": "marketdata.v1.AggregatorService",
    "query": "marketdata.v1.QueryService",
}
PORT_SETTINGS = {"ingest": "INGEST_PORT", "query": "QUERY_PORT", "aggregator": "AGGREGATOR_PORT", "edge": "EDGE_PORT"}
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def available(service: str) -> bool:
    """Whether this checkout has the service (the query service and the edge may not exist yet)."""
    return (PACKAGE_DIR / service / "server.py").exists()


def rss_kib(pid: int | None) -> int | None:
    """VmRSS of a process in KiB, from /proc/<pid>/status."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command, user+system CPU seconds) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(entry)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return out


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@dataclass
class Service:
    name: str
    env: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> Service:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen([sys.executable, "-m", "marketdata", self.name], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def ready(self) -> bool:
        if self.name == "edge":
            import httpx
            try:
                return httpx.get(f"http://{self.address}/api/v1/health/readiness", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        try:
            with grpc.insecure_channel(self.address) as channel:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAMES[self.name]), timeout=1)
                return response.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.process.returncode if self.process else '?'}:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class BenchStack:
    """Everything the bench started; stop() undoes it (database dropped, temp dir removed unless kept)."""

    keep: bool = False
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="md-bench-")))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    nats_url: str = ""
    admin_url: str = ""
    database_url: str = ""
    nats_pid: int | None = None
    services: dict[str, Service] = field(default_factory=dict)
    _nats: EmbeddedNats | None = None
    _postgres: EmbeddedPostgres | None = None
    env: dict[str, str] = field(default_factory=dict)

    # -- infrastructure -----------------------------------------------------------------------------------
    def start_infra(self) -> None:
        if os.environ.get("NATS_URL"):
            self.nats_url = os.environ["NATS_URL"]
        else:
            self._nats = EmbeddedNats(self.work_dir / "nats")
            self.nats_url = self._nats.start(self.work_dir / "nats.log")
            self.nats_pid = self._nats.process.pid if self._nats.process else None
        if os.environ.get("DATABASE_URL"):
            self.admin_url = os.environ["DATABASE_URL"]
        else:
            self._postgres = EmbeddedPostgres(self.work_dir / "pg")
            self.admin_url = self._postgres.start()
        self.database_url = asyncio.run(self._create_database())
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "MD_STREAM": f"BENCH{self.run_id}",
            "MD_SUBJECT_PREFIX": f"bench{self.run_id}",
            "MD_CONSUMER": f"benchagg{self.run_id}",
            "API_KEYS": API_KEY,
            "BIND_HOST": HOST,
            "LOG_FORMAT": "text",
            "LOG_LEVEL": "warning",
            "METRICS_PORT": "0",
            "SHUTDOWN_GRACE_SECONDS": "3",
            "SSE_MAX_STREAMS": "5000",
            # The scale phase seeds months of history and drops a day itself, timed: the aggregator's own
            # retention must not drop the seed meanwhile.
            "RETENTION_RAW_DAYS": "0",
            "RETENTION_TICKS_DAYS": "0",
            "RETENTION_MINUTES_DAYS": "0",
        }

    async def _create_database(self) -> str:
        name = f"md_bench_{self.run_id}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = with_database(self.admin_url, name)
        await apply(url, DEFAULT_DIRECTORY)
        return url

    async def _drop_database(self) -> None:
        name = urlsplit(self.database_url).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def server_versions(self) -> dict[str, str]:
        conn = await asyncpg.connect(self.database_url)
        try:
            settings = {r["name"]: r["value"] for r in await conn.fetch(
                "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1)",
                ["shared_buffers", "synchronous_commit", "fsync", "wal_level", "max_wal_size", "work_mem"])}
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        import nats
        client = await nats.connect(self.nats_url)
        try:
            nats_version = client._server_info.get("version", "?")
        finally:
            await client.close()
        return {"postgresql": version, "nats_server": nats_version,
                "postgresql_settings": ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))}

    # -- services -----------------------------------------------------------------------------------------
    def service_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(self.env)
        for name, service in self.services.items():
            if name != "edge":
                env[f"{name.upper()}_ADDR"] = service.address
        env.update(extra or {})
        return env

    def start_service(self, name: str, extra_env: dict[str, str] | None = None) -> Service:
        port = free_port()
        env = self.service_env(extra_env)
        env[PORT_SETTINGS[name]] = str(port)
        service = Service(name, env, self.work_dir / f"{name}.log", port).start()
        self.services[name] = service
        return service

    def pids(self) -> dict[str, int | None]:
        pids = {name: s.pid for name, s in self.services.items() if s.alive()}
        if self.nats_pid:
            pids["nats-server"] = self.nats_pid
        return pids

    def postmaster_pid(self) -> int | None:
        if self._postgres is None:
            return None
        try:
            return int((self.work_dir / "pg" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cpu(self) -> dict[str, dict[int, float]]:
        """CPU seconds used so far, per service (per pid), PostgreSQL's being its postmaster and backends."""
        table = process_cpu()
        out: dict[str, dict[int, float]] = {}
        for name, pid in self.pids().items():
            if pid in table:
                out[name] = {pid: table[pid][2]}
        postmaster = self.postmaster_pid()
        if postmaster in table:
            out["postgres"] = {pid: cpu for pid, (ppid, _, cpu) in table.items() if pid == postmaster or ppid == postmaster}
        me = os.getpid()
        if me in table:
            out["bench client"] = {pid: cpu for pid, (ppid, _, cpu) in table.items()
                                   if pid == me or (ppid == me and pid not in self.pids().values())}
        return out

    def rss(self) -> dict[str, int | None]:
        return {name: rss_kib(pid) for name, pid in self.pids().items()}

    async def _delete_streams(self) -> None:
        import nats
        from nats.js.errors import NotFoundError

        client = await nats.connect(self.nats_url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            for name in (self.env["MD_STREAM"], f"{self.env['MD_STREAM']}_DEADLETTER"):
                try:
                    await client.jetstream().delete_stream(name)
                except NotFoundError:
                    pass
        finally:
            await client.close()

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
        if self._nats is None and self.env:
            try:  # a NATS of someone else's: leave nothing behind
                asyncio.run(self._delete_streams())
            except Exception:  # noqa: BLE001 - best effort
                pass
        if self.database_url:
            try:
                asyncio.run(self._drop_database())
            except Exception:  # noqa: BLE001 - an embedded server is about to go anyway
                pass
        if self._postgres is not None:
            self._postgres.stop()
        if self._nats is not None:
            self._nats.stop()
        if not self.keep:
            shutil.rmtree(self.work_dir, ignore_errors=True)
