"""Bad configuration is refused with the variable named, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from marketdata.common.config import SettingsError, load_settings


@pytest.mark.parametrize("name,value,expected", [
    ("INGEST_PORT", "abc", "INGEST_PORT='abc': must be an integer from 1 to 65535"),
    ("INGEST_PORT", "70000", "INGEST_PORT='70000'"),
    ("NATS_URL", "localhost:4222", "NATS_URL='localhost:4222': must be a URL starting with nats://"),
    ("DATABASE_URL", "mysql://x", "DATABASE_URL='mysql://x'"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT='xml': must be one of json, text"),
    ("MD_SUBJECT_PREFIX", "a.b", "MD_SUBJECT_PREFIX='a.b'"),
    ("QUERY_ADDR", "nohost", "QUERY_ADDR='nohost': must be host:port"),
    ("AGGREGATOR_BATCH_MAX_WAIT_MS", "0", "AGGREGATOR_BATCH_MAX_WAIT_MS='0'"),
])
def test_bad_values_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({name: value})
    assert expected in str(error.value)


def test_defaults_and_key_list() -> None:
    settings = load_settings({"API_KEYS": " a , b ,", "DATABASE_URL": "postgresql://x/y"})
    assert settings.api_keys == ("a", "b")
    assert settings.ingest_port == 50051 and settings.edge_port == 8080
    assert settings.live_subject("BTCUSDT") == "md.live.BTCUSDT"


def test_service_refuses_to_start_with_a_bad_value() -> None:
    env = {**os.environ, "INGEST_PORT": "nope", "DATABASE_URL": "postgresql://127.0.0.1/x"}
    result = subprocess.run([sys.executable, "-m", "marketdata", "ingest"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert "configuration error: INGEST_PORT='nope'" in result.stderr


def test_service_without_database_url_says_how_to_get_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run([sys.executable, "-m", "marketdata", "aggregator"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0 and "DATABASE_URL is not set" in result.stderr
