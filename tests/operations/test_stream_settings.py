"""Stream settings (MD_STREAM_REPLICAS, MD_STREAM_MAX_BYTES, MD_STREAM_MAX_AGE_SECONDS, MD_DEADLETTER_MAX_BYTES)
against real NATS: a missing stream is created with them; an existing one is only upgraded, never reverted.

Replicas need a JetStream cluster: a three-node one is started from the nats-server binary for those tests.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from collections.abc import Iterator

import nats
import pytest
from nats.js import api

from marketdata.common.config import load_settings
from marketdata.common.embedded import free_port, nats_server_binary, wait_for_port
from marketdata.common.nats import ensure_streams
from tests.support.processes import ServiceProcess

MIB = 1 << 20


def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"MD_STREAM": f"S{tag}", "MD_SUBJECT_PREFIX": f"s{tag}", "MD_CONSUMER": f"c{tag}"}


async def stream_config(url: str, name: str) -> api.StreamConfig:
    client = await nats.connect(url)
    try:
        return (await client.jetstream().stream_info(name)).config
    finally:
        await client.close()


async def delete_streams(url: str, *streams: str) -> None:
    client = await nats.connect(url)
    try:
        for stream in streams:
            try:
                await client.jetstream().delete_stream(stream)
            except Exception:  # noqa: BLE001 - already gone
                pass
    finally:
        await client.close()


async def test_ingest_creates_a_missing_stream_with_the_settings(start_service, nats_url: str) -> None:
    env = {**names(), "MD_STREAM_MAX_BYTES": "64Mi", "MD_STREAM_MAX_AGE_SECONDS": "3600",
           "MD_DEADLETTER_MAX_BYTES": "8Mi"}
    await asyncio.to_thread(start_service, "ingest", **env)
    try:
        ticks = await stream_config(nats_url, env["MD_STREAM"])
        assert ticks.max_bytes == 64 * MIB and ticks.max_age == 3600 and ticks.num_replicas == 1
        dead = await stream_config(nats_url, f"{env['MD_STREAM']}_DEADLETTER")
        assert dead.max_bytes == 8 * MIB
    finally:
        await delete_streams(nats_url, env["MD_STREAM"], f"{env['MD_STREAM']}_DEADLETTER")


async def test_an_operators_stricter_stream_is_not_reverted(start_service, nats_url: str) -> None:
    env = {**names(), "MD_STREAM_MAX_BYTES": "64Mi", "MD_STREAM_MAX_AGE_SECONDS": "86400"}
    stream = env["MD_STREAM"]
    client = await nats.connect(nats_url)
    try:
        await client.jetstream().add_stream(api.StreamConfig(
            name=stream, subjects=[f"{env['MD_SUBJECT_PREFIX']}.ticks.>"], storage=api.StorageType.FILE,
            max_bytes=16 * MIB, max_age=1800, duplicate_window=60))
    finally:
        await client.close()
    try:
        for command in ("ingest", "aggregator"):  # both ensure the streams on start
            process: ServiceProcess = await asyncio.to_thread(start_service, command, **env)
            config = await stream_config(nats_url, stream)
            assert (config.max_bytes, config.max_age, config.duplicate_window) == (16 * MIB, 1800, 60)
            log = process.log_text()
            assert f"stream {stream} differs from the settings; kept as configured" in log
            assert f"max bytes {16 * MIB} (setting {64 * MIB})" in log
    finally:
        await delete_streams(nats_url, stream, f"{stream}_DEADLETTER")


async def test_a_stream_without_limits_gets_the_configured_ones(nats_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A stream created before the limits existed (unlimited bytes and age) is upgraded, not recreated."""
    env = {**names(), "NATS_URL": nats_url, "MD_STREAM_MAX_BYTES": "32Mi", "MD_STREAM_MAX_AGE_SECONDS": "7200"}
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await js.add_stream(api.StreamConfig(name=env["MD_STREAM"], subjects=[f"{env['MD_SUBJECT_PREFIX']}.ticks.>"],
                                             storage=api.StorageType.FILE))
        await js.publish(f"{env['MD_SUBJECT_PREFIX']}.ticks.AAPL", b"kept")
        caplog.set_level(logging.INFO, logger="marketdata.common.nats")
        await ensure_streams(client, load_settings(env))
        assert f"upgraded stream {env['MD_STREAM']}: max_bytes={32 * MIB}, max_age=7200" in caplog.text
        info = await js.stream_info(env["MD_STREAM"])
        assert (info.config.max_bytes, info.config.max_age) == (32 * MIB, 7200)
        assert info.state.messages == 1, "upgraded in place, messages kept"
        caplog.clear()
        await ensure_streams(client, load_settings(env))  # the next start: nothing to change, nothing to report
        assert not [r for r in caplog.records if r.name == "marketdata.common.nats" and r.levelname != "DEBUG"]
    finally:
        await client.close()
        await delete_streams(nats_url, env["MD_STREAM"], f"{env['MD_STREAM']}_DEADLETTER")


# --- replicas, on a three-node JetStream cluster --------------------------------------------------------------

@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("cluster")
    client_ports = [free_port() for _ in range(3)]
    route_ports = [free_port() for _ in range(3)]
    routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in route_ports)
    processes = []
    try:
        for index in range(3):
            conf = root / f"n{index}.conf"
            conf.write_text(
                f"server_name: n{index}\nlisten: 127.0.0.1:{client_ports[index]}\n"
                f"jetstream {{ store_dir: {root / f'data{index}'}, max_file_store: 256MB }}\n"
                f"cluster {{ name: md, listen: 127.0.0.1:{route_ports[index]}, routes: [{routes}] }}\n")
            log = open(root / f"n{index}.log", "ab")  # noqa: SIM115 - owned by the process
            processes.append(subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        for port, process in zip(client_ports, processes):
            wait_for_port("127.0.0.1", port, 20, process)
        url = ",".join(f"nats://127.0.0.1:{port}" for port in client_ports)
        asyncio.run(_wait_meta_leader(url))
        yield url
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


async def _wait_meta_leader(url: str) -> None:
    client = await nats.connect(url.split(","))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await client.jetstream().account_info()
                return
            except Exception:  # noqa: BLE001 - no meta leader yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await client.close()


async def _ensure(url: str, env: dict[str, str]) -> tuple[int, int]:
    client = await nats.connect(url.split(","))
    try:
        settings = load_settings({**env, "NATS_URL": url.split(",")[0]})
        await ensure_streams(client, settings)
        js = client.jetstream()
        ticks = await js.stream_info(settings.stream)
        dead = await js.stream_info(settings.deadletter_stream)
        return ticks.config.num_replicas, dead.config.num_replicas
    finally:
        await client.close()


async def test_missing_stream_is_created_with_three_replicas(nats_cluster: str) -> None:
    env = {**names(), "MD_STREAM_REPLICAS": "3", "MD_STREAM_MAX_BYTES": "16Mi"}
    assert await _ensure(nats_cluster, env) == (3, 3)


async def test_three_replicas_are_never_reverted_to_one(nats_cluster: str) -> None:
    """An operator's R3 stream stays R3 when a service configured for R1 starts (the bug of the old code)."""
    env = {**names(), "MD_STREAM_REPLICAS": "3"}
    assert await _ensure(nats_cluster, env) == (3, 3)
    assert await _ensure(nats_cluster, {**env, "MD_STREAM_REPLICAS": "1"}) == (3, 3)


async def test_one_replica_is_raised_to_the_setting(nats_cluster: str) -> None:
    env = {**names(), "MD_STREAM_REPLICAS": "1"}
    assert await _ensure(nats_cluster, env) == (1, 1)
    assert await _ensure(nats_cluster, {**env, "MD_STREAM_REPLICAS": "3"}) == (3, 3)
