"""Session fixtures of the container tests: the images (built once, cached by Docker between runs) and the
chart running as containers (deployed once for every test of tests/containers/test_cluster.py).

Figures (build times, image sizes, time to a ready stack, call shares per replica) are printed in the
terminal summary."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import yaml

from . import engine
from .harness import Harness

NAMESPACE = "marketdata"
# The test's own addition to Tilt's overrides: two replicas of each gRPC backend, to show the balancing.
REPLICA_SETS = ("services.ingest.replicaCount=2", "services.query.replicaCount=2")

FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("container figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    harness = getattr(item.config, "_md_harness", None)
    if report.failed and harness is not None:
        report.sections.append(("containers of the harness (state)", harness.diagnose()))
        # The containers the failure names (e.g. the replica that got no share), with their last log lines.
        text = str(report.longrepr)
        for container in harness.containers():
            pod_name = container.name.removeprefix(harness.prefix)
            if pod_name in text and f"last {engine.LOG_LINES} log lines of {container.name}" not in text:
                report.sections.append((f"container {container.name}", container.logs()))


@pytest.fixture(scope="session")
def docker_engine() -> None:
    engine.require_engine()


@dataclass
class Images:
    dev: str
    runtime: str
    nats: str
    postgresql: str
    build_args: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="session")
def images(docker_engine: None) -> Images:
    """The application's dev and runtime images and the NATS/PostgreSQL stand-ins, built once."""
    build_args = engine.base_images()
    seconds = {}
    for tag, target in ((engine.APP_DEV, "dev"), (engine.APP_RUNTIME, "runtime")):
        seconds[tag] = engine.build(tag, engine.REPO, target, build_args)
    standin_args = {"PYTHON_IMAGE": build_args["PYTHON_IMAGE"]}
    for tag, target in ((engine.NATS_STANDIN, "nats"), (engine.POSTGRES_STANDIN, "postgresql")):
        seconds[tag] = engine.build(tag, engine.STANDINS, target, standin_args)
    FIGURES.append("bases: " + ", ".join(f"{k}={v}" for k, v in build_args.items()))
    for tag, took in seconds.items():
        FIGURES.append(f"image {tag}: {engine.image_size_mb(tag):.0f} MB, built in {took:.0f} s")
    return Images(engine.APP_DEV, engine.APP_RUNTIME, engine.NATS_STANDIN, engine.POSTGRES_STANDIN, build_args, seconds)


@dataclass
class TiltPlan:
    """What the Tiltfile does: its helm command, its image (built from the dev target), its resources in order."""

    helm_args: list[str]
    image_ref: str
    resources: list[tuple[str, str, list[str]]]
    restart_command: str


@pytest.fixture(scope="session")
def tilt_plan() -> TiltPlan:
    from tests.deploy.test_deploy_tiltfile import evaluate

    tilt = evaluate()
    [helm_command] = [c for c in tilt.local_calls if c[1] == "template"]
    [(image_ref, _, build)] = tilt.docker_builds
    assert build["target"] == "dev"
    resources = [(kw["new_name"], workload, list(kw.get("resource_deps", []))) for workload, kw in tilt.k8s_resources]
    [restart] = [args[0] for kind, args, _ in tilt.live_update if kind == "run"]
    return TiltPlan(list(helm_command[1:]), image_ref, resources, restart)


def render(helm_args: list[str], extra_sets: tuple[str, ...] = (), with_tests: bool = True) -> list[dict]:
    from tests.deploy.deploy_helpers import require_helm, run_helm

    args = [a for a in helm_args if not (with_tests and a == "--skip-tests")]
    for item in extra_sets:
        args += ["--set", item]
    return [doc for doc in yaml.safe_load_all(run_helm(require_helm(), *args).stdout) if doc]


def image_mapper(images: Images, app_repository: str, app_image: str) -> callable:
    """Chart image -> local image: the app's repository to the image Tilt would build, NATS and PostgreSQL
    to their stand-ins."""
    def image_for(reference: str) -> str:
        repository = reference.split("@")[0].rsplit(":", 1)[0] if ":" in reference.split("/")[-1] else reference
        name = repository.split("/")[-1]
        if repository == app_repository:
            return app_image
        if name == "nats":
            return images.nats
        if name == "postgres":
            return images.postgresql
        raise ValueError(f"the harness has no stand-in for the image {reference}")
    return image_for


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, images: Images, tilt_plan: TiltPlan) -> Iterator[Harness]:
    """The chart as Tilt renders it (kind values + Tilt's overrides, 2 ingest and 2 query replicas) running
    as containers, deployed in the Tiltfile's order with the dev image."""
    objects = render(tilt_plan.helm_args, REPLICA_SETS)
    prefix = f"mdh{os.getpid()}-"
    harness = Harness(objects, network=f"{prefix}net", prefix=prefix, namespace=NAMESPACE,
                      image_for=image_mapper(images, tilt_plan.image_ref, images.dev))
    request.config._md_harness = harness  # type: ignore[attr-defined]
    harness.create_network()
    started = time.monotonic()
    try:
        timings = harness.deploy(tilt_plan.resources)
        FIGURES.append(f"harness: {len(harness.containers())} containers ready in {time.monotonic() - started:.0f} s "
                       "(" + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + ")")
        yield harness
    finally:
        if not os.environ.get("MD_KEEP_CONTAINERS"):
            harness.teardown()
        request.config._md_harness = None  # type: ignore[attr-defined]
