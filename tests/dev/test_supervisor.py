"""The supervisor of `marketdata dev` with stand-in children: prefixed output, restarts with a limit, ordered
shutdown, and no grandchild left behind."""

from __future__ import annotations

import asyncio
import io
import os
import sys

import pytest

from marketdata.dev.supervisor import ChildSpec, Output, Supervisor, process_group_members

# A child that forks a grandchild which ignores SIGTERM, then runs until SIGTERM (or exits on its own).
CHILD = r"""
import os, signal, subprocess, sys, time
name, lifetime = sys.argv[1], float(sys.argv[2])
subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300"])
def stop(signum, frame):
    print(f"{name} got SIGTERM", flush=True)
    sys.exit(0)
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, stop)
print(f"{name} started\nsecond line", flush=True)
time.sleep(lifetime)
sys.exit(3)
"""


def spec(name: str, lifetime: float = 300, **env: str) -> ChildSpec:
    return ChildSpec(name, [sys.executable, "-c", CHILD, name, str(lifetime)], {**os.environ, **env})


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


async def wait_until(condition, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def no_group_left(supervisor: Supervisor) -> bool:
    return not any(process_group_members(pid) for child in supervisor.children.values() for pid in child.pids)


async def test_output_is_prefixed_per_line() -> None:
    out = io.StringIO()
    supervisor = Supervisor(Output(out, color=False))
    await supervisor.start(spec("alpha"))
    await wait_until(lambda: "alpha     | second line" in lines(out))
    assert "alpha     | alpha started" in lines(out)
    await supervisor.stop_all(["alpha"])
    assert no_group_left(supervisor)


def test_colour_only_when_asked() -> None:
    assert Output(io.StringIO(), color=True).prefix("ingest").startswith("\x1b[36m")
    assert Output(io.StringIO(), color=False).prefix("ingest") == "ingest    | "
    assert Output(io.StringIO()).color is False  # not a terminal


async def test_ordered_stop_kills_grandchildren() -> None:
    out = io.StringIO()
    supervisor = Supervisor(Output(out, color=False))
    for name in ("a", "b", "c"):
        await supervisor.start(spec(name))
    await wait_until(lambda: sum("started" in line for line in lines(out)) == 3)
    groups = [pid for child in supervisor.children.values() for pid in child.pids]
    assert all(len(process_group_members(pid)) >= 2 for pid in groups), "child and grandchild"
    await supervisor.stop_all(["c", "a", "b"])
    stopped = [line.split("|")[0].strip() for line in lines(out) if "got SIGTERM" in line]
    assert stopped == ["c", "a", "b"]
    assert no_group_left(supervisor)


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace() -> None:
    out = io.StringIO()
    supervisor = Supervisor(Output(out, color=False), stop_grace=0.5)
    await supervisor.start(spec("stubborn", IGNORE_TERM="1"))
    await wait_until(lambda: any("started" in line for line in lines(out)))
    await asyncio.wait_for(supervisor.stop_all(["stubborn"]), 10)
    assert any("did not stop within 0.5s: killing it" in line for line in lines(out))
    assert no_group_left(supervisor)


async def test_crashes_are_reported_restarted_then_given_up() -> None:
    out = io.StringIO()
    supervisor = Supervisor(Output(out, color=False), max_restarts=2, backoff_start=0.05)
    await supervisor.start(spec("flaky", lifetime=0.2))
    await asyncio.wait_for(supervisor.failed.wait(), 20)
    text = lines(out)
    restarts = [line for line in text if "flaky exited with code 3" in line and "restarting in" in line]
    assert len(restarts) == 2, text
    assert "restart 1 of at most 2" in restarts[0] and "restart 2 of at most 2" in restarts[1]
    assert "giving up" in (supervisor.failure or "")
    assert sum("flaky started" in line for line in text) == 3
    assert len(supervisor.children["flaky"].pids) == 3
    # The crashed children's grandchildren were swept at each exit.
    await wait_until(lambda: no_group_left(supervisor), 5)
    await supervisor.stop_all([])


async def test_wait_healthy_names_the_laggards() -> None:
    out = io.StringIO()
    supervisor = Supervisor(Output(out, color=False))

    async def yes() -> bool:
        return True

    async def no() -> bool:
        return False

    ok, slow = spec("ok"), spec("slow")
    ok.probe, slow.probe = yes, no
    await supervisor.start(ok)
    await supervisor.start(slow)
    try:
        with pytest.raises(TimeoutError, match="slow"):
            await supervisor.wait_healthy(["ok", "slow"], timeout=1.0)
        await supervisor.wait_healthy(["ok"], timeout=5.0)
    finally:
        await supervisor.stop_all([])
    assert no_group_left(supervisor)
