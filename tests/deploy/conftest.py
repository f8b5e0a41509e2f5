"""Fixtures of the deployment tests (helpers live in deploy_helpers.py)."""

from __future__ import annotations

import pytest

from .deploy_helpers import render_docs, require_helm


@pytest.fixture(scope="session")
def helm() -> str:
    """The real helm binary (PATH or .tools/bin); fails under CI=true when missing."""
    return require_helm()


@pytest.fixture(scope="session")
def rendered(helm):
    """rendered(name) -> the Kubernetes objects of one scenario of deploy_helpers.SCENARIOS."""
    return lambda name: render_docs(helm, name)
