"""Helpers of the deployment tests: the real helm binary, rendered chart scenarios, repo paths.

helm is looked up on PATH, then in .tools/bin (where scripts/deploy-tools installs it). Without it
the tests are skipped on a developer machine but FAIL under CI=true, with the command to run.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "marketdata"
KIND_CONFIG = REPO / "kind-config.yaml"
KIND_VALUES = CHART / "values-kind.yaml"
TILTFILE = REPO / "Tiltfile"
DOCKERFILE = REPO / "Dockerfile"
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"

RELEASE = "md"
NAMESPACE = "marketdata"


@dataclass(frozen=True)
class Scenario:
    """One way of installing the chart: values files plus --set overrides."""

    name: str
    values: tuple[Path, ...] = ()
    sets: tuple[str, ...] = ()
    release: str = RELEASE
    extra: tuple[str, ...] = field(default=())

    def args(self) -> list[str]:
        args: list[str] = []
        for path in self.values:
            args += ["--values", str(path)]
        for item in self.sets:
            args += ["--set", item]
        return args + list(self.extra)


# The one value the chart requires (it has no default API key, as ingest has none).
API_KEY_SET = "auth.apiKeys=test-key"

SCENARIOS = {
    # The chart's defaults plus the required key.
    "default": Scenario("default", sets=(API_KEY_SET,)),
    "kind": Scenario("kind", values=(KIND_VALUES,)),
    "external-db": Scenario("external-db", values=(CHART / "ci" / "external-db-values.yaml",)),
    "production": Scenario("production", values=(CHART / "ci" / "production-values.yaml",)),
    "cloudnativepg": Scenario("cloudnativepg", values=(CHART / "ci" / "cloudnativepg-values.yaml",)),
    # What the Tiltfile renders (release "marketdata", kind values, dev overrides).
    "tilt": Scenario("tilt", values=(KIND_VALUES,), release="marketdata",
                     sets=("securityContext.readOnlyRootFilesystem=false", "config.logLevel=debug")),
}


def find_helm() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    local = REPO / ".tools" / "bin" / "helm"
    return str(local) if local.is_file() and os.access(local, os.X_OK) else None


def missing_tool(tool: str, how: str) -> None:
    """Fails under CI (a missing tool must not turn into a green run), skips elsewhere."""
    message = f"{tool} is not installed: {how}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_helm() -> str:
    binary = find_helm()
    if binary is None:
        missing_tool("helm", "run scripts/deploy-tools (installs .tools/bin/helm) or put helm on PATH")
    return binary


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm, *args], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache-tests",
                                 "HELM_CONFIG_HOME": "/tmp/helm-config-tests",
                                 "HELM_DATA_HOME": "/tmp/helm-data-tests"})
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}", pytrace=False)
    return result


@functools.lru_cache(maxsize=None)
def _render(helm: str, scenario: Scenario, with_tests: bool = True) -> str:
    args = ["template", scenario.release, str(CHART), "--namespace", NAMESPACE, *scenario.args()]
    if not with_tests:
        args.append("--skip-tests")
    return run_helm(helm, *args).stdout


def render_text(helm: str, name: str) -> str:
    return _render(helm, SCENARIOS[name])


def render_docs(helm: str, name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render_text(helm, name)) if doc]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def pod_spec(doc: dict) -> dict | None:
    kind = doc["kind"]
    if kind == "Pod":
        return doc["spec"]
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        return doc["spec"]["template"]["spec"]
    return None


def load_yaml(path: Path):
    with path.open() as handle:
        return yaml.safe_load(handle)


def template(helm: str, *args: str, release: str = "md") -> list[dict]:
    """The documents `helm template` renders from the chart with args."""
    result = run_helm(helm, "template", release, str(CHART), "--namespace", NAMESPACE, *args)
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def template_fails(helm: str, *args: str) -> str:
    """helm's error when the chart refuses to render with args."""
    result = run_helm(helm, "template", "md", str(CHART), "--namespace", NAMESPACE, *args, check=False)
    assert result.returncode != 0, f"rendered with {args}"
    return result.stderr


def chart_minimum_kubernetes_version() -> str:
    """The floor of Chart.yaml's kubeVersion (>=X.Y.Z-0)."""
    match = re.fullmatch(r">=(\d+\.\d+\.\d+)-0", load_yaml(CHART / "Chart.yaml")["kubeVersion"])
    assert match, "kubeVersion is a floor: >=X.Y.Z-0"
    return match.group(1)
