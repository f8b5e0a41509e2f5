"""Runs a rendered Helm chart as Docker containers, the way a kubelet would run its pods, on one machine
without Kubernetes.

Input: the objects of `helm template` (what the Tiltfile renders) and the order of Tilt's resources.
Every Deployment / StatefulSet replica and every Job becomes a container on one Docker network:
- env from `env` (values, Secret and ConfigMap keys, the pod's name) and `envFrom`; `command`/`args`;
- the securityContext: user and group (container over pod), fsGroup as a supplementary group,
  read-only root filesystem, dropped/added capabilities, no privilege escalation; memory limits;
- volumes: emptyDir and volumeClaimTemplates as tmpfs (world-writable like an emptyDir), ConfigMaps and
  Secrets as read-only files;
- Services: every Service whose selector matches a pod's labels is a network alias of its container, so
  Docker's DNS answers a Service name with every replica, exactly what a headless Service's DNS does;
- readiness probes (gRPC health of the named service, HTTP GET, exec, TCP) run from the host like the
  kubelet's; a resource starts once the resources it depends on (Tilt's resource_deps) are ready, and a
  Job runs to completion (restarted on failure up to its backoffLimit) before its dependants start.
Not emulated: scheduling and node placement, kube-proxy's virtual IPs (a ClusterIP Service resolves to
the pods themselves, and a Service alias exists while a container runs, ready or not), NetworkPolicy
enforcement, CPU limits, liveness/startup probe restarts, preStop hooks, rolling updates, HPA, persistent volumes
(tmpfs: data lives as long as the container).
"""

from __future__ import annotations

import base64
import socket
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .engine import Container, docker

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
JOB_TIMEOUT_SECONDS = 240
READY_TIMEOUT_SECONDS = 180


def quantity_bytes(value: str | int) -> int:
    """A Kubernetes memory quantity (64Mi, 1G, 512M) in bytes."""
    text = str(value)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


def matches(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass
class Workload:
    kind: str
    name: str
    replicas: int
    template: dict
    claims: list[dict] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return self.template["metadata"].get("labels") or {}

    @property
    def spec(self) -> dict:
        return self.template["spec"]


@dataclass
class Pod:
    """One replica: its container, and how the harness reaches it."""

    workload: Workload
    name: str
    container: Container
    ip: str = ""

    @property
    def spec(self) -> dict:
        return self.workload.spec


class Harness:
    """The rendered objects, and the containers run from them on `network`."""

    def __init__(self, objects: Iterable[dict], *, network: str, prefix: str, namespace: str,
                 image_for: Callable[[str], str]) -> None:
        self.network = network
        self.prefix = prefix
        self.namespace = namespace
        self.image_for = image_for
        self.objects = [o for o in objects if o]
        self.config_maps = {o["metadata"]["name"]: o.get("data") or {} for o in self.objects if o["kind"] == "ConfigMap"}
        self.secrets = {o["metadata"]["name"]: {**{k: base64.b64decode(v).decode() for k, v in (o.get("data") or {}).items()},
                                                **(o.get("stringData") or {})}
                        for o in self.objects if o["kind"] == "Secret"}
        self.services = [o for o in self.objects if o["kind"] == "Service"]
        self.workloads: dict[str, Workload] = {}
        self.test_pods: list[dict] = []
        for o in self.objects:
            name = o["metadata"]["name"]
            if o["kind"] in WORKLOAD_KINDS:
                replicas = 1 if o["kind"] == "Job" else int(o["spec"].get("replicas", 1))
                self.workloads[name] = Workload(o["kind"], name, replicas, o["spec"]["template"],
                                                o["spec"].get("volumeClaimTemplates") or [])
            elif o["kind"] == "Pod" and (o["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test":
                self.test_pods.append(o)
        self.pods: dict[str, list[Pod]] = {name: [] for name in self.workloads}
        self.extra: list[Container] = []
        self._files = Path(tempfile.mkdtemp(prefix=f"{prefix}files-"))

    # --- the network ---------------------------------------------------------------------------
    def create_network(self) -> None:
        docker("network", "rm", self.network, check=False)
        docker("network", "create", self.network)

    def containers(self) -> list[Container]:
        return [pod.container for pods in self.pods.values() for pod in pods] + self.extra

    def teardown(self) -> None:
        for container in self.containers():
            container.remove()
        docker("network", "rm", self.network, check=False)

    # --- a pod's container ---------------------------------------------------------------------
    def aliases(self, labels: dict[str, str]) -> list[str]:
        names = []
        for service in self.services:
            if matches(service["spec"].get("selector"), labels):
                name = service["metadata"]["name"]
                names += [name, f"{name}.{self.namespace}", f"{name}.{self.namespace}.svc",
                          f"{name}.{self.namespace}.svc.cluster.local"]
        return names

    def _env(self, container: dict, pod_name: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                ref, store = source["configMapRef"], self.config_maps
            else:
                ref, store = source["secretRef"], self.secrets
            if ref["name"] in store:
                env.update({source.get("prefix", "") + k: v for k, v in store[ref["name"]].items()})
            elif not ref.get("optional"):
                raise ValueError(f"{pod_name}: envFrom names {ref['name']}, which the chart does not render")
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.name": pod_name, "metadata.namespace": self.namespace}[path]
                continue
            ref, store = ((source["secretKeyRef"], self.secrets) if "secretKeyRef" in source
                          else (source["configMapKeyRef"], self.config_maps))
            value = store.get(ref["name"], {}).get(ref["key"])
            if value is not None:
                env[item["name"]] = value
            elif not ref.get("optional"):
                raise ValueError(f"{pod_name}: {item['name']} comes from {ref['name']}/{ref['key']}, which does not exist")
        return env

    def _volume_args(self, workload: Workload, container: dict, pod_name: str) -> list[str]:
        volumes = {v["name"]: v for v in workload.spec.get("volumes") or []}
        volumes.update({c["metadata"]["name"]: {"name": c["metadata"]["name"], "claim": c} for c in workload.claims})
        args: list[str] = []
        for mount in container.get("volumeMounts") or []:
            if mount.get("subPath"):
                raise ValueError(f"{pod_name}: subPath mounts are not emulated")
            volume = volumes[mount["name"]]
            path = mount["mountPath"]
            if "emptyDir" in volume or "claim" in volume:
                limit = (volume.get("emptyDir") or {}).get("sizeLimit")
                if "claim" in volume:
                    limit = volume["claim"]["spec"]["resources"]["requests"]["storage"]
                size = f",size={quantity_bytes(limit)}" if limit else ""
                args += ["--tmpfs", f"{path}:rw,exec,mode=0777{size}"]
            elif "configMap" in volume or "secret" in volume:
                data = (self.config_maps.get(volume["configMap"]["name"]) if "configMap" in volume
                        else self.secrets.get(volume["secret"]["secretName"]))
                if data is None:
                    raise ValueError(f"{pod_name}: volume {mount['name']} names an object the chart does not render")
                directory = self._files / pod_name / mount["name"]
                directory.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (directory / key).write_text(value)
                    (directory / key).chmod(0o644)
                directory.chmod(0o755)
                args += ["-v", f"{directory}:{path}:ro"]
            else:
                raise ValueError(f"{pod_name}: volume {mount['name']} is of a kind the harness does not emulate")
        return args

    def run_args(self, workload: Workload, pod_name: str, *, image: str | None = None,
                 service_aliases: bool = True) -> list[str]:
        """`docker run` arguments for the pod's (single) container, as the kubelet would run it."""
        [container] = workload.spec["containers"]
        pod_security = workload.spec.get("securityContext") or {}
        security = {**pod_security, **(container.get("securityContext") or {})}
        args = ["run", "-d", "--name", self.prefix + pod_name, "--hostname", pod_name, "--network", self.network,
                "--label", f"md-harness={self.prefix}"]
        if service_aliases:
            for alias in self.aliases(workload.labels):
                args += ["--network-alias", alias]
        user = security.get("runAsUser")
        if user is not None:
            args += ["--user", f"{user}:{security.get('runAsGroup', user)}"]
        elif security.get("runAsNonRoot"):
            raise ValueError(f"{pod_name}: runAsNonRoot without runAsUser; the kubelet would check the image's user")
        if "fsGroup" in pod_security:
            args += ["--group-add", str(pod_security["fsGroup"])]
        if security.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if security.get("privileged"):
            raise ValueError(f"{pod_name}: privileged containers are not run")
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        capabilities = security.get("capabilities") or {}
        for cap in capabilities.get("drop") or []:
            args += ["--cap-drop", cap]
        for cap in capabilities.get("add") or []:
            args += ["--cap-add", cap]
        memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if memory:
            args += ["--memory", str(quantity_bytes(memory))]
        restart = workload.spec.get("restartPolicy", "Always")
        if restart == "Always":
            args += ["--restart", "unless-stopped"]
        elif restart == "OnFailure":
            args += ["--restart", f"on-failure:{self.backoff_limit(workload)}"]
        grace = workload.spec.get("terminationGracePeriodSeconds")
        if grace is not None:
            args += ["--stop-timeout", str(grace)]
        for key, value in self._env(container, pod_name).items():
            args += ["-e", f"{key}={value}"]
        args += self._volume_args(workload, container, pod_name)
        command = container.get("command") or []
        if command:
            args += ["--entrypoint", command[0]]
        args.append(image or self.image_for(container["image"]))
        args += [*command[1:], *(str(a) for a in container.get("args") or [])]
        return args

    def backoff_limit(self, workload: Workload) -> int:
        for o in self.objects:
            if o["kind"] == "Job" and o["metadata"]["name"] == workload.name:
                return int(o["spec"].get("backoffLimit", 6))
        return 6

    def start_pod(self, workload: Workload, *, image: str | None = None, suffix: str | None = None,
                  service_aliases: bool = True) -> Pod:
        index = len(self.pods[workload.name])
        pod_name = workload.name if workload.kind == "Job" else f"{workload.name}-{suffix or index}"
        docker(*self.run_args(workload, pod_name, image=image, service_aliases=service_aliases), timeout=120)
        pod = Pod(workload, pod_name, Container(self.prefix + pod_name))
        pod.ip = pod.container.ip(self.network)
        if service_aliases:
            self.pods[workload.name].append(pod)
        else:
            self.extra.append(pod.container)
        return pod

    # --- probes ----------------------------------------------------------------------------------
    def probe_once(self, pod: Pod, probe: dict) -> str | None:
        """None when the probe passes, else what failed."""
        [container] = pod.spec["containers"]
        timeout = float(probe.get("timeoutSeconds", 1)) + 1

        def port_number(port: int | str) -> int:
            if isinstance(port, int) or str(port).isdigit():
                return int(port)
            for item in container.get("ports") or []:
                if item.get("name") == port:
                    return int(item["containerPort"])
            raise ValueError(f"{pod.name}: probe port {port!r} is not a named container port")

        try:
            if "grpc" in probe:
                target = f"{pod.ip}:{port_number(probe['grpc']['port'])}"
                with grpc.insecure_channel(target) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                return None if status == "SERVING" else f"gRPC health {status}"
            if "httpGet" in probe:
                get = probe["httpGet"]
                url = f"http://{pod.ip}:{port_number(get['port'])}{get.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as reply:
                    return None if 200 <= reply.status < 400 else f"GET {url}: {reply.status}"
            if "exec" in probe:
                result = pod.container.exec(*probe["exec"]["command"], timeout=timeout + 5)
                return None if result.returncode == 0 else f"exec exited {result.returncode}: {result.stdout}{result.stderr}"
            if "tcpSocket" in probe:
                with socket.create_connection((pod.ip, port_number(probe["tcpSocket"]["port"])), timeout=timeout):
                    return None
        except (grpc.RpcError, OSError, ValueError) as error:
            return f"{type(error).__name__}: {error}"
        raise ValueError(f"{pod.name}: a probe of a kind the harness does not run: {probe}")

    def wait_ready(self, pod: Pod, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Runs the readiness probe (every second) until it passes; the seconds it took."""
        [container] = pod.spec["containers"]
        probe = container.get("readinessProbe")
        started = time.monotonic()
        last = "not probed yet"
        while time.monotonic() - started < timeout:
            state = pod.container.state()
            if state.get("Status") == "exited" and state.get("Restarting") is False and not state.get("Running"):
                if pod.workload.kind != "Job":
                    raise pod.container.fail(f"exited with code {state.get('ExitCode')} before becoming ready")
            if probe is None:
                if state.get("Running"):
                    return time.monotonic() - started
            else:
                last = self.probe_once(pod, probe) or ""
                if not last:
                    return time.monotonic() - started
            time.sleep(1)
        raise pod.container.fail(f"not ready after {timeout:.0f} s: last readiness probe: {last}")

    # --- deploying ---------------------------------------------------------------------------------
    def run_job(self, workload: Workload, *, image: str | None = None, timeout: float = JOB_TIMEOUT_SECONDS) -> Pod:
        pod = self.start_pod(workload, image=image)
        deadline = min(timeout, float(workload.spec.get("activeDeadlineSeconds", timeout)))
        code = pod.container.wait(deadline)
        if code != 0:
            raise pod.container.fail(f"Job {workload.name} failed: exit code {code}")
        return pod

    def start_workload(self, workload: Workload) -> list[Pod]:
        if workload.kind == "Job":
            return [self.run_job(workload)]
        return [self.start_pod(workload) for _ in range(workload.replicas)]

    def deploy(self, resources: list[tuple[str, str, list[str]]]) -> dict[str, float]:
        """Deploys Tilt's resources [(resource name, workload name or "", resource_deps)]: a resource starts
        once every resource it depends on is ready (a Job: completed); seconds from the start per resource."""
        workload_of = {name: workload for name, workload, _ in resources}
        deps = {name: set(resource_deps) for name, _, resource_deps in resources}
        done: set[str] = set()
        timings: dict[str, float] = {}
        started = time.monotonic()
        while len(done) < len(resources):
            wave = [name for name, _, _ in resources if name not in done and deps[name] <= done]
            if not wave:
                raise ValueError(f"resource dependencies cannot be satisfied: {deps}")
            started_pods = {name: self.start_workload(self.workloads[workload_of[name]])
                            if workload_of[name] else [] for name in wave}
            for name, pods in started_pods.items():
                for pod in pods:
                    if pod.workload.kind != "Job":
                        self.wait_ready(pod)
                timings[name] = time.monotonic() - started
                done.add(name)
        return timings

    def scale(self, workload_name: str, replicas: int) -> list[Pod]:
        """Adds replicas (what `kubectl scale` or the HPA does); the new pods, once ready."""
        workload = self.workloads[workload_name]
        new = [self.start_pod(workload) for _ in range(replicas - len(self.pods[workload_name]))]
        for pod in new:
            self.wait_ready(pod)
        return new

    def run_test_pods(self, timeout: float = 180) -> list[tuple[str, int, str]]:
        """`helm test`: every test hook Pod run to completion; [(name, exit code, logs)]."""
        results = []
        for pod in self.test_pods:
            name = pod["metadata"]["name"]
            workload = Workload("Pod", name, 1, {"metadata": pod["metadata"], "spec": pod["spec"]})
            docker(*self.run_args(workload, name), timeout=120)
            container = Container(self.prefix + name)
            self.extra.append(container)
            code = container.wait(timeout)
            results.append((name, code, container.logs(100)))
        return results

    def diagnose(self) -> str:
        """Every container's state, exit code and restarts (for failure reports)."""
        parts = []
        for container in self.containers():
            state = container.state()
            parts.append(f"{container.name}: {state.get('Status')} exit={state.get('ExitCode')} "
                         f"restarts={container.restart_count()}")
        return "\n".join(parts)


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus counter's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()

