"""Every rendered object against the Kubernetes JSON schemas of the kind node's version (offline,
kubernetes-validate), and checkov on the rendered manifests (offline, no platform download)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from .deploy_helpers import (CHART, chart_minimum_kubernetes_version, KIND_CONFIG, NAMESPACE, REPO, SCENARIOS, load_yaml, missing_tool, render_text,
                             run_helm)


def kind_kubernetes_version() -> str:
    config = load_yaml(KIND_CONFIG)
    images = {node["image"] for node in config["nodes"]}
    assert len(images) == 1, "every node runs the same Kubernetes version"
    match = re.match(r"^kindest/node:v(\d+\.\d+\.\d+)(@sha256:[0-9a-f]{64})?$", images.pop())
    assert match, "kind-config.yaml pins kindest/node:vX.Y.Z"
    return match.group(1)


def schema_version(kubernetes_version: str) -> str:
    """kubernetes-validate ships schemas per minor version (X.Y.0)."""
    major, minor, _ = kubernetes_version.split(".")
    return f"{major}.{minor}.0"


# Custom resources of operators the chart can target (CloudNativePG, Gateway API, Prometheus Operator, KEDA):
# kubernetes-validate has only the built-in kinds; tests/deploy/test_deploy_production.py checks these.
CUSTOM_RESOURCES = {
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}


# Both ends of what the chart supports: the kind node's version and the oldest Chart.yaml allows (rendered
# with --kube-version, so helm's own kubeVersion check runs too).
@pytest.mark.parametrize("target", ["kind", "chart-minimum"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_objects_match_the_kind_kubernetes_schemas(helm, kubernetes_validate, scenario, target):
    if target == "kind":
        version = schema_version(kind_kubernetes_version())
        docs = [d for d in yaml.safe_load_all(render_text(helm, scenario)) if d]
    else:
        version = schema_version(chart_minimum_kubernetes_version())
        base = SCENARIOS[scenario]
        text = run_helm(helm, "template", base.release, str(CHART), "--namespace", NAMESPACE, *base.args(),
                        "--kube-version", version).stdout
        docs = [d for d in yaml.safe_load_all(text) if d]
    errors = []
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"kubernetes-validate has no schema for Kubernetes {version}: {error}", pytrace=False)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc['kind']} {doc['metadata']['name']}: {error.message} at {list(error.path)}")
    assert not errors, "\n".join(errors)


def test_schema_validation_catches_a_broken_object(kubernetes_validate):
    """The validator really rejects what the cluster would: a typo'd field in strict mode."""
    broken = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
              "spec": {"ports": [{"port": 80, "appProtocl": "http"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, schema_version(kind_kubernetes_version()), strict=True)


@pytest.fixture(scope="module")
def checkov():
    # scripts/deploy-tools installs it in an environment of its own (its pins clash with the test tools').
    binary = REPO / ".tools" / "checkov" / "bin" / "checkov"
    if binary.is_file():
        return str(binary)
    found = shutil.which("checkov")
    if not found:
        missing_tool("checkov", "scripts/deploy-tools")
    return found


# The installable cases; "tilt" is left out on purpose: for live update it makes the application
# containers' root filesystem writable (CKV_K8S_22), in the local kind cluster only.
CHECKOV_SCENARIOS = ("default", "kind", "external-db", "production", "cloudnativepg")


def test_checkov_passes_on_the_rendered_manifests(helm, checkov, tmp_path):
    for name in CHECKOV_SCENARIOS:
        (tmp_path / f"{name}.yaml").write_text(render_text(helm, name))
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
           "LOG_LEVEL": "ERROR"}
    result = subprocess.run(
        [checkov, "--directory", str(tmp_path), "--framework", "kubernetes", "--skip-download",
         "--output", "json", "--compact"],
        capture_output=True, text=True, env=env, timeout=600)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON report (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
                    f"{result.stderr[-3000:]}", pytrace=False)
    report = report[0] if isinstance(report, list) else report
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 500, summary
    # Every skipped check carries its reason (`checkov.io/skipN: CKV_K8S_xx=reason`).
    for check in report["results"]["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, f"{check['check_id']} on {check['resource']} is skipped without a reason"


def test_checkov_skips_are_justified_in_the_templates():
    from .deploy_helpers import CHART

    skips = []
    for path in (CHART / "templates").rglob("*"):
        if path.is_file():
            skips += re.findall(r"checkov\.io/skip\d+:\s*(CKV\w+)(=?)(.*)", path.read_text())
    assert skips
    for check_id, eq, reason in skips:
        assert eq == "=" and len(reason.strip()) > 20, f"{check_id} skipped without a reason"
