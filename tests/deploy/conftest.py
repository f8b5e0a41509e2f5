"""Fixtures of the deployment tests (helpers live in deploy_helpers.py)."""

from __future__ import annotations

import pytest

from .deploy_helpers import missing_tool, render_docs, require_helm


@pytest.fixture(scope="session")
def helm() -> str:
    """The real helm binary (PATH or .tools/bin); fails under CI=true when missing."""
    return require_helm()


@pytest.fixture(scope="session")
def kubernetes_validate():
    """The kubernetes-validate module; fails under CI=true when missing."""
    try:
        import kubernetes_validate as kv
    except ImportError:
        missing_tool("kubernetes-validate", "pip install kubernetes-validate (in the project's dev extras)")
    return kv


@pytest.fixture(scope="session")
def rendered(helm):
    """rendered(name) -> the Kubernetes objects of one scenario of deploy_helpers.SCENARIOS."""
    return lambda name: render_docs(helm, name)
