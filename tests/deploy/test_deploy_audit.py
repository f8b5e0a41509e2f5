"""Findings of the chart audit, each proved by the real helm: the Kubernetes floor of the preStop sleep, image
pull secrets and chart-wide scheduling on every pod (the pre-install migration hook included), ServiceAccounts
for IRSA / Workload Identity or existing ones, extra volumes and valueFrom env, object names that stay valid and
distinct for long release names, NOTES that match the install, the rollout surge in the PostgreSQL connection
budget, one source per environment variable, and KEDA watching the consumer the aggregator uses. Each test
fails on the chart before these fixes."""

from __future__ import annotations

import base64
import re

import pytest
import yaml

from .deploy_helpers import (API_KEY_SET, CHART, NAMESPACE, REPO, chart_minimum_kubernetes_version, find,
                             load_yaml, pod_spec, run_helm, template, template_fails)

EXTERNAL_DB = CHART / "ci" / "external-db-values.yaml"
CNPG = CHART / "ci" / "cloudnativepg-values.yaml"
PRODUCTION = CHART / "ci" / "production-values.yaml"
APP = ("ingest", "aggregator", "query", "edge", "feeder")


def pods(docs) -> dict[str, dict]:
    """Every pod spec of the render (Deployments, StatefulSets, Jobs, the test Pod), by kind/name."""
    return {f"{d['kind']}/{d['metadata']['name']}": pod_spec(d) for d in docs if pod_spec(d) is not None}


def component_of(doc) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


# --- 1. Kubernetes versions ------------------------------------------------------------------------------------

def test_kube_version_floor_is_the_one_of_the_presstop_sleep(helm):
    """lifecycle.preStop.sleep is on by default from 1.30: the chart refuses older clusters with helm's message."""
    assert chart_minimum_kubernetes_version() == "1.30.0"
    stderr = template_fails(helm, "--set", API_KEY_SET, "--kube-version", "1.29.0")
    assert "chart requires kubeVersion: >=1.30.0-0 which is incompatible with Kubernetes v1.29.0" in stderr
    assert template(helm, "--set", API_KEY_SET, "--kube-version", "1.30.0")


def test_docs_name_the_same_supported_versions():
    floor = ".".join(chart_minimum_kubernetes_version().split(".")[:2])
    for path in (REPO / "docs" / "kubernetes.md", REPO / "README.md"):
        text = path.read_text()
        assert f"Kubernetes {floor} or later" in text, path.name
        assert not re.search(r"Kubernetes 1\.(2\d)\b", text), f"{path.name} names an unsupported version"


# --- 2. imagePullSecrets ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [(), ("--values", str(EXTERNAL_DB)), ("--values", str(CNPG))])
def test_every_pod_gets_the_image_pull_secrets(helm, values):
    docs = template(helm, "--set", API_KEY_SET, *values, "--set", "imagePullSecrets[0].name=regcred")
    found = pods(docs)
    assert any(name.startswith("Pod/") for name in found), "the helm test pod is rendered"
    assert any(name.startswith("Job/") for name in found)
    for name, spec in found.items():
        assert spec.get("imagePullSecrets") == [{"name": "regcred"}], name


# --- 3. scheduling, ServiceAccounts, volumes, env --------------------------------------------------------------

TAINT = {"key": "dedicated", "operator": "Equal", "value": "marketdata", "effect": "NoSchedule"}
SCHEDULING = ("--set", "scheduling.nodeSelector.pool=marketdata",
              "--set", "scheduling.tolerations[0].key=dedicated", "--set", "scheduling.tolerations[0].operator=Equal",
              "--set", "scheduling.tolerations[0].value=marketdata", "--set", "scheduling.tolerations[0].effect=NoSchedule",
              "--set", "scheduling.priorityClassName=marketdata-high",
              "--set", "scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                       ".nodeSelectorTerms[0].matchExpressions[0].key=kubernetes.io/arch",
              "--set", "scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                       ".nodeSelectorTerms[0].matchExpressions[0].operator=In",
              "--set", "scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                       ".nodeSelectorTerms[0].matchExpressions[0].values[0]=amd64",
              "--set", "scheduling.topologySpreadConstraints[0].maxSkew=1",
              "--set", "scheduling.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
              "--set", "scheduling.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway")


@pytest.mark.parametrize("values", [(), ("--values", str(EXTERNAL_DB))])
def test_chart_wide_scheduling_reaches_every_pod(helm, values):
    """On a cluster whose nodes are all tainted every pod, the pre-install migration hook first, must tolerate it."""
    docs = template(helm, "--set", API_KEY_SET, *values, *SCHEDULING)
    found = {d["kind"] + "/" + d["metadata"]["name"]: d for d in docs if pod_spec(d) is not None}
    kinds = {name.split("/")[0] for name in found}
    assert {"Deployment", "Job", "Pod"} <= kinds
    if not values:
        assert "StatefulSet" in kinds, "in-chart NATS and PostgreSQL"
    for name, doc in found.items():
        spec = pod_spec(doc)
        assert spec["tolerations"] == [TAINT], name
        assert spec["nodeSelector"] == {"pool": "marketdata"}, name
        assert spec["priorityClassName"] == "marketdata-high", name
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms[0]["matchExpressions"][0]["values"] == ["amd64"], name
        [spread] = spec["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone", name
        # Each component's constraint counts its own pods.
        labels = (doc["spec"]["template"]["metadata"]["labels"] if doc["kind"] != "Pod" else doc["metadata"]["labels"])
        assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component_of(doc), name
        assert spread["labelSelector"]["matchLabels"].items() <= labels.items(), name
        if doc["kind"] == "Deployment":
            assert "podAntiAffinity" in spec["affinity"], f"{name}: replicas still prefer separate nodes"


def test_a_components_own_scheduling_replaces_the_chart_wide_one(helm):
    docs = template(helm, "--set", API_KEY_SET, *SCHEDULING,
                  "--set", "services.query.nodeSelector.pool=query",
                  "--set", "services.query.priorityClassName=query-critical",
                  "--set", "migrations.tolerations[0].operator=Exists",
                  "--set", "migrations.nodeSelector.pool=jobs",
                  "--set", "nats.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"
                           ".topologyKey=kubernetes.io/hostname")
    specs = pods(docs)
    query = specs["Deployment/md-marketdata-query"]
    assert query["nodeSelector"] == {"pool": "query"} and query["priorityClassName"] == "query-critical"
    assert query["tolerations"] == [TAINT], "what the service does not set stays chart-wide"
    [job] = [spec for name, spec in specs.items() if name.startswith("Job/")]
    assert job["tolerations"] == [{"operator": "Exists"}] and job["nodeSelector"] == {"pool": "jobs"}
    nats = specs["StatefulSet/md-marketdata-nats"]
    assert list(nats["affinity"]) == ["podAntiAffinity"]
    assert nats["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert specs["Deployment/md-marketdata-ingest"]["nodeSelector"] == {"pool": "marketdata"}


def test_service_account_annotations_and_existing_accounts(helm):
    irsa = "eks\\.amazonaws\\.com/role-arn"
    docs = template(helm, "--set", API_KEY_SET, "--values", str(EXTERNAL_DB),
                  "--set", f"serviceAccount.annotations.{irsa}=arn:aws:iam::1:role/md",
                  "--set", "services.query.serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account=q@p.iam",
                  "--set", "services.edge.serviceAccount.name=edge-existing")
    accounts = {d["metadata"]["name"]: d for d in find(docs, "ServiceAccount")}
    for component in ("ingest", "aggregator", "query", "feeder", "migrate"):
        annotations = accounts[f"md-marketdata-{component}"]["metadata"]["annotations"]
        assert annotations["eks.amazonaws.com/role-arn"] == "arn:aws:iam::1:role/md", component
    assert accounts["md-marketdata-query"]["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == "q@p.iam"
    migrate = accounts["md-marketdata-migrate"]["metadata"]["annotations"]
    assert migrate["helm.sh/hook"] == "pre-install,pre-upgrade", "still a hook before the Job"
    assert "md-marketdata-edge" not in accounts, "an existing ServiceAccount is not created"
    specs = pods(docs)
    assert specs["Deployment/md-marketdata-edge"]["serviceAccountName"] == "edge-existing"

    shared = template(helm, "--set", API_KEY_SET, "--set", "serviceAccount.create=false",
                    "--set", "serviceAccount.name=marketdata-workload")
    names = {d["metadata"]["name"] for d in find(shared, "ServiceAccount")}
    assert names == {"md-marketdata-nats", "md-marketdata-postgresql"}, "only the infrastructure's remain"
    for name, spec in pods(shared).items():
        if name.startswith(("Deployment/", "Job/")):
            assert spec["serviceAccountName"] == "marketdata-workload", name
    assert "set serviceAccount.name" in template_fails(helm, "--set", API_KEY_SET, "--set", "serviceAccount.create=false")


def test_extra_volumes_and_value_from_env(helm, kubernetes_validate):
    docs = template(helm, "--set", API_KEY_SET,
                  "--set", "services.query.extraVolumes[0].name=pg-ca",
                  "--set", "services.query.extraVolumes[0].secret.secretName=pg-ca",
                  "--set", "services.query.extraVolumeMounts[0].name=pg-ca",
                  "--set", "services.query.extraVolumeMounts[0].mountPath=/etc/pg-ca",
                  "--set", "services.query.extraVolumeMounts[0].readOnly=true",
                  "--set", "services.query.env.PGSSLROOTCERT=/etc/pg-ca/ca.crt",
                  "--set", "services.query.env.PGSSLMODE.valueFrom.configMapKeyRef.name=pg",
                  "--set", "services.query.env.PGSSLMODE.valueFrom.configMapKeyRef.key=sslmode",
                  "--set", "services.ingest.env.OTEL_EXPORTER_OTLP_HEADERS.valueFrom.secretKeyRef.name=otel",
                  "--set", "services.ingest.env.OTEL_EXPORTER_OTLP_HEADERS.valueFrom.secretKeyRef.key=headers",
                  "--set", "migrations.extraVolumes[0].name=pg-ca",
                  "--set", "migrations.extraVolumes[0].secret.secretName=pg-ca",
                  "--set", "migrations.extraVolumeMounts[0].name=pg-ca",
                  "--set", "migrations.extraVolumeMounts[0].mountPath=/etc/pg-ca",
                  "--set", "migrations.env.PGSSLROOTCERT=/etc/pg-ca/ca.crt")
    specs = pods(docs)
    [job] = [name for name in specs if name.startswith("Job/")]
    for name in ("Deployment/md-marketdata-query", job):
        spec = specs[name]
        assert {"name": "pg-ca", "secret": {"secretName": "pg-ca"}} in spec["volumes"], name
        container = spec["containers"][0]
        assert "/etc/pg-ca" in {m["mountPath"] for m in container["volumeMounts"]}, name
        env = {e["name"]: e for e in container["env"]}
        assert env["PGSSLROOTCERT"]["value"] == "/etc/pg-ca/ca.crt", name
    query_env = {e["name"]: e for e in specs["Deployment/md-marketdata-query"]["containers"][0]["env"]}
    assert query_env["PGSSLMODE"] == {"name": "PGSSLMODE", "valueFrom": {"configMapKeyRef": {"name": "pg", "key": "sslmode"}}}
    ingest_env = {e["name"]: e for e in specs["Deployment/md-marketdata-ingest"]["containers"][0]["env"]}
    assert ingest_env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"] == {"secretKeyRef": {"name": "otel", "key": "headers"}}
    for doc in docs:
        if pod_spec(doc) is not None:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
    # The schema stays strict inside the new values.
    assert "schema" in template_fails(helm, "--set", API_KEY_SET,
                                    "--set", "services.query.env.X.valueFrom.secretRef.name=s")
    assert "schema" in template_fails(helm, "--set", API_KEY_SET, "--set", "services.query.extraVolumes[0].name=v",
                                    "--set", "services.query.extraVolumes[0].secrte.secretName=s")
    assert "the name tmp is the chart's own" in template_fails(
        helm, "--set", API_KEY_SET, "--set", "services.query.extraVolumes[0].name=tmp",
        "--set", "services.query.extraVolumes[0].emptyDir.medium=Memory")


# --- 4. long release names -------------------------------------------------------------------------------------

LONG_RELEASES = ("marketdata-production-eu-west-1-realtime-platform-01",
                 "marketdata-production-eu-west-1-realtime-platform-02")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _names(docs) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


@pytest.mark.parametrize("values", [(), ("--values", str(CNPG)), ("--values", str(EXTERNAL_DB))])
def test_long_release_names_give_valid_distinct_names(helm, values):
    assert all(len(r) == 52 for r in LONG_RELEASES)
    rendered = [template(helm, "--set", API_KEY_SET, *values, release=r) for r in LONG_RELEASES]
    for docs in rendered:
        services = {d["metadata"]["name"] for d in find(docs, "Service")}
        for doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            assert len(name) <= 63 and DNS_LABEL.match(name), (kind, name)
            if kind == "Service":
                assert DNS_1035.match(name), name
            if kind == "StatefulSet":
                # Its pods carry controller-revision-hash: <name>-<10 characters>, a label value of <= 63.
                assert len(name) <= 52, name
                assert doc["spec"]["serviceName"] in services, name
            if kind == "Cluster":
                assert len(name) <= 50, name  # CloudNativePG's limit
        # Every name a process dials is a Service of the release.
        [config] = [d for d in find(docs, "ConfigMap") if "INGEST_ADDR" in d.get("data", {})][:1]
        for key in ("INGEST_ADDR", "QUERY_ADDR", "AGGREGATOR_ADDR"):
            assert config["data"][key].rsplit(":", 1)[0] in services, key
        for secret in find(docs, "Secret"):
            if "NATS_URL" in secret.get("data", {}):
                host = re.match(r"nats://([^:]+):", base64.b64decode(secret["data"]["NATS_URL"]).decode()).group(1)
                assert host in services
        for deployment in find(docs, "Deployment"):
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
                if e["name"] == "DATABASE_URL" and "value" in e:
                    assert re.match(r"postgresql://[^@]+@([^:]+):", e["value"]).group(1) in services
        for scaled in find(docs, "ScaledObject"):
            endpoint = scaled["spec"]["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"]
            assert endpoint.split(".")[0] in services
        for conf in find(docs, "ConfigMap"):
            for host in re.findall(r"nats://[^.]+\.([^.]+)\.", conf.get("data", {}).get("nats.conf", "")):
                assert host in services
    assert not _names(rendered[0]) & _names(rendered[1]), "two releases in one namespace collide"


def test_notes_name_the_services_the_chart_renders(helm):
    release = LONG_RELEASES[0]
    result = run_helm(helm, "install", release, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                      "--set", API_KEY_SET)
    manifest, notes = result.stdout.split("NOTES:", 1)
    services = {d["metadata"]["name"] for d in yaml.safe_load_all(manifest.split("MANIFEST:", 1)[1]) if d
                and d["kind"] == "Service"}
    forwarded = re.findall(r"port-forward svc/(\S+)", notes)
    assert len(forwarded) == 3
    assert set(forwarded) <= services, set(forwarded) - services


# --- 5. NOTES on NodePort installs -----------------------------------------------------------------------------

def test_notes_print_kind_instructions_only_for_the_kind_node_ports(helm):
    result = run_helm(helm, "install", "md", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                      "--set", API_KEY_SET, "--set", "services.edge.service.type=NodePort",
                      "--set", "services.edge.service.nodePort=31080")
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kind" not in notes and "localhost:8080" not in notes, notes
    assert "curl -s http://<node-address>:31080/api/v1/symbols" in notes
    kind = run_helm(helm, "install", "md", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                    "--values", str(CHART / "values-kind.yaml")).stdout.split("NOTES:", 1)[1]
    assert "On kind" in kind and "curl -s http://localhost:8080/api/v1/symbols" in kind


# --- 6. connection budget with the rollout surge ---------------------------------------------------------------

def budget_from_objects(docs) -> int:
    """Connections at the maxima, from the rendered objects alone: per Deployment with DB_POOL_SIZE, (HPA/KEDA
    maximum or replicas + the strategy's maxSurge) x (pool + ingest's LISTEN), plus the migration's one."""
    maxima = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"] for h in find(docs, "HorizontalPodAutoscaler")}
    maxima |= {s["spec"]["scaleTargetRef"]["name"]: s["spec"]["maxReplicaCount"] for s in find(docs, "ScaledObject")}
    total = 1 if find(docs, "Job") else 0
    for deployment in find(docs, "Deployment"):
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        if "DB_POOL_SIZE" not in env:
            continue
        name = deployment["metadata"]["name"]
        pods = maxima.get(name, deployment["spec"].get("replicas")) + deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        total += pods * (int(env["DB_POOL_SIZE"]) + (1 if component_of(deployment) == "ingest" else 0))
    return total


def test_connection_budget_counts_the_rollout_surge(helm):
    # 2 x 4 + 2 x 10 + 1 x 4 + 1 = 33 without the surge, 51 with it: above 50 - 3.
    stderr = template_fails(helm, "--set", API_KEY_SET, "--set", "postgresql.maxConnections=50")
    assert "PostgreSQL connection budget exceeded" in stderr and "= 51 connections" in stderr
    assert "query 3 pods (2 + 1 surge) x 10" in stderr
    assert budget_from_objects(template(helm, "--set", API_KEY_SET)) == 51
    production = template(helm, "--values", str(PRODUCTION))
    assert budget_from_objects(production) == 185 <= load_yaml(PRODUCTION)["postgresql"]["maxConnections"] - 3
    docs = (REPO / "docs" / "kubernetes.md").read_text()
    assert "3 × 4 + 3 × 10 + 2 × 4 + 1 = 51" in docs
    assert "13 × 4 + 13 × 8 + 7 × 4 + 1 = 185" in docs


# --- 7. one source per environment variable --------------------------------------------------------------------

def test_extra_env_overrides_the_chart_key_once(helm):
    result = run_helm(helm, "template", "md", str(CHART), "--namespace", NAMESPACE, "--set", API_KEY_SET,
                      "--set", "config.extraEnv.LOG_LEVEL=debug", "--set", "config.extraEnv.OTEL_SERVICE_NAME=md",
                      "--show-only", "templates/configmap.yaml")
    assert result.stdout.count("LOG_LEVEL:") == 1, result.stdout
    data = yaml.safe_load(result.stdout)["data"]
    assert data["LOG_LEVEL"] == "debug" and data["OTEL_SERVICE_NAME"] == "md"
    stderr = template_fails(helm, "--set", API_KEY_SET, "--set", "config.extraEnv.MD_STREAM=OTHER")
    assert "config.extraEnv.MD_STREAM: the chart sets MD_STREAM itself; set config.stream instead" in stderr


def test_service_env_cannot_bypass_the_budget_or_duplicate_chart_entries(helm):
    stderr = template_fails(helm, "--set", API_KEY_SET, "--set", "services.query.env.DB_POOL_SIZE=50")
    assert "services.query.env.DB_POOL_SIZE: the chart sets DB_POOL_SIZE itself; set services.query.dbPoolSize" in stderr
    stderr = template_fails(helm, "--set", API_KEY_SET, "--set", "services.ingest.env.NATS_URL=nats://elsewhere:4222")
    assert "externalNats.url or externalNats.existingSecret" in stderr
    docs = template(helm, "--set", API_KEY_SET, "--set", "services.query.env.LOG_LEVEL=debug")
    [query] = find(docs, "Deployment", "md-marketdata-query")
    names = [e["name"] for e in query["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert len(names) == len(set(names)), names
    env = {e["name"]: e for e in query["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LOG_LEVEL"]["value"] == "debug", "a process's env overrides the ConfigMap for that process"


# --- 8. KEDA's consumer ----------------------------------------------------------------------------------------

def test_keda_watches_the_consumer_the_aggregator_uses(helm):
    from marketdata.common.config import load_settings

    docs = template(helm, "--values", str(CNPG), "--set", "config.consumer=candles-eu")
    [config] = find(docs, "ConfigMap", "md-marketdata")
    settings = load_settings(config["data"])
    assert settings.consumer == "candles-eu"
    [scaled] = find(docs, "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["consumer"] == settings.consumer
    stderr = template_fails(helm, "--values", str(CNPG), "--set", "services.aggregator.env.MD_CONSUMER=x")
    assert "set config.consumer instead" in stderr


# --- migration Job under a mesh --------------------------------------------------------------------------------

def test_migration_job_opts_out_of_sidecar_injection(helm):
    [job] = find(template(helm, "--values", str(PRODUCTION)), "Job")
    pod = job["spec"]["template"]["metadata"]
    assert pod["annotations"]["linkerd.io/inject"] == "disabled"
    assert pod["annotations"]["sidecar.istio.io/inject"] == "false"
    assert pod["labels"]["sidecar.istio.io/inject"] == "false"
    [meshed] = find(template(helm, "--values", str(PRODUCTION), "--set", "migrations.disableMeshInjection=false"), "Job")
    assert "linkerd.io/inject" not in (meshed["spec"]["template"]["metadata"].get("annotations") or {})


# --- the migration Job's name under Argo CD ---------------------------------------------------------------------

def test_migration_job_is_renamed_exactly_when_its_spec_changes(helm):
    """Argo CD renders with `helm template`, where the release revision is always 1: a Job named by the revision
    kept its name when the image changed, and applying a changed pod template to it (immutable) failed the sync.
    Named by a hash of its spec, it is a new Job whenever the spec changes, and the same finished one otherwise."""
    def job(*args: str) -> dict:
        [found] = find(template(helm, "--set", API_KEY_SET, *args), "Job")
        return found

    first = job()
    assert first["metadata"]["name"] == job()["metadata"]["name"], "two renders of the same values differ"
    assert re.fullmatch(r"md-marketdata-migrate-[0-9a-f]{8}", first["metadata"]["name"])
    for change in ("image.tag=0.2.0", "migrations.tolerations[0].operator=Exists", "migrations.waitSeconds=60"):
        changed = job("--set", change)
        assert changed["metadata"]["name"] != first["metadata"]["name"], change
        assert changed["spec"] != first["spec"], change
    assert job("--set", "services.query.replicaCount=3")["metadata"]["name"] == first["metadata"]["name"], \
        "a change the Job does not see must not run it again"
    # External database: a hook, deleted before each upgrade's, keeps its plain name.
    assert job("--values", str(EXTERNAL_DB))["metadata"]["name"] == "md-marketdata-migrate"
