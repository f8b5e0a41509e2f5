"""What a chart that survives production needs, rendered by the real helm: health probes apart, replicated
JetStream within its volume, stable PostgreSQL credentials and a connection budget, CloudNativePG, secret
checksums and per-component keys, graceful rollouts, Gateway API routes, NetworkPolicy room for meshes and
ingress, monitoring and KEDA. Each test fails on the chart before these values existed."""

from __future__ import annotations

import re

import pytest
import yaml

from . import deploy_helpers
from .deploy_helpers import API_KEY_SET, CHART, NAMESPACE, REPO, find, load_yaml, run_helm

APP = ("ingest", "aggregator", "query", "edge", "feeder")
MIB = 1 << 20


def template(helm, *args: str) -> list[dict]:
    return deploy_helpers.template(helm, "--set", API_KEY_SET, *args)


def template_fails(helm, *args: str) -> str:
    return deploy_helpers.template_fails(helm, "--set", API_KEY_SET, *args)


def deployment(docs, component):
    [doc] = find(docs, "Deployment", f"md-marketdata-{component}")
    return doc


def container(docs, component):
    return deployment(docs, component)["spec"]["template"]["spec"]["containers"][0]


def env_of(docs, component) -> dict[str, dict]:
    return {e["name"]: e for e in container(docs, component).get("env", [])}


def config_of(docs) -> dict[str, str]:
    [config] = find(docs, "ConfigMap", "md-marketdata")
    return config["data"]


# --- rollouts and disruptions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["default", "kind", "external-db", "production", "cloudnativepg"])
def test_every_pdb_lets_drains_evict_unhealthy_pods(rendered, scenario):
    pdbs = find(rendered(scenario), "PodDisruptionBudget")
    assert pdbs
    for pdb in pdbs:
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", pdb["metadata"]["name"]


def test_pods_sleep_before_they_drain(rendered):
    values = load_yaml(CHART / "values.yaml")["config"]
    for component in APP:
        spec = deployment(rendered("default"), component)["spec"]["template"]["spec"]
        c = spec["containers"][0]
        assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": values["preStopSleepSeconds"]}}
        assert spec["terminationGracePeriodSeconds"] == (values["preStopSleepSeconds"] + values["shutdownGraceSeconds"]
                                                         + values["terminationGraceExtraSeconds"])


def test_startup_and_liveness_never_ask_for_dependencies(rendered):
    """The edge's liveness is its own route; readiness is the dependency-aware one."""
    c = container(rendered("default"), "edge")
    assert c["livenessProbe"]["httpGet"]["path"] == "/api/v1/health/liveness"
    assert c["startupProbe"]["httpGet"]["path"] == "/api/v1/health/liveness"
    assert c["readinessProbe"]["httpGet"]["path"] == "/api/v1/health/readiness"
    for component in ("ingest", "query", "aggregator"):
        c = container(rendered("default"), component)
        assert c["livenessProbe"] != c["readinessProbe"]


# --- credentials: per component, checksummed ------------------------------------------------------------------

def test_each_process_gets_only_the_credentials_it_needs(rendered):
    docs = rendered("default")
    secret_env = {component: {name for name, e in env_of(docs, component).items() if "valueFrom" in e}
                  for component in APP}
    assert secret_env == {
        "ingest": {"PGPASSWORD", "NATS_URL", "API_KEYS"},
        "aggregator": {"PGPASSWORD", "NATS_URL", "API_KEYS"},
        "query": {"PGPASSWORD", "NATS_URL"},
        "edge": {"NATS_URL"},
        "feeder": {"FEEDER_API_KEY"},
    }


def test_a_changed_secret_rolls_exactly_the_pods_that_read_it(helm):
    def checksums(*args: str) -> dict[str, str]:
        docs = template(helm, *args)
        return {c: deployment(docs, c)["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
                for c in APP}

    before = checksums()
    after = checksums("--set", "auth.apiKeys=rotated-key")
    assert all(after[c] != before[c] for c in ("ingest", "aggregator", "feeder"))
    assert {c: after[c] == before[c] for c in ("query", "edge")} == {"query": True, "edge": True}
    external = checksums("--set", "postgresql.enabled=false", "--set", "externalDatabase.url=postgresql://a:b@db/md")
    moved = checksums("--set", "postgresql.enabled=false", "--set", "externalDatabase.url=postgresql://a:c@db/md")
    assert all(moved[c] != external[c] for c in ("ingest", "query", "aggregator"))
    assert moved["edge"] == external["edge"], "the edge does not read DATABASE_URL"


def test_feeder_key_defaults_to_the_first_api_key(helm):
    import base64

    docs = template(helm, "--set", "auth.apiKeys=first\\,second")
    [secret] = find(docs, "Secret", "md-marketdata")
    assert base64.b64decode(secret["data"]["FEEDER_API_KEY"]) == b"first"


# --- PostgreSQL: stable credentials, budget, CloudNativePG ---------------------------------------------------

def test_generated_password_survives_uninstall(rendered):
    docs = rendered("default")
    [secret] = find(docs, "Secret", "md-marketdata-postgresql")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert set(secret["data"]) == {"password"}
    [main] = find(docs, "Secret", "md-marketdata")
    assert "POSTGRES_PASSWORD" not in main["data"] and "DATABASE_URL" not in main["data"]
    [sts] = find(docs, "StatefulSet", "md-marketdata-postgresql")
    pg_env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "md-marketdata-postgresql",
                                                                         "key": "password"}
    env = env_of(docs, "query")
    assert env["DATABASE_URL"]["value"] == "postgresql://marketdata@md-marketdata-postgresql:5432/marketdata"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "md-marketdata-postgresql", "key": "password"}


def test_existing_password_secret_renders_identically_every_time(helm):
    """GitOps renders without a cluster: nothing generated, so every sync is the same."""
    args = ("--set", API_KEY_SET, "--set", "postgresql.existingSecret=pg-credentials",
            "--set", "postgresql.existingSecretKey=pw")
    first = run_helm(helm, "template", "md", str(CHART), *args).stdout
    assert first == run_helm(helm, "template", "md", str(CHART), *args).stdout
    docs = [d for d in yaml.safe_load_all(first) if d]
    assert not find(docs, "Secret", "md-marketdata-postgresql")
    [sts] = find(docs, "StatefulSet", "md-marketdata-postgresql")
    pg_env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pg-credentials", "key": "pw"}
    for component in ("ingest", "query", "aggregator"):
        assert env_of(docs, component)["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "pg-credentials"
    [job] = find(docs, "Job")
    job_env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert job_env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "pg-credentials"


def test_password_and_existing_secret_together_are_refused(helm):
    stderr = template_fails(helm, "--set", "postgresql.password=x", "--set", "postgresql.existingSecret=y")
    assert "postgresql.password and postgresql.existingSecret are both set" in stderr


def test_pool_sizes_match_the_services_defaults_and_reach_the_pods(rendered):
    from marketdata.common.config import DEFAULT_POOL_SIZES

    values = load_yaml(CHART / "values.yaml")["services"]
    assert {c: values[c]["dbPoolSize"] for c in DEFAULT_POOL_SIZES} == DEFAULT_POOL_SIZES
    for component in DEFAULT_POOL_SIZES:
        assert env_of(rendered("default"), component)["DB_POOL_SIZE"]["value"] == str(values[component]["dbPoolSize"])
    assert env_of(rendered("production"), "query")["DB_POOL_SIZE"]["value"] == "8"
    [sts] = find(rendered("default"), "StatefulSet", "md-marketdata-postgresql")
    assert sts["spec"]["template"]["spec"]["containers"][0]["args"] == ["postgres", "-c", "max_connections=100"]


def test_connection_budget_beyond_max_connections_fails_at_render(helm):
    # The budget counts ingest's LISTEN connection (registry changes) beside its pool: (2 + 1 surge) x (3 + 1),
    # and each component's rollout surge pod at its maximum: query (12 + 1) x 10, aggregator (1 + 1) x 4.
    stderr = template_fails(helm, "--set", "services.query.autoscaling.enabled=true",
                            "--set", "services.query.autoscaling.maxReplicas=12")
    assert "PostgreSQL connection budget exceeded" in stderr
    assert "query 13 pods (12 + 1 surge) x 10" in stderr and "ingest 3 pods (2 + 1 surge) x 4" in stderr
    assert "aggregator 2 pods (1 + 1 surge) x 4" in stderr and "= 151 connections" in stderr
    assert "postgresql.maxConnections 100" in stderr
    # The same release fits once the server allows it (and says so).
    template(helm, "--set", "services.query.autoscaling.enabled=true", "--set", "services.query.autoscaling.maxReplicas=12",
             "--set", "postgresql.maxConnections=160")


def test_cloudnativepg_cluster_and_its_app_secret(rendered):
    docs = rendered("cloudnativepg")
    assert not find(docs, "StatefulSet", "md-marketdata-postgresql")
    assert not find(docs, "Secret", "md-marketdata-postgresql")
    [cluster] = find(docs, "Cluster", "md-marketdata-db")
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert spec["instances"] == 3
    assert spec["bootstrap"]["initdb"] == {"database": "marketdata", "owner": "marketdata"}
    assert spec["postgresql"]["parameters"]["max_connections"] == "200"
    assert spec["backup"]["barmanObjectStore"]["destinationPath"].startswith("s3://")
    for component in ("ingest", "query", "aggregator"):
        env = env_of(docs, component)
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "md-marketdata-db-app", "key": "uri"}
        assert "PGPASSWORD" not in env
    [job] = find(docs, "Job")
    assert "helm.sh/hook" not in (job["metadata"].get("annotations") or {}), "the Cluster comes with the release"
    policies = {d["metadata"]["name"]: d["spec"] for d in find(docs, "NetworkPolicy")}
    egress = policies["md-marketdata-query"]["egress"]
    assert {"to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": "md-marketdata-db"}}}],
            "ports": [{"port": 5432, "protocol": "TCP"}]} in egress


def test_cloudnativepg_with_another_database_is_refused(helm):
    stderr = template_fails(helm, "--set", "cloudnativepg.enabled=true")
    assert "cloudnativepg.enabled is true: set postgresql.enabled=false" in stderr


# --- NATS: a JetStream cluster, stream settings, limits below the volume -----------------------------------

def test_stream_settings_reach_every_process(rendered):
    data = config_of(rendered("default"))
    assert (data["MD_STREAM_REPLICAS"], data["MD_STREAM_MAX_BYTES"], data["MD_DEADLETTER_MAX_BYTES"],
            data["MD_STREAM_MAX_AGE_SECONDS"]) == ("1", str(1024 * MIB), str(128 * MIB), "604800")
    from marketdata.common.config import load_settings

    settings = load_settings(data)  # the services accept what the chart renders
    assert (settings.stream_replicas, settings.stream_max_bytes) == (1, 1024 * MIB)


def test_three_nats_replicas_form_a_jetstream_cluster(rendered):
    docs = rendered("cloudnativepg")
    [sts] = find(docs, "StatefulSet", "md-marketdata-nats")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    pod = sts["spec"]["template"]["spec"]
    assert {"name": "cluster", "containerPort": 6222, "protocol": "TCP"} in pod["containers"][0]["ports"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    [conf] = find(docs, "ConfigMap", "md-marketdata-nats")
    routes = re.findall(r"nats://(md-marketdata-nats-\d)\.md-marketdata-nats-headless\.marketdata\.svc:6222",
                        conf["data"]["nats.conf"])
    assert routes == ["md-marketdata-nats-0", "md-marketdata-nats-1", "md-marketdata-nats-2"]
    [headless] = find(docs, "Service", "md-marketdata-nats-headless")
    assert 6222 in {p["port"] for p in headless["spec"]["ports"]}
    [pdb] = find(docs, "PodDisruptionBudget", "md-marketdata-nats")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert config_of(docs)["MD_STREAM_REPLICAS"] == "3"
    policy = {d["metadata"]["name"]: d["spec"] for d in find(docs, "NetworkPolicy")}["md-marketdata-nats"]
    assert any({p["port"] for p in rule["ports"]} == {6222} for rule in policy["ingress"])
    assert any({p["port"] for p in rule["ports"]} == {6222} for rule in policy["egress"])


def test_single_nats_has_no_cluster(rendered):
    docs = rendered("default")
    [conf] = find(docs, "ConfigMap", "md-marketdata-nats")
    assert "cluster {" not in conf["data"]["nats.conf"]
    assert not find(docs, "PodDisruptionBudget", "md-marketdata-nats")


def test_nats_config_is_valid_for_nats_server(rendered, tmp_path):
    """The rendered nats.conf (cluster and limits) parses in the real nats-server (-t: test the config)."""
    import os
    import subprocess

    from marketdata.common.embedded import nats_server_binary

    for scenario in ("default", "cloudnativepg"):
        [conf] = find(rendered(scenario), "ConfigMap", "md-marketdata-nats")
        path = tmp_path / f"{scenario}.conf"
        path.write_text(conf["data"]["nats.conf"].replace("/data", str(tmp_path / "data")))
        result = subprocess.run([nats_server_binary(), "-c", str(path), "-t"], capture_output=True, text=True,
                                env={**os.environ, "POD_NAME": "md-marketdata-nats-0"}, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr


def test_file_store_stays_below_the_volume(rendered, helm):
    for scenario in ("default", "kind", "cloudnativepg"):
        docs = rendered(scenario)
        [conf] = find(docs, "ConfigMap", "md-marketdata-nats")
        [sts] = find(docs, "StatefulSet", "md-marketdata-nats")
        max_file = int(re.search(r"max_file_store: (\d+)", conf["data"]["nats.conf"]).group(1))
        volume = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
        assert max_file < int(volume.removesuffix("Gi")) << 30, scenario
        data = config_of(docs)
        assert int(data["MD_STREAM_MAX_BYTES"]) + int(data["MD_DEADLETTER_MAX_BYTES"]) <= max_file, scenario
    assert "must be below nats.persistence.size" in template_fails(helm, "--set", "nats.jetstream.maxFile=2Gi")
    assert "must be set and fit in nats.jetstream.maxFile" in template_fails(
        helm, "--set", "config.streamMaxBytes=1500Mi")
    assert "must be set and fit" in template_fails(helm, "--set", "config.streamMaxBytes=")
    assert "/nats/replicas': value must be one of 1, 3, 5" in template_fails(helm, "--set", "nats.replicas=2")


# --- routes, policies, mesh ---------------------------------------------------------------------------------

def test_gateway_routes(rendered):
    docs = rendered("production")
    [http] = find(docs, "HTTPRoute", "md-marketdata-edge")
    assert http["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateway-system", "sectionName": "https"}]
    assert http["spec"]["hostnames"] == ["marketdata.example.com"]
    realtime, rest = http["spec"]["rules"]
    assert realtime["matches"] == [{"path": {"type": "PathPrefix", "value": "/realtime"}}]
    assert realtime["timeouts"] == {"request": "0s", "backendRequest": "0s"}, "SSE streams are never cut"
    assert rest["timeouts"] == {"request": "30s"}
    assert realtime["backendRefs"] == [{"name": "md-marketdata-edge", "port": 8080}]
    [grpc] = find(docs, "GRPCRoute", "md-marketdata-grpc")
    routed = {r["matches"][0]["method"]["service"]: r["backendRefs"][0] for r in grpc["spec"]["rules"]}
    assert routed == {"marketdata.v1.IngestService": {"name": "md-marketdata-ingest", "port": 50051},
                      "marketdata.v1.QueryService": {"name": "md-marketdata-query", "port": 50052}}
    assert not find(rendered("default"), "HTTPRoute") and not find(rendered("default"), "GRPCRoute")


def test_gateway_without_parent_is_refused(helm):
    assert "set gateway.parentRefs" in template_fails(helm, "--set", "gateway.enabled=true")


def test_edge_metrics_are_on_the_metrics_port_not_the_public_one(rendered):
    docs = rendered("production")
    [svc] = find(docs, "Service", "md-marketdata-edge")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 8080, "metrics": 9090}
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container(docs, "edge")["ports"]
    policy = {d["metadata"]["name"]: d["spec"] for d in find(docs, "NetworkPolicy")}["md-marketdata-edge"]
    monitoring = [r for r in policy["ingress"] if r.get("from", [{}])[0].get("namespaceSelector", {})
                  .get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"]
    assert [{p["port"] for p in r["ports"]} for r in monitoring] == [{9090}]


def test_extra_rules_dns_and_mesh_annotations(rendered, helm):
    docs = rendered("production")
    policies = {d["metadata"]["name"]: d["spec"] for d in find(docs, "NetworkPolicy")}
    gateway_ns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway-system"}}}
    assert {"from": [gateway_ns], "ports": [{"port": 50052, "protocol": "TCP"}]} in policies["md-marketdata-query"]["ingress"]
    for component in ("ingest", "query", "aggregator", "edge"):
        linkerd = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "linkerd"}}}
        assert any(rule.get("from") == [linkerd] for rule in policies[f"md-marketdata-{component}"]["ingress"])
        assert any(rule.get("to") == [linkerd] for rule in policies[f"md-marketdata-{component}"]["egress"])
        annotations = deployment(docs, component)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["linkerd.io/inject"] == "enabled"
    custom = template(helm, "--set", "networkPolicy.dns.port=5353", "--set", "networkPolicy.dns.peers[0].ipBlock.cidr=169.254.20.10/32",
                      "--set-string", "podLabels.sidecar\\.istio\\.io/inject=true")
    for name, spec in {d["metadata"]["name"]: d["spec"] for d in find(custom, "NetworkPolicy")}.items():
        for rule in spec.get("egress", []):
            if {p["port"] for p in rule["ports"]} & {53, 5353}:
                assert {p["port"] for p in rule["ports"]} == {5353}, name
                assert rule["to"] == [{"ipBlock": {"cidr": "169.254.20.10/32"}}], name
    assert deployment(custom, "query")["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"


# --- monitoring and KEDA ----------------------------------------------------------------------------------

def _metric_names_in_code() -> set[str]:
    """The metrics the services register once their modules are imported (counters by their `_total` name)."""
    import importlib

    from prometheus_client import REGISTRY

    for service in ("aggregator", "edge", "ingest", "query"):
        importlib.import_module(f"marketdata.{service}.server")
    return {f"{family.name}_total" if family.type == "counter" else family.name for family in REGISTRY.collect()}


def test_service_monitor_scrapes_every_process_on_its_metrics_port(rendered):
    docs = rendered("production")
    [monitor] = find(docs, "ServiceMonitor", "md-marketdata")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    components = next(e["values"] for e in monitor["spec"]["selector"]["matchExpressions"]
                      if e["key"] == "app.kubernetes.io/component")
    assert sorted(components) == ["aggregator", "edge", "ingest", "query"]
    for component in components:
        [svc] = find(docs, "Service", f"md-marketdata-{component}")
        assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}, component
    [pod_monitor] = find(rendered("cloudnativepg"), "PodMonitor", "md-marketdata")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_alerts_use_metrics_the_services_export(rendered):
    [rule] = find(rendered("production"), "PrometheusRule", "md-marketdata")
    alerts = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"MarketdataNotServing", "MarketdataConsumerLag", "MarketdataDeadLetters", "MarketdataSseDrops"} <= set(alerts)
    exported = _metric_names_in_code()
    for alert, expr in alerts.items():
        used = {m.removesuffix("_total") + "_total" if m.endswith("_total") else m
                for m in re.findall(r"\b([a-z]+_[a-z_]+)\{", expr)}
        assert used and used <= exported, f"{alert} uses {used - exported}"


def test_keda_scales_the_aggregator_on_consumer_lag(rendered, helm):
    docs = rendered("cloudnativepg")
    [scaled] = find(docs, "ScaledObject", "md-marketdata-aggregator")
    assert scaled["spec"]["scaleTargetRef"] == {"name": "md-marketdata-aggregator"}
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"]["natsServerMonitoringEndpoint"] == "md-marketdata-nats-headless.marketdata.svc:8222"
    from marketdata.common.config import load_settings

    settings = load_settings(config_of(docs))
    assert (trigger["metadata"]["stream"], trigger["metadata"]["consumer"]) == (settings.stream, settings.consumer)
    assert "replicas" not in deployment(docs, "aggregator")["spec"], "KEDA owns the replicas"
    assert not find(docs, "HorizontalPodAutoscaler", "md-marketdata-aggregator")
    nats_policy = {d["metadata"]["name"]: d["spec"] for d in find(docs, "NetworkPolicy")}["md-marketdata-nats"]
    assert any({p["port"] for p in r["ports"]} == {8222} for r in nats_policy["ingress"])
    assert "KEDA creates the aggregator's HorizontalPodAutoscaler" in template_fails(
        helm, "--set", "keda.enabled=true", "--set", "services.aggregator.autoscaling.enabled=true")


# --- notes ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [("--set", API_KEY_SET), ("--values", str(CHART / "values-kind.yaml"))])
def test_notes_print_an_sse_command_that_works(helm, values):
    result = run_helm(helm, "install", "md", str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *values)
    notes = result.stdout.split("NOTES:", 1)[1]
    commands = re.findall(r"curl -N \S+", notes)
    assert commands and all("/realtime/ticks?symbol=" in c for c in commands), commands


def test_docs_print_sse_commands_with_a_symbol():
    for path in (REPO / "docs" / "kubernetes.md", REPO / "README.md"):
        for command in re.findall(r"curl -N [^\n]*realtime/ticks[^\n]*", path.read_text()):
            assert "symbol=" in command, f"{path.name}: {command}"
