"""The images, built from the Dockerfile with the real Docker engine, run on their own (no cluster)."""

from __future__ import annotations

import subprocess
import time

import pytest

from . import engine
from .engine import Container, docker

# The first test of a session builds the images (minutes on a fresh machine, no layer cache).
pytestmark = pytest.mark.timeout(1800)


def run(image: str, *args: str, timeout: float = 60) -> tuple[int, str, float]:
    """`docker run --rm IMAGE ARGS`: (exit code, output, seconds); a container still running after the
    timeout fails the test with its last log lines."""
    name = f"mdimg{time.monotonic_ns()}"
    started = time.monotonic()
    try:
        result = docker("run", "--rm", "--name", name, image, *args, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        container = Container(name)
        error = container.fail(f"`{' '.join(args)}` still running after {timeout:.0f} s")
        container.remove()
        raise error from None
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def test_runtime_image_is_non_root_without_compilers(images):
    code, out, _ = run(images.runtime, "--help")
    assert code == 0 and "migrate" in out, out
    user = docker("image", "inspect", images.runtime, "--format", "{{.Config.User}}").stdout.strip()
    assert user.split(":")[0] == "10001"
    result = docker("run", "--rm", "--entrypoint", "sh", images.runtime, "-c",
                    "command -v gcc cc make apt-get || true", check=False)
    assert "gcc" not in result.stdout and "/cc" not in result.stdout and "make" not in result.stdout, result.stdout
    runtime, dev = engine.image_size_mb(images.runtime), engine.image_size_mb(images.dev)
    # The dev image adds only the wrapper and a copy of services/.
    assert dev - runtime < 50, f"dev {dev:.0f} MB vs runtime {runtime:.0f} MB"


def test_a_job_command_completes_under_the_dev_image(images):
    """`migrate` (the migration Job's command) runs once and its exit code is the container's. The old dev
    entrypoint restarted it every second for ever, so the Job never completed under Tilt."""
    code, out, seconds = run(images.dev, "migrate", "--help", timeout=60)
    assert code == 0, out
    assert out.count("usage: marketdata migrate") == 1, out
    assert seconds < 30
    # A failing Job command fails the container (the Job's backoff then retries it), also under the dev image.
    code, out, _ = run(images.dev, "migrate", "--wait", "1", timeout=60)
    assert code != 0, out
    assert "DATABASE_URL" in out


def test_dev_image_wrapper_passes_sigterm_and_exits_zero(images):
    """A long-running process under the dev wrapper stops on SIGTERM within the grace period, exit code 0."""
    name = f"mdimg{int(time.time())}-feeder"
    docker("run", "-d", "--name", name, "--user", "10001:10001", "--cap-drop", "ALL", "--read-only",
           "--tmpfs", "/tmp:rw,exec,mode=0777", "-e", "METRICS_PORT=9090", "-e", "INGEST_ADDR=127.0.0.1:1",
           "-e", "FEEDER_API_KEY=test-key", images.dev, "feeder")
    container = Container(name)
    try:
        deadline = time.monotonic() + 30
        while "feeder" not in container.logs() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert container.running(), container.describe("the feeder did not keep running")
        code, seconds = container.stop(grace_seconds=30)
        assert code == 0, container.describe(f"exit code {code} after SIGTERM")
        assert seconds < 30, container.describe(f"took {seconds:.1f} s to stop")
    finally:
        container.remove()
