"""Child processes for `marketdata dev`: prefixed (and coloured on a terminal) output, health probes,
restarts with backoff up to a limit, and an ordered shutdown that leaves nothing behind. Servers started
otherwise (the embedded NATS and PostgreSQL) are watched and restarted with the same budget.

Each child runs in a process group of its own (so a Ctrl-C on the terminal reaches only `marketdata dev`, which
then stops the children in order) and is told by the kernel to stop if `marketdata dev` itself dies
(PR_SET_PDEATHSIG). Stopping a child signals its whole group, and whatever is left of the group once the child
is gone is killed: no grandchild survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc
import httpx

Probe = Callable[[], Awaitable[bool]]

COLORS = {
    "ingest": "36", "aggregator": "35", "query": "34", "edge": "32", "feeder": "33", "dev": "1",
}
RESET = "\x1b[0m"
PREFIX_WIDTH = 10
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: [0] is the state, [2] the process group.
    None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is pgid, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = proc_stat(entry.name)
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class Output:
    """Writes `name      | line` to a stream; the name is coloured when the stream is a terminal."""

    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        if color is None:
            color = self.stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        self.color = color

    def prefix(self, name: str) -> str:
        label = f"{name:<{PREFIX_WIDTH}}|"
        if self.color:
            return f"\x1b[{COLORS.get(name, '37')}m{label}{RESET} "
        return f"{label} "

    def line(self, name: str, text: str) -> None:
        prefix = self.prefix(name)
        self.raw("".join(prefix + part + "\n" for part in text.rstrip("\r\n").split("\n")))

    def say(self, text: str) -> None:
        """A line of `marketdata dev` itself."""
        self.line("dev", text)

    def raw(self, text: str) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.stream.write(text)
            self.stream.flush()


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    probe: Probe | None = None  # healthy when it returns True


def describe_exit(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


@dataclass(kw_only=True)
class Restartable:
    """The restart budget of a supervised process: each exit spends one restart, a long enough run renews it."""

    started_at: float = 0.0
    restarts: int = 0


@dataclass
class Watched(Restartable):
    name: str
    exited: Callable[[], str | None]  # how it ended ("was killed by SIGKILL"), None while it runs
    restart: Callable[[], None]  # blocking: run in a thread


@dataclass
class Child(Restartable):
    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    stopping: bool = False
    pids: list[int] = field(default_factory=list)  # every pid (= process group) it ever had
    _pump: asyncio.Task[None] | None = None
    _watch: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    def __init__(self, output: Output, *, max_restarts: int = 5, backoff_start: float = 1.0,
                 backoff_max: float = 30.0, healthy_after: float = 60.0, stop_grace: float = 15.0,
                 watch_interval: float = 0.5) -> None:
        self.output = output
        self.max_restarts = max_restarts
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.healthy_after = healthy_after  # a child that ran this long starts its restart count afresh
        self.stop_grace = stop_grace
        self.watch_interval = watch_interval
        self.children: dict[str, Child] = {}
        self._watches: list[asyncio.Task[None]] = []
        self.failed = asyncio.Event()
        self.failure: str | None = None
        self.stopping = False

    async def start(self, spec: ChildSpec) -> Child:
        child = Child(spec)
        self.children[spec.name] = child
        await self._spawn(child)
        child._watch = asyncio.create_task(self._supervise(child), name=f"watch-{spec.name}")
        return child

    async def _spawn(self, child: Child) -> None:
        spec = child.spec
        child.process = await asyncio.create_subprocess_exec(
            *spec.argv, env=spec.env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            limit=1 << 20)
        child.pids.append(child.process.pid)
        child.started_at = time.monotonic()
        child._pump = asyncio.create_task(self._pump_output(child, child.process), name=f"pump-{spec.name}")

    async def _pump_output(self, child: Child, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            try:
                line = await process.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                line = await process.stdout.read(1 << 16)
            if not line:
                return
            for part in line.decode(errors="replace").replace("\r", "\n").split("\n"):
                if part.strip():
                    self.output.line(child.name, part)

    async def _wait_exit(self, process: asyncio.subprocess.Process) -> int:
        """The exit code of a child. asyncio's wait() also waits for the output pipe to close, which a
        grandchild can hold open: once the child itself is gone, what is left of its group is killed."""
        waiter = asyncio.ensure_future(process.wait())
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=0.2)
                if done:
                    return waiter.result()
                if process.returncode is not None:
                    self._sweep(process.pid)
                    try:
                        return await asyncio.wait_for(asyncio.shield(waiter), 2.0)
                    except asyncio.TimeoutError:
                        return process.returncode
        finally:
            if not waiter.done():
                waiter.cancel()

    async def _end_pump(self, child: Child, timeout: float = 2.0) -> None:
        if child._pump is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(child._pump), timeout)
        except (asyncio.TimeoutError, OSError):  # best effort: the pipe is held open (a grandchild) or failed
            child._pump.cancel()

    async def _supervise(self, child: Child) -> None:
        while True:
            assert child.process is not None
            code = await self._wait_exit(child.process)
            self._sweep(child.process.pid)
            await self._end_pump(child)
            if child.stopping or self.stopping:
                return
            if not await self._backoff(child.name, describe_exit(code), child) or child.stopping or self.stopping:
                return
            await self._spawn(child)

    async def _backoff(self, name: str, how: str, process: Restartable) -> bool:
        """After an exit: reports it and waits the backoff (True: restart it), or, with the budget spent, gives
        up (False, `failed` set)."""
        ran = time.monotonic() - process.started_at
        if ran >= self.healthy_after:
            process.restarts = 0
        if process.restarts >= self.max_restarts:
            self.failure = (f"{name} {how} after {ran:.1f}s and has already been restarted "
                            f"{process.restarts} times: giving up")
            self.output.say(self.failure)
            self.failed.set()
            return False
        delay = min(self.backoff_max, self.backoff_start * 2 ** process.restarts)
        process.restarts += 1
        self.output.say(f"{name} {how} after {ran:.1f}s; restarting in {delay:g}s "
                        f"(restart {process.restarts} of at most {self.max_restarts})")
        await asyncio.sleep(delay)
        return True

    def watch(self, name: str, exited: Callable[[], str | None], restart: Callable[[], None]) -> None:
        """Watches a server the supervisor did not start: restarted when it exits, like a child."""
        watched = Watched(name=name, exited=exited, restart=restart, started_at=time.monotonic())
        self._watches.append(asyncio.create_task(self._watch(watched), name=f"watch-{name}"))

    async def _watch(self, watched: Watched) -> None:
        while not self.stopping:
            how = watched.exited()
            if how is None:
                await asyncio.sleep(self.watch_interval)
                continue
            if not await self._backoff(watched.name, how, watched) or self.stopping:
                return
            try:
                await asyncio.to_thread(watched.restart)
            except Exception as exc:  # noqa: BLE001 - reported; the next look finds it down and spends a restart
                self.output.say(f"{watched.name} did not restart: {exc}")
            else:
                self.output.say(f"{watched.name} restarted")
            watched.started_at = time.monotonic()

    async def _stop_watching(self) -> None:
        for task in self._watches:
            task.cancel()
        await asyncio.gather(*self._watches, return_exceptions=True)

    def _sweep(self, pgid: int) -> None:
        """Kills whatever is left in a child's process group (its grandchildren)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    async def wait_healthy(self, names: Sequence[str], timeout: float, report_every: float = 10.0) -> None:
        """Returns when every named child's probe passes; raises TimeoutError (naming the laggards) or
        RuntimeError if the supervisor gave up on a child meanwhile."""
        deadline = time.monotonic() + timeout
        next_report = time.monotonic() + report_every
        pending = [n for n in names if self.children[n].spec.probe is not None]
        while pending:
            if self.failed.is_set():
                raise RuntimeError(self.failure or "a service failed")
            results = await asyncio.gather(*(self._probe(n) for n in pending))
            pending = [n for n, ok in zip(pending, results) if not ok]
            if not pending:
                return
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"not healthy after {timeout:.0f}s: {', '.join(pending)}")
            if now >= next_report:
                self.output.say(f"waiting for {', '.join(pending)} to become healthy")
                next_report = now + report_every
            await asyncio.sleep(0.25)

    async def _probe(self, name: str) -> bool:
        child = self.children[name]
        if not child.running or child.spec.probe is None:
            return False
        try:
            return bool(await asyncio.wait_for(child.spec.probe(), 2.0))
        except (OSError, asyncio.TimeoutError, grpc.RpcError, httpx.HTTPError):
            return False  # not healthy yet: refused, unreachable or too slow (the probes of marketdata.dev.__main__)

    async def stop_child(self, child: Child) -> None:
        child.stopping = True
        process = child.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self._wait_exit(process), self.stop_grace)
            except asyncio.TimeoutError:
                self.output.say(f"{child.name} did not stop within {self.stop_grace:g}s: killing it")
                self._sweep(process.pid)
                await self._wait_exit(process)
        if child._watch is not None:
            child._watch.cancel()
            await asyncio.gather(child._watch, return_exceptions=True)
        await self._end_pump(child)
        for pid in child.pids:
            self._sweep(pid)
        await self._wait_groups_empty(child.pids, 5.0)

    async def _wait_groups_empty(self, pgids: Sequence[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(process_group_members(pgid) for pgid in pgids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop_all(self, order: Sequence[str]) -> None:
        """Stops the children one after the other in `order` (then any other, newest first)."""
        self.stopping = True
        await self._stop_watching()
        names = [n for n in order if n in self.children]
        names += [n for n in reversed(list(self.children)) if n not in names]
        for name in names:
            child = self.children[name]
            if child.running:
                self.output.say(f"stopping {name}")
            await self.stop_child(child)

    def kill_all(self) -> None:
        """Immediate SIGKILL of every child's process group (a second Ctrl-C)."""
        self.stopping = True
        for task in self._watches:
            task.cancel()
        for child in self.children.values():
            child.stopping = True
            for pid in child.pids:
                self._sweep(pid)
