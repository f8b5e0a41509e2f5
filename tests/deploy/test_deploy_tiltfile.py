"""The Tiltfile, evaluated by a real Starlark interpreter (starlark-pyo3) with Tilt's functions
recorded as Python callbacks. `local()` really runs the helm command the Tiltfile gives (and only
helm), so the resources it names are checked against the real rendered chart."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from .deploy_helpers import REPO, TILTFILE, find_helm, missing_tool

KIND_CONTEXT = "kind-marketdata"


@dataclass
class Tilt:
    """What the Tiltfile registered."""

    context: str
    allowed_contexts: list = field(default_factory=list)
    docker_builds: list = field(default_factory=list)
    local_resources: list = field(default_factory=list)
    k8s_yaml: list = field(default_factory=list)
    k8s_resources: list = field(default_factory=list)
    watched: list = field(default_factory=list)
    local_calls: list = field(default_factory=list)
    live_update: list = field(default_factory=list)
    links: list = field(default_factory=list)


def evaluate(context: str = KIND_CONTEXT) -> Tilt:
    try:
        import starlark as sl
    except ImportError:
        missing_tool("starlark-pyo3", "pip install starlark-pyo3 (in the project's dev extras)")
    helm = find_helm()
    if helm is None:
        missing_tool("helm", "run scripts/deploy-tools (installs .tools/bin/helm) or put helm on PATH")

    tilt = Tilt(context=context)
    module = sl.Module()

    def path(p: str) -> Path:
        return (REPO / p) if not os.path.isabs(p) else Path(p)

    def step(kind):
        def make(*args, **kwargs):
            tilt.live_update.append((kind, args, kwargs))
            return kind
        return make

    def local(command, quiet=False, **kwargs):
        tilt.local_calls.append(command)
        assert isinstance(command, list), "local() with an argument list (no shell)"
        assert Path(command[0]).name == "helm" and command[1] == "template", f"unexpected local(): {command}"
        real = [helm, *command[1:]]
        result = subprocess.run(real, cwd=REPO, capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr}")
        return result.stdout

    def decode_yaml_stream(text):
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def link(url, name=None):
        tilt.links.append((url, name))
        return url

    callbacks = {
        "allow_k8s_contexts": lambda contexts: tilt.allowed_contexts.extend(
            [contexts] if isinstance(contexts, str) else contexts),
        "k8s_context": lambda: tilt.context,
        "_exists": lambda p: path(p).exists(),
        "_getenv": lambda name, default=None: os.environ.get(name, default),
        "local_resource": lambda name, **kw: tilt.local_resources.append((name, kw)),
        "docker_build": lambda ref, context, **kw: tilt.docker_builds.append((ref, context, kw)),
        "fall_back_on": step("fall_back_on"),
        "sync": step("sync"),
        "run": step("run"),
        "watch_file": lambda p: tilt.watched.append(p),
        "local": local,
        "decode_yaml_stream": decode_yaml_stream,
        "blob": lambda text: text,
        "k8s_yaml": lambda text: tilt.k8s_yaml.append(text),
        "k8s_resource": lambda workload="", **kw: tilt.k8s_resources.append((workload, kw)),
        "link": link,
    }
    for name, callback in callbacks.items():
        module.add_callable(name, callback)
    globals_ = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Print])
    dialect = sl.Dialect.extended()
    sl.eval(module, sl.parse("prelude", "os = struct(path=struct(exists=_exists), getenv=_getenv)\n", dialect),
            globals_)
    sl.eval(module, sl.parse("Tiltfile", TILTFILE.read_text(), dialect), globals_)
    return tilt


@pytest.fixture(scope="module")
def tilt() -> Tilt:
    return evaluate()


def rendered_objects(tilt: Tilt) -> list[dict]:
    return [doc for text in tilt.k8s_yaml for doc in yaml.safe_load_all(text) if doc]


def test_refuses_other_contexts():
    import starlark as sl

    with pytest.raises(sl.StarlarkError, match="deploys only to the kind cluster"):
        evaluate(context="prod-cluster")


def test_allows_only_the_kind_context(tilt):
    assert tilt.allowed_contexts == [KIND_CONTEXT]


def test_referenced_files_exist(tilt):
    paths = list(tilt.watched)
    for ref, context, kw in tilt.docker_builds:
        paths += [context, kw.get("dockerfile", "Dockerfile"), *kw.get("only", [])]
    for kind, args, _ in tilt.live_update:
        if kind == "fall_back_on":
            paths += args[0] if isinstance(args[0], list) else [args[0]]
        if kind == "sync":
            paths.append(args[0])
    for _, kw in tilt.local_resources:
        paths += kw.get("deps", [])
    for command in tilt.local_calls:
        paths += [arg for arg in command if arg.startswith("charts/")]
    missing = []
    for p in paths:
        if p in ("web", "migrations") or p.startswith("web/"):
            continue  # the application's own directories, filled by the services work
        if not (REPO / p).exists():
            missing.append(p)
    assert not missing, f"the Tiltfile references missing paths: {missing}"
    assert (REPO / "Dockerfile").is_file() and (REPO / "charts/marketdata/values-kind.yaml").is_file()


def test_image_build_and_live_update(tilt):
    [(ref, context, kw)] = tilt.docker_builds
    assert ref == "marketdata" and context == "."
    assert kw["target"] == "dev"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "AS dev" in dockerfile
    kinds = [kind for kind, _, _ in tilt.live_update]
    assert kinds[0] == "fall_back_on", "fall_back_on steps come first"
    fall_back = tilt.live_update[0][1][0]
    assert "pyproject.toml" in fall_back
    syncs = [args for kind, args, _ in tilt.live_update if kind == "sync"]
    assert ("services", "/app/services") in syncs
    runs = [args[0] for kind, args, _ in tilt.live_update if kind == "run"]
    assert runs and "/tmp/.restart" in runs[0], "restarts the process through the wrapper's trigger file"
    assert "/tmp/.restart" in (REPO / "docker" / "restart-on-change").read_text(), \
        "the dev image's wrapper watches the same file"
    assert "PYTHONPATH=/app/services" in dockerfile
    assert "docker" in kw["only"] and "docker" in fall_back, "a change of the wrapper rebuilds the image"


def test_base_images_come_from_the_environment(monkeypatch):
    """Where the official bases cannot be pulled, MD_PYTHON_IMAGE / MD_NODE_IMAGE reach docker build."""
    monkeypatch.delenv("MD_PYTHON_IMAGE", raising=False)
    monkeypatch.delenv("MD_NODE_IMAGE", raising=False)
    [(_, _, kw)] = evaluate().docker_builds
    assert kw["build_args"] == {}
    monkeypatch.setenv("MD_PYTHON_IMAGE", "local/python:3.11")
    monkeypatch.setenv("MD_NODE_IMAGE", "local/node:20")
    [(_, _, kw)] = evaluate().docker_builds
    assert kw["build_args"] == {"PYTHON_IMAGE": "local/python:3.11", "NODE_IMAGE": "local/node:20"}


def test_codegen_local_resource(tilt):
    [(name, kw)] = [(n, kw) for n, kw in tilt.local_resources if n == "codegen"]
    assert kw["cmd"][-1] == "codegen" and Path(kw["cmd"][0]).name == "marketdata"
    assert any(d.startswith("proto") for d in kw["deps"])


def test_chart_is_rendered_by_real_helm_with_dev_values(tilt):
    [command] = tilt.local_calls
    assert "--values" in command and "charts/marketdata/values-kind.yaml" in command
    assert "--skip-tests" in command
    objects = rendered_objects(tilt)
    hooks = [o for o in objects if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    assert not hooks, "Tilt applies no Helm hooks (ordering is explicit)"


def test_named_resources_exist_in_the_rendered_chart(tilt):
    objects = rendered_objects(tilt)
    workloads = {o["metadata"]["name"] for o in objects
                 if o["kind"] in ("Deployment", "StatefulSet", "Job", "Pod", "DaemonSet")}
    names = set()
    attached = []
    for workload, kw in tilt.k8s_resources:
        if workload:
            assert workload in workloads, f"k8s_resource names unknown workload {workload!r}"
        for selector in kw.get("objects", []):
            # Tilt's object selectors: name[:kind[:namespace]], each a case-insensitive full match.
            parts = selector.split(":")
            matches = [o for o in objects
                       if o["metadata"]["name"].lower() == parts[0].lower()
                       and (len(parts) < 2 or o["kind"].lower() == parts[1].lower())
                       and (len(parts) < 3 or o["metadata"].get("namespace", "").lower() == parts[2].lower())]
            assert len(matches) == 1, f"k8s_resource object {selector!r} matches {len(matches)} rendered objects"
            attached.append(id(matches[0]))
        names.add(kw.get("new_name") or workload)
    assert len(attached) == len(set(attached)), "an object is attached to two resources"
    # Every object ends up in a resource: workloads by name, Services by selector, the rest by objects=.
    loose = [f"{o['kind']} {o['metadata']['name']}" for o in objects
             if o["kind"] not in ("Deployment", "StatefulSet", "Job", "Service") and id(o) not in attached]
    assert not loose, f"objects Tilt would leave uncategorized: {loose}"
    assert {"postgresql", "nats", "migrate", "ingest", "query", "aggregator", "edge", "feeder"} <= names
    every_workload = {w for w, _ in tilt.k8s_resources if w}
    assert workloads == every_workload, "every workload is configured"


def test_port_forwards_are_unique_and_free(tilt):
    from .deploy_helpers import KIND_CONFIG, load_yaml

    local_ports = []
    for _, kw in tilt.k8s_resources:
        for forward in kw.get("port_forwards", []):
            local_ports.append(int(str(forward).split(":")[0]))
    for _, kw in tilt.local_resources:
        for forward in kw.get("port_forwards", []) if isinstance(kw.get("port_forwards"), list) else []:
            local_ports.append(int(str(forward).split(":")[0]))
    assert local_ports, "some port forwards"
    assert len(local_ports) == len(set(local_ports)), f"duplicate local ports: {sorted(local_ports)}"
    host_ports = {m["hostPort"] for node in load_yaml(KIND_CONFIG)["nodes"]
                  for m in node.get("extraPortMappings", [])}
    assert not host_ports & set(local_ports), "a port forward would collide with kind's published ports"


def test_dependencies_follow_the_startup_order_without_cycles(tilt):
    deps = {}
    labels = {}
    for workload, kw in tilt.k8s_resources:
        name = kw.get("new_name") or workload
        deps[name] = list(kw.get("resource_deps", []))
        labels[name] = kw.get("labels", [])
    for name, kw in tilt.local_resources:
        deps[name] = list(kw.get("resource_deps", []))
        labels[name] = kw.get("labels", [])
    for name, wanted in deps.items():
        for dep in wanted:
            assert dep in deps, f"{name} depends on unknown resource {dep!r}"

    def reaches(start, goal, seen=()):
        return any(dep == goal or (dep not in seen and reaches(dep, goal, (*seen, dep))) for dep in deps[start])

    for name in deps:
        assert not reaches(name, name), f"dependency cycle through {name}"
    assert {"postgresql"} <= set(deps["migrate"])
    for service in ("ingest", "query", "aggregator"):
        assert reaches(service, "migrate") and reaches(service, "nats")
    assert reaches("feeder", "ingest") and reaches("edge", "query")
    assert {"infra", "services", "edge"} <= {label for ls in labels.values() for label in ls}
    assert labels["postgresql"] == ["infra"] and labels["nats"] == ["infra"]
    assert labels["ingest"] == ["services"] and labels["edge"] == ["edge"]
