"""The Helm chart, proved by the real helm binary: lint, render, schema strictness, fail messages,
and the structure every scenario must have (hardening, probes, NetworkPolicies, hooks)."""

from __future__ import annotations

import json
import re

import pytest

from .deploy_helpers import (API_KEY_SET, CHART, NAMESPACE, SCENARIOS, find, load_yaml, pod_spec,
                            run_helm)

APP_COMPONENTS = ("ingest", "aggregator", "query", "edge", "feeder")


def fullname(scenario: str) -> str:
    release = SCENARIOS[scenario].release
    return release if "marketdata" in release else f"{release}-marketdata"


# --- helm lint / template --------------------------------------------------------------------

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_strict(helm, scenario):
    s = SCENARIOS[scenario]
    result = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *s.args(), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_template_renders(rendered, scenario):
    docs = rendered(scenario)
    assert docs, "nothing rendered"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']} {doc['metadata']['name']}"
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "duplicate objects"


def test_ci_values_cover_the_required_cases():
    ci = {p.name for p in (CHART / "ci").glob("*-values.yaml")}
    assert {"external-db-values.yaml", "production-values.yaml"} <= ci
    assert (CHART / "values-kind.yaml").is_file()


# --- values.schema.json ------------------------------------------------------------------------

def _walk(schema, path="#"):
    yield path, schema
    if isinstance(schema, dict):
        for key, value in schema.items():
            if isinstance(value, dict):
                yield from _walk(value, f"{path}/{key}")
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    yield from _walk(item, f"{path}/{key}/{i}")


def test_schema_is_strict_at_every_level():
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = [(p, s) for p, s in _walk(schema) if isinstance(s, dict) and "properties" in s]
    assert len(objects) > 20
    loose = [p for p, s in objects if s.get("additionalProperties") is not False]
    assert not loose, f"objects without additionalProperties: false: {loose}"


def test_schema_describes_every_default_value():
    """Every key of values.yaml is declared in the schema (so nothing is accepted by accident)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = load_yaml(CHART / "values.yaml")

    def check(value, node, path):
        if isinstance(value, dict) and "properties" in node:
            for key, sub in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                check(sub, node["properties"][key], f"{path}.{key}")

    check(values, schema, "values")


@pytest.mark.parametrize("override, needle", [
    ("services.ingest.replicas=3", "replicas"),                  # misspelt replicaCount
    ("postgresql.enabeld=false", "enabeld"),                     # misspelt key
    ("imagee.tag=1.0", "imagee"),                                # misspelt top-level key
    ("networkPolicy.dns.namespce=kube-system", "namespce"),      # deep level
    ("services.ingest.protocol=http2", "protocol"),              # not an allowed value
    ("config.logFormat=xml", "logFormat"),
    ("nats.replicas=2", "replicas"),                             # a cluster needs a majority
    ("nats.jetstream.maxFile=lots", "maxFile"),                  # not a quantity
    ("services.ingest.apiKeys=all", "apiKeys"),
    ("gateway.http.requestTimeout=forever", "requestTimeout"),
    ("keda.lagThreshold=0", "lagThreshold"),
    ("networkPolicy.extraIngress[0].form[0].podSelector.matchLabels.a=b", "form"),
])
def test_schema_rejects_misspelt_or_invalid_values(helm, override, needle):
    result = run_helm(helm, "template", "md", str(CHART), "--set", API_KEY_SET, "--set", override, check=False)
    assert result.returncode != 0, f"--set {override} was accepted"
    assert "schema" in result.stderr and needle in result.stderr, result.stderr


def test_the_chart_has_no_default_api_key(helm):
    """As ingest refuses to start without API_KEYS, the chart refuses to render without keys: no release goes
    out accepting a key printed in the README."""
    result = run_helm(helm, "template", "md", str(CHART), check=False)
    assert result.returncode != 0
    assert "auth.apiKeys is empty and auth.existingSecret is not set" in result.stderr, result.stderr
    renders = {"auth.apiKeys= ": False, "auth.existingSecret=keys": True, "auth.apiKeys=k1": True}
    for value, expected in renders.items():
        rendered = run_helm(helm, "template", "md", str(CHART), "--set", value, check=False)
        assert (rendered.returncode == 0) is expected, (value, rendered.stderr)


def test_disabling_postgresql_without_external_database_fails_clearly(helm):
    result = run_helm(helm, "template", "md", str(CHART), "--set", API_KEY_SET, "--set", "postgresql.enabled=false",
                      check=False)
    assert result.returncode != 0
    assert "postgresql.enabled is false but no external database is configured" in result.stderr
    assert "externalDatabase.url" in result.stderr and "externalDatabase.existingSecret" in result.stderr


def test_disabling_nats_without_external_nats_fails_clearly(helm):
    result = run_helm(helm, "template", "md", str(CHART), "--set", API_KEY_SET, "--set", "nats.enabled=false",
                      check=False)
    assert result.returncode != 0
    assert "nats.enabled is false but no external NATS is configured" in result.stderr


def test_external_database_with_in_chart_postgresql_is_refused(helm):
    result = run_helm(helm, "template", "md", str(CHART), "--set", API_KEY_SET, "--set",
                      "externalDatabase.url=postgresql://u:p@db:5432/md", check=False)
    assert result.returncode != 0 and "set postgresql.enabled=false" in result.stderr


# --- one template loop, labels, image ----------------------------------------------------------

def test_services_come_from_one_template_loop():
    values = load_yaml(CHART / "values.yaml")
    assert set(values["services"]) == set(APP_COMPONENTS)
    templates = [p.name for p in (CHART / "templates").glob("*.yaml")]
    for component in APP_COMPONENTS:
        assert not any(component in name for name in templates), f"per-service template file for {component}"
    loop = (CHART / "templates" / "services.yaml").read_text()
    assert "range $component, $svc := .Values.services" in loop
    for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert f"kind: {kind}" in loop


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_standard_labels_everywhere(rendered, scenario):
    for doc in rendered(scenario):
        labels = doc["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "helm.sh/chart"):
            assert key in labels, f"{doc['kind']} {doc['metadata']['name']} lacks {key}"


def test_image_defaults_to_app_version(rendered):
    chart = load_yaml(CHART / "Chart.yaml")
    images = {c["image"] for d in rendered("default") if pod_spec(d)
              for c in pod_spec(d)["containers"] if not c["image"].startswith(("nats:", "postgres:"))}
    assert images == {f"marketdata:{chart['appVersion']}"}


def test_image_digest_is_used_when_given(rendered):
    images = {c["image"] for d in rendered("production") if pod_spec(d) for c in pod_spec(d)["containers"]}
    assert all("@sha256:" in image for image in images), images


# --- per service: Deployment, Service, SA, PDB, HPA --------------------------------------------

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_service_has_its_objects(rendered, scenario):
    docs = rendered(scenario)
    values = load_yaml(CHART / "values.yaml")
    enabled = [c for c in APP_COMPONENTS if values["services"][c]["enabled"]]
    if scenario == "production":
        enabled.remove("feeder")
        assert not find(docs, "Deployment", f"{fullname(scenario)}-feeder")
    for component in enabled:
        name = f"{fullname(scenario)}-{component}"
        assert find(docs, "Deployment", name), name
        assert find(docs, "Service", name), name
        assert find(docs, "PodDisruptionBudget", name), name
        [sa] = find(docs, "ServiceAccount", name)
        assert sa["automountServiceAccountToken"] is False
        [deployment] = find(docs, "Deployment", name)
        spec = deployment["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == name
        assert spec["automountServiceAccountToken"] is False
        container = spec["containers"][0]
        assert container["args"] == [component]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        grace = int(load_yaml(CHART / "values.yaml")["config"]["shutdownGraceSeconds"])
        assert spec["terminationGracePeriodSeconds"] > grace


def test_hpa_is_optional(rendered):
    assert not find(rendered("default"), "HorizontalPodAutoscaler")
    hpas = find(rendered("production"), "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == {
        "md-marketdata-ingest", "md-marketdata-query", "md-marketdata-aggregator", "md-marketdata-edge"}
    for hpa in hpas:
        [deployment] = find(rendered("production"), "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in deployment["spec"], "the HPA owns replicas"


def test_service_app_protocols(rendered):
    docs = rendered("default")
    expected = {"ingest": "kubernetes.io/h2c", "query": "kubernetes.io/h2c",
                "aggregator": "kubernetes.io/h2c", "edge": "http"}
    for component, protocol in expected.items():
        [svc] = find(docs, "Service", f"md-marketdata-{component}")
        main = svc["spec"]["ports"][0]
        assert main["appProtocol"] in ({"grpc", "kubernetes.io/h2c"} if protocol != "http" else {"http"})
        assert main["appProtocol"] == protocol


# --- hardening ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["default", "kind", "external-db", "production"])
def test_every_pod_is_hardened(rendered, scenario):
    for doc in rendered(scenario):
        spec = pod_spec(doc)
        if spec is None:
            continue
        what = f"{doc['kind']} {doc['metadata']['name']}"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 10000, what
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", what
        assert spec["automountServiceAccountToken"] is False, what
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, what
            assert sc["allowPrivilegeEscalation"] is False, what
            assert sc["capabilities"]["drop"] == ["ALL"], what
            assert sc.get("privileged", False) is False, what
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{what}: no writable /tmp"
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], what


def test_only_tilt_relaxes_the_read_only_root_filesystem(rendered):
    relaxed = [c for d in rendered("tilt") if pod_spec(d) for c in pod_spec(d)["containers"]
               if c["securityContext"]["readOnlyRootFilesystem"] is False]
    assert relaxed, "the Tilt scenario sets readOnlyRootFilesystem=false for live update"


# --- probes ------------------------------------------------------------------------------------

def test_grpc_services_have_native_grpc_probes(rendered):
    """Startup and liveness ask whether the process serves; readiness asks for its dependencies."""
    from marketdata.common.grpc_server import LIVENESS_SERVICE

    values = load_yaml(CHART / "values.yaml")
    for component in ("ingest", "query", "aggregator"):
        [deployment] = find(rendered("default"), "Deployment", f"md-marketdata-{component}")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == values["services"][component]["port"]
        assert container["readinessProbe"]["grpc"]["service"] == values["services"][component]["healthService"]
        assert container["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
        assert container["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE


def test_probe_service_names_are_registered_by_the_servers(rendered):
    """The health service names the probes ask for are the services the servers register."""
    from marketdata.v1 import aggregator_pb2, ingest_pb2, query_pb2

    registered = {
        "ingest": ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
        "query": query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name,
        "aggregator": aggregator_pb2.DESCRIPTOR.services_by_name["AggregatorService"].full_name,
    }
    values = load_yaml(CHART / "values.yaml")
    for component, full_name in registered.items():
        assert values["services"][component]["healthService"] == full_name
    assert {values["services"][c]["port"] for c in registered} == {50051, 50052, 50053}
    for scenario in SCENARIOS:
        for component, full_name in registered.items():
            name = f"{fullname(scenario)}-{component}"
            [deployment] = find(rendered(scenario), "Deployment", name)
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            assert container["readinessProbe"]["grpc"]["service"] == full_name, f"{scenario} {component}"


def test_edge_and_feeder_have_http_probes(rendered):
    docs = rendered("default")
    [edge] = find(docs, "Deployment", "md-marketdata-edge")
    container = edge["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/health/readiness"
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/v1/health/liveness"
    assert container["startupProbe"]["httpGet"]["path"] == "/api/v1/health/liveness"
    [feeder] = find(docs, "Deployment", "md-marketdata-feeder")
    container = feeder["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]


# --- environment contract ----------------------------------------------------------------------

def test_environment_contract(rendered):
    docs = rendered("default")
    [config] = find(docs, "ConfigMap", "md-marketdata")
    data = config["data"]
    assert data["BIND_HOST"] == "0.0.0.0" and data["METRICS_PORT"] == "9090"
    assert data["INGEST_ADDR"] == "md-marketdata-ingest-headless:50051"
    assert data["QUERY_ADDR"] == "md-marketdata-query-headless:50052"
    assert data["AGGREGATOR_ADDR"] == "md-marketdata-aggregator-headless:50053"
    for key in ("INGEST_PORT", "QUERY_PORT", "AGGREGATOR_PORT", "EDGE_PORT", "MD_STREAM", "MD_SUBJECT_PREFIX",
                "LOG_FORMAT", "LOG_LEVEL", "SHUTDOWN_GRACE_SECONDS"):
        assert key in data
    for component in ("ingest", "aggregator", "query"):
        [deployment] = find(docs, "Deployment", f"md-marketdata-{component}")
        env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert {"DATABASE_URL", "PGPASSWORD", "NATS_URL", "DB_POOL_SIZE"} <= env, component
    [feeder] = find(docs, "Deployment", "md-marketdata-feeder")
    env = {e["name"]: e for e in feeder["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "FEEDER_RATE" in env and "FEEDER_SYMBOLS" in env and "FEEDER_API_KEY" in env
    assert "DATABASE_URL" not in env, "the feeder does not talk to PostgreSQL"



@pytest.mark.parametrize("scenario", ["default", "kind", "production"])
def test_grpc_clients_dial_headless_services(rendered, scenario):
    """Clients balance over replicas only if the name they dial resolves to every pod: each gRPC
    component has a headless Service selecting its pods, and the *_ADDR settings name it."""
    docs = rendered(scenario)
    [config] = [d for d in find(docs, "ConfigMap") if "INGEST_ADDR" in d.get("data", {})
                and "helm.sh/hook" not in (d["metadata"].get("annotations") or {})]
    for component, key in (("ingest", "INGEST_ADDR"), ("query", "QUERY_ADDR"), ("aggregator", "AGGREGATOR_ADDR")):
        host, port = config["data"][key].rsplit(":", 1)
        [service] = find(docs, "Service", host)
        assert service["spec"]["clusterIP"] == "None", component
        assert [p["port"] for p in service["spec"]["ports"]] == [int(port)]
        [deployment] = [d for d in find(docs, "Deployment") if d["metadata"]["name"].endswith(f"-{component}")]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), component
    assert int(config["data"]["GRPC_MAX_CONNECTION_AGE_SECONDS"]) >= 1
    assert int(config["data"]["GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS"]) >= 0


def test_kind_values_age_connections_within_half_a_minute(rendered):
    [config] = [d for d in find(rendered("kind"), "ConfigMap") if "INGEST_ADDR" in d.get("data", {})]
    assert config["data"]["GRPC_MAX_CONNECTION_AGE_SECONDS"] == "30"


# --- NATS and PostgreSQL -----------------------------------------------------------------------

def test_in_chart_nats_and_postgresql(rendered):
    docs = rendered("default")
    [nats] = find(docs, "StatefulSet", "md-marketdata-nats")
    [pg] = find(docs, "StatefulSet", "md-marketdata-postgresql")
    for sts, image in ((nats, "nats:"), (pg, "postgres:")):
        assert sts["spec"]["volumeClaimTemplates"], "persistent volume claim"
        assert sts["spec"]["template"]["spec"]["containers"][0]["image"].startswith(image)
    nats_container = nats["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert nats_container[probe]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
        assert nats_container[probe]["httpGet"]["port"] == "monitor"
    assert {"name": "monitor", "containerPort": 8222, "protocol": "TCP"} in nats_container["ports"]
    [nats_conf] = find(docs, "ConfigMap", "md-marketdata-nats")
    assert "jetstream" in nats_conf["data"]["nats.conf"]
    pg_container = pg["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "pg_isready" in " ".join(pg_container[probe]["exec"]["command"])


def test_external_services_replace_the_in_chart_ones(rendered):
    docs = rendered("production")
    assert not find(docs, "StatefulSet")
    [deployment] = find(docs, "Deployment", "md-marketdata-ingest")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "marketdata-database", "key": "DATABASE_URL"}
    assert env["NATS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "marketdata-nats", "key": "NATS_URL"}
    assert env["API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "marketdata-api-keys"


# --- migrations --------------------------------------------------------------------------------

HOOK = "helm.sh/hook"
WEIGHT = "helm.sh/hook-weight"


def _annotations(doc):
    return doc["metadata"].get("annotations") or {}


def test_in_chart_database_migrates_in_a_normal_job(rendered):
    docs = rendered("default")
    [job] = find(docs, "Job")
    assert HOOK not in _annotations(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate", "--wait", "300"]
    hooks = [d for d in docs if HOOK in _annotations(d) and _annotations(d)[HOOK] != "test"]
    assert not hooks, "no install hooks with the in-chart database"


def test_external_database_migrates_in_a_pre_install_hook(rendered):
    docs = rendered("external-db")
    [job] = find(docs, "Job")
    annotations = _annotations(job)
    assert annotations[HOOK] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    container = spec["containers"][0]
    # Everything the hook Job reads is itself a hook of a lower weight.
    reads = {("ServiceAccount", spec["serviceAccountName"])}
    reads |= {("ConfigMap", src["configMapRef"]["name"]) for src in container.get("envFrom", [])}
    reads |= {("Secret", e["valueFrom"]["secretKeyRef"]["name"]) for e in container["env"]
              if "secretKeyRef" in e.get("valueFrom", {})}
    assert len(reads) == 3
    for kind, name in reads:
        [obj] = find(docs, kind, name)
        assert _annotations(obj)[HOOK] == "pre-install,pre-upgrade", (kind, name)
        assert int(_annotations(obj)[WEIGHT]) < int(annotations[WEIGHT]), (kind, name)


def test_existing_secret_database_hook_reads_that_secret(rendered):
    docs = rendered("production")
    [job] = find(docs, "Job")
    assert _annotations(job)[HOOK] == "pre-install,pre-upgrade"
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "marketdata-database"
    assert not [d for d in find(docs, "Secret") if HOOK in _annotations(d)], "no copy of an existing Secret"


# --- NetworkPolicies ---------------------------------------------------------------------------

def _policies(docs):
    return {d["metadata"]["name"]: d["spec"] for d in find(docs, "NetworkPolicy")}


def _peer_components(rule):
    return {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
            for p in rule.get("from", rule.get("to", [])) if "podSelector" in p}


def _ports(rule):
    return {p["port"] for p in rule.get("ports", [])}


def test_default_deny(rendered):
    policies = _policies(rendered("default"))
    deny = policies["md-marketdata-default-deny"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    assert deny["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "md"


def test_only_the_edge_takes_outside_traffic(rendered):
    policies = _policies(rendered("default"))
    for name, spec in policies.items():
        for rule in spec.get("ingress", []):
            if "from" not in rule:
                assert name == "md-marketdata-edge", f"{name} accepts traffic from anywhere"
                assert _ports(rule) == {8080}


def test_allowed_flows(rendered):
    policies = _policies(rendered("default"))

    def ingress_from(component):
        return {c for rule in policies[f"md-marketdata-{component}"].get("ingress", [])
                for c in _peer_components(rule)}

    def egress_to(component):
        return {(c, port) for rule in policies[f"md-marketdata-{component}"].get("egress", [])
                for c in _peer_components(rule) for port in _ports(rule) if port != 53}

    assert ingress_from("ingest") == {"edge", "feeder", "test"}
    assert ingress_from("query") == {"edge", "test"}
    assert ingress_from("aggregator") == {"edge", "test"}
    assert ingress_from("feeder") == set()
    assert {("ingest", 50051), ("query", 50052)} <= egress_to("edge")
    assert egress_to("feeder") == {("ingest", 50051)}
    for component in ("ingest", "query", "aggregator"):
        assert {("nats", 4222), ("postgresql", 5432)} <= egress_to(component)
    assert egress_to("migrate") == {("postgresql", 5432)}
    assert ingress_from("postgresql") == {"ingest", "query", "aggregator", "migrate"}
    assert {"ingest", "query", "aggregator"} <= ingress_from("nats")
    for name, spec in policies.items():
        if name.endswith("default-deny"):
            continue
        dns = [r for r in spec.get("egress", []) if _ports(r) == {53}]
        if name.endswith(("-nats", "-postgresql")):
            assert spec["egress"] == []
        else:
            assert dns, f"{name} has no DNS egress"
            assert {p["protocol"] for p in dns[0]["ports"]} == {"UDP", "TCP"}


def test_kind_publishes_grpc_ingest_and_query(rendered):
    policies = _policies(rendered("kind"))
    open_ports = {name: _ports(rule) for name, spec in policies.items()
                  for rule in spec.get("ingress", []) if "from" not in rule}
    assert open_ports == {"md-marketdata-edge": {8080}, "md-marketdata-ingest": {50051},
                          "md-marketdata-query": {50052}}


# --- helm test and NOTES -----------------------------------------------------------------------

def test_helm_test_pod_checks_every_grpc_service_and_rest(rendered):
    [pod] = find(rendered("default"), "Pod")
    assert _annotations(pod)[HOOK] == "test"
    container = pod["spec"]["containers"][0]
    assert container["command"][:2] == ["python", "-c"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    checks = dict(item.split("=") for item in env["GRPC_CHECKS"].split(","))
    assert checks == {
        "md-marketdata-ingest-headless:50051": "marketdata.v1.IngestService",
        "md-marketdata-query-headless:50052": "marketdata.v1.QueryService",
        "md-marketdata-aggregator-headless:50053": "marketdata.v1.AggregatorService",
    }
    assert env["REST_URL"] == "http://md-marketdata-edge:8080/api/v1/symbols"
    compile(container["command"][2], "helm-test.py", "exec")


def test_helm_test_script_reports_unreachable_services(tmp_path):
    """Runs the test pod's script for real against a closed port: it must fail, not hang."""
    import os
    import subprocess
    import sys

    script = (CHART / "files" / "helm-test.py").read_text()
    env = {**os.environ, "GRPC_CHECKS": "127.0.0.1:9=marketdata.v1.IngestService", "REST_URL": "http://127.0.0.1:9/x",
           "RETRY_SECONDS": "0"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL grpc 127.0.0.1:9 'marketdata.v1.IngestService'" in result.stdout


def test_notes_show_grpcurl_and_curl_for_kind(helm):
    result = run_helm(helm, "install", "md", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                      "--values", str(CHART / "values-kind.yaml"))
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "grpcurl -plaintext localhost:50052 list" in notes
    assert "grpcurl -plaintext localhost:50051 list" in notes
    assert "curl -s http://localhost:8080/api/v1/symbols" in notes
    assert "helm test md" in notes


def test_no_download_urls_or_registry_hosts_in_the_chart():
    hosts = re.compile(r"(docker\.io|ghcr\.io|quay\.io|gcr\.io|registry\.k8s\.io|ecr\.|azurecr\.io)")
    for path in CHART.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not hosts.search(text), path
            for url in re.findall(r"https?://[^\s\"'`)]+", text):
                assert re.match(r"https?://(localhost|127\.0\.0\.1|%s|\{\{)", url), f"{path}: {url}"
