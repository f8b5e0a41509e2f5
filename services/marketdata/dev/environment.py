"""The dependencies of `marketdata dev`: NATS and PostgreSQL from NATS_URL / DATABASE_URL, or embedded ones
that keep their data in the data directory between runs (and are restarted when they die, see `watched`); the
migrations; the port checks; the data-dir lock."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from marketdata.common.embedded import EmbeddedError, EmbeddedNats, EmbeddedPostgres, port_is_free
from marketdata.common.runner import database_connect_problem, redact_url
from marketdata.dev.supervisor import describe_exit, proc_stat

log = logging.getLogger("marketdata.dev")

DATABASE_NAME = "marketdata"
LOCK_NAME = ".lock"


class DevError(RuntimeError):
    """Something `marketdata dev` cannot work around; the message says what to do."""


@dataclass(frozen=True)
class PortRequest:
    port: int
    flag: str  # the option that sets it, for the message
    what: str


def busy_ports(requests: list[PortRequest], host: str) -> list[str]:
    """One message per port that cannot be bound on host."""
    problems = []
    seen: dict[int, PortRequest] = {}
    for request in requests:
        if request.port in seen:
            problems.append(f"port {request.port} is given twice ({seen[request.port].flag} and {request.flag})")
            continue
        seen[request.port] = request
        # A wildcard bind also collides with a loopback listener, and vice versa: check both.
        hosts = {host, "127.0.0.1"} if host in ("0.0.0.0", "") else {host}
        if not all(port_is_free(request.port, h) for h in hosts):
            problems.append(f"port {request.port} ({request.what}) is already in use: stop what listens on it "
                            f"or choose another with {request.flag} PORT")
    return problems


class DataDirLock:
    """One `marketdata dev` per data directory: a second one would share (and corrupt) its databases."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._file = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 - held for the life of the process
        except OSError as exc:  # a file where the directory should be, no permission, a read-only disk
            reason = "a file, not a directory" if self.path.parent.is_file() else exc.strerror
            raise DevError(f"cannot use {self.path.parent} as the data directory ({reason}): give another "
                           "--data-dir") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DevError(f"{self.path.parent} is in use by another `marketdata dev` (pid {holder}): stop it "
                           f"first, or give this one its own --data-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def wipe(data_dir: Path) -> None:
    """--fresh: removes everything in the data directory but the lock (the caller holds it)."""
    if not data_dir.exists():
        return
    _stop_leftover_postgres(data_dir / "pg")
    _stop_leftover_nats(data_dir / "nats")
    for child in data_dir.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def _pg_ctl(pgdata: Path, *args: str) -> None:
    from pgserver._commands import pg_ctl  # runs as the pgserver user when we are root

    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(list(args), pgdata=pgdata, user=user, timeout=30)


def _stop_leftover_postgres(pgdata: Path) -> None:
    """A PostgreSQL left running on pgdata (a `marketdata dev` that was killed) is stopped."""
    pid = _postmaster_pid(pgdata)
    if pid is None or not _alive(pid):
        return
    log.info("stopping a PostgreSQL left running on %s (pid %d)", pgdata, pid)
    try:
        _pg_ctl(pgdata, "-w", "-m", "fast", "stop")
    except (subprocess.SubprocessError, OSError):
        _terminate(pid)


def _stop_leftover_nats(store: Path) -> None:
    """A nats-server left running on our store (a `marketdata dev` that was killed) is stopped: two servers
    must never share a JetStream store."""
    needle = str(store)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if not args or not os.path.basename(args[0]).startswith("nats-server"):
            continue
        if "-sd" in args and args.index("-sd") + 1 < len(args) and args[args.index("-sd") + 1] == needle:
            pid = int(entry.name)
            log.info("stopping a NATS left running on %s (pid %d)", store, pid)
            _terminate(pid)


def _terminate(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _prune_handles(pgdata: Path) -> None:
    """pgserver stops the server when its last handle (pid) goes; handles of dead processes (a killed
    `marketdata dev`) would keep it running for ever, so they are dropped before we take ours."""
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and pid != os.getpid() and _alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


@dataclass
class Environment:
    """NATS + PostgreSQL for the children, started (when embedded) and stopped by us."""

    data_dir: Path
    nats_port: int | None = None
    nats_url: str = ""
    database_url: str = ""
    embedded_nats: EmbeddedNats | None = None
    embedded_postgres: EmbeddedPostgres | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    def start_nats(self, given_url: str | None) -> None:
        if given_url:
            self.nats_url = given_url
            self.notes.append(f"NATS        {given_url} (from NATS_URL)")
            return
        server = EmbeddedNats(self.data_dir / "nats", port=self.nats_port)
        _stop_leftover_nats(server.data_dir)
        log.info("starting embedded NATS (JetStream) on port %d, data in %s", server.port, server.data_dir)
        try:
            self.nats_url = server.start(self.data_dir / "nats.log")
        except EmbeddedError as exc:
            raise DevError(f"embedded NATS: {exc}") from None
        self.embedded_nats = server
        self.notes.append(f"NATS        {self.nats_url} (embedded, JetStream data in {server.data_dir})")

    def start_postgres(self, given_url: str | None) -> None:
        if given_url:
            self.database_url = given_url
            self.notes.append(f"PostgreSQL  {redact_url(given_url)} (from DATABASE_URL)")
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL, data in %s%s", self.pgdata,
                 "" if (self.pgdata / "PG_VERSION").exists() else " (first run: initdb takes a few seconds)")
        _prune_handles(self.pgdata)
        server = EmbeddedPostgres(self.pgdata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning
            try:
                admin_url = server.start()
            except EmbeddedError as exc:
                raise DevError(f"embedded PostgreSQL: {exc}") from None
            except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
                # initdb/pg_ctl failing or timing out, a data or socket directory pgserver cannot use.
                raise DevError(f"embedded PostgreSQL did not start ({exc}); see {self.pgdata / 'log'}") from None
        self.embedded_postgres = server
        asyncio.run(_create_database(admin_url, DATABASE_NAME))
        self.database_url = with_database(admin_url, DATABASE_NAME)
        self.notes.append(f"PostgreSQL  {self.database_url} (embedded, data in {self.pgdata})")

    def migrate(self) -> int:
        from marketdata.migrate.migrations import MigrationError, apply, migrations_directory

        setting = os.environ.get("MIGRATIONS_DIR")
        try:
            applied = asyncio.run(apply(self.database_url, migrations_directory(Path(setting) if setting else None)))
        except MigrationError as exc:
            raise DevError(f"migrations: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - only a refused connection becomes a message
            problem = database_connect_problem(self.database_url, exc)
            if problem is None:
                raise
            raise DevError(problem) from None
        return len(applied)

    # -- the embedded servers die (killed, out of memory): restarted on the same port and data -------------------
    def watched(self) -> list[tuple[str, Callable[[], str | None], Callable[[], None]]]:
        """The embedded servers, for Supervisor.watch: (name, how it exited or None while it runs, restart)."""
        servers: list[tuple[str, Callable[[], str | None], Callable[[], None]]] = []
        if self.embedded_nats is not None:
            servers.append(("embedded NATS", self.nats_exit, self.restart_nats))
        if self.embedded_postgres is not None:
            servers.append(("embedded PostgreSQL", self.postgres_exit, self.embedded_postgres.restart))
        return servers

    def nats_exit(self) -> str | None:
        assert self.embedded_nats is not None and self.embedded_nats.process is not None
        code = self.embedded_nats.process.poll()  # which also reaps it: no zombie
        return None if code is None else describe_exit(code)

    def restart_nats(self) -> None:
        assert self.embedded_nats is not None
        self.embedded_nats.start(self.data_dir / "nats.log")

    def postgres_exit(self) -> str | None:
        # Not our child (pg_ctl starts it): its pid file says which process to look at.
        pid = _postmaster_pid(self.pgdata)
        if pid is not None and _alive(pid):
            return None
        return f"exited (postmaster {pid} is gone)" if pid is not None else "exited (no postmaster.pid)"

    def stop_nats(self) -> None:
        if self.embedded_nats is not None:
            log.info("stopping NATS")
            self.embedded_nats.stop()
            self.embedded_nats = None

    def stop_postgres(self) -> None:
        if self.embedded_postgres is None:
            return
        log.info("stopping PostgreSQL")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self.embedded_postgres.stop()
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                # pgserver's lock and handle files (ValueError: a damaged handle list) or pg_ctl stop.
                log.warning("pgserver could not stop PostgreSQL: %s", exc)
            finally:
                self.embedded_postgres = None
                # pgserver only stops the server when we hold its last handle: make sure it is down.
                _stop_leftover_postgres(self.pgdata)

    def stop(self) -> None:
        try:
            self.stop_nats()
        finally:
            self.stop_postgres()


async def _create_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
