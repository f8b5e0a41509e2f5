"""Without a Docker engine the container tests must not pass silently: they say why, and fail under CI."""

from __future__ import annotations

import pytest

from . import engine


def test_no_engine_is_reported_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker CLI at all
    assert engine.engine_problem() == "the docker CLI is not installed"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CONTAINER TESTS NOT RUN: the docker CLI is not installed"):
        engine.require_engine()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="CONTAINER TESTS NOT RUN"):
        engine.require_engine()


def test_an_engine_that_does_not_answer_is_reported(monkeypatch, tmp_path):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "Cannot connect to the Docker daemon" in engine.engine_problem()
