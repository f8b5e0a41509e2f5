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
    ("MD_STREAM_REPLICAS", "7", "MD_STREAM_REPLICAS='7': must be an integer from 1 to 5"),
    ("MD_STREAM_MAX_BYTES", "lots", "MD_STREAM_MAX_BYTES='lots': must be a size of at least 1048576 bytes"),
    ("MD_STREAM_MAX_BYTES", "1K", "MD_STREAM_MAX_BYTES='1K'"),
    ("MD_STREAM_MAX_AGE_SECONDS", "60", "MD_STREAM_MAX_AGE_SECONDS='60'"),
    ("DB_POOL_SIZE", "0", "DB_POOL_SIZE='0'"),
])
def test_bad_values_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({name: value})
    assert expected in str(error.value)


def test_defaults_and_key_list() -> None:
    settings = load_settings({"API_KEYS": " a , b ,", "DATABASE_URL": "postgresql://x/y"})
    assert settings.api_keys == ("a", "b") == settings.require_api_keys()
    assert load_settings({}).api_keys == ()
    assert settings.ingest_port == 50051 and settings.edge_port == 8080
    assert settings.live_subject("BTCUSDT") == "md.live.BTCUSDT"


@pytest.mark.parametrize("value,expected", [
    ("", -1), ("-1", -1), ("1073741824", 1 << 30), ("1G", 10**9), ("1Gi", 1 << 30), ("512Mi", 512 << 20),
    ("2GB", 2 * 10**9),
])
def test_stream_sizes_read_like_kubernetes_quantities(value: str, expected: int) -> None:
    assert load_settings({"MD_STREAM_MAX_BYTES": value}).stream_max_bytes == expected


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


@pytest.mark.parametrize("command,variable", [("ingest", "API_KEYS"), ("feeder", "FEEDER_API_KEY")])
def test_a_service_without_api_keys_says_how_to_set_them(command: str, variable: str) -> None:
    # No silent development key outside `marketdata dev`: ingest would accept it, the feeder would send it.
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEYS", "API_KEY", "FEEDER_API_KEY")}
    env.update({"DATABASE_URL": "postgresql://127.0.0.1/x", "METRICS_PORT": "0"})
    result = subprocess.run([sys.executable, "-m", "marketdata", command], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert f"configuration error: {variable} is not set" in result.stderr and "marketdata dev" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({"INGEST_PORT": "0", "LOG_LEVEL": "LOUD"})
    assert str(error.value) == ("INGEST_PORT='0': must be an integer from 1 to 65535; "
                                "LOG_LEVEL='LOUD': must be one of debug, info, warning, error")
