"""The Docker engine as the container tests use it: the `docker` CLI, images built once per session, and
errors that name the container and show its last log lines.

No engine: the tests are skipped with a loud reason on a developer machine and FAIL under CI=true
(`scripts/setup --test` installs and starts one when it runs as root)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"

# Where the official bases cannot be pulled, the stand-ins ../shared/containers/build-base-images.sh builds.
OFFICIAL_BASES = {"PYTHON_IMAGE": "python:3.11-slim-bookworm", "NODE_IMAGE": "node:20-bookworm-slim"}
STANDIN_BASES = {"PYTHON_IMAGE": "md-local/python:3.11-slim-bookworm", "NODE_IMAGE": "md-local/node:20-bookworm-slim"}

# Tags per checkout, so that test runs of two checkouts on one engine never run each other's code
# (the layers are shared all the same).
CHECKOUT = hashlib.sha1(str(REPO).encode()).hexdigest()[:8]
APP_DEV = f"md-test/marketdata:dev-{CHECKOUT}"
APP_RUNTIME = f"md-test/marketdata:runtime-{CHECKOUT}"
NATS_STANDIN = f"md-test/nats:standin-{CHECKOUT}"
POSTGRES_STANDIN = f"md-test/postgresql:standin-{CHECKOUT}"

LOG_LINES = 30


class ContainerError(AssertionError):
    """A container did not do what the test expected; the message names it and shows its logs."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def docker(*args: str, check: bool = True, timeout: float = 120, input: str | bytes | None = None,
           text: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=text, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def engine_problem() -> str | None:
    """Why no Docker engine can be used, or None when one answers."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        result = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if result.returncode != 0:
        return f"no Docker engine answers: {result.stderr.strip()}"
    return None


def require_engine() -> None:
    problem = engine_problem()
    if problem is None:
        return
    message = (f"CONTAINER TESTS NOT RUN: {problem}. Run `scripts/setup --test` as root (it installs docker.io and "
               "starts dockerd) or start Docker yourself.")
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False, timeout=30).returncode == 0


def base_images() -> dict[str, str]:
    """The build arguments for the Dockerfile's bases: MD_PYTHON_IMAGE / MD_NODE_IMAGE when set, the
    official images when present locally, else the md-local stand-ins."""
    chosen = {}
    for key, official in OFFICIAL_BASES.items():
        explicit = os.environ.get(f"MD_{key}")
        if explicit:
            chosen[key] = explicit
        elif image_exists(official):
            chosen[key] = official
        elif image_exists(STANDIN_BASES[key]):
            chosen[key] = STANDIN_BASES[key]
        else:
            raise RuntimeError(f"neither {official} nor the stand-in {STANDIN_BASES[key]} exists: run `scripts/setup "
                               "--test` (it pulls the official bases or builds the stand-ins) or set MD_" + key)
    return chosen


def build(tag: str, context: Path, target: str, build_args: dict[str, str], timeout: float = 1800) -> float:
    """docker build (cached layers make a repeat quick); returns the seconds it took."""
    started = time.monotonic()
    args = ["build", "--target", target, "-t", tag]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    result = docker(*args, str(context), check=False, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"docker build --target {target} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def image_size_mb(ref: str) -> float:
    return int(docker("image", "inspect", ref, "--format", "{{.Size}}").stdout.strip()) / 1e6


@dataclass
class Container:
    """One running (or finished) container."""

    name: str

    def logs(self, lines: int = LOG_LINES) -> str:
        result = docker("logs", "--tail", str(lines), self.name, check=False, timeout=30)
        return (result.stdout + result.stderr).rstrip()

    def describe(self, what: str, lines: int = LOG_LINES) -> str:
        return f"container {self.name}: {what}\n--- last {lines} log lines of {self.name} ---\n{self.logs(lines)}"

    def fail(self, what: str) -> ContainerError:
        return ContainerError(self.describe(what))

    def state(self) -> dict:
        import json
        result = docker("inspect", "--format", "{{json .State}}", self.name, check=False, timeout=30)
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def restart_count(self) -> int:
        result = docker("inspect", "--format", "{{.RestartCount}}", self.name, check=False, timeout=30)
        return int(result.stdout.strip() or -1)

    def running(self) -> bool:
        return bool(self.state().get("Running"))

    def ip(self, network: str) -> str:
        return docker("inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                      self.name).stdout.strip()

    def exec(self, *command: str, timeout: float = 60, input: str | bytes | None = None,
             text: bool = True) -> subprocess.CompletedProcess:
        return docker("exec", *(["-i"] if input is not None else []), self.name, *command, check=False,
                      timeout=timeout, input=input, text=text)

    def wait(self, timeout: float) -> int:
        """Waits for the container to exit; its exit code. Raises a ContainerError when it runs on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state and not state.get("Running") and state.get("Status") == "exited":
                return int(state["ExitCode"])
            time.sleep(0.5)
        raise self.fail(f"still running after {timeout:.0f} s")

    def stop(self, grace_seconds: float) -> tuple[int, float]:
        """`docker stop`: SIGTERM, then SIGKILL after the grace (what the kubelet does); (exit code, seconds)."""
        started = time.monotonic()
        docker("stop", "-t", str(int(grace_seconds)), self.name, timeout=grace_seconds + 60)
        return int(self.state().get("ExitCode", -1)), time.monotonic() - started

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False, timeout=60)
