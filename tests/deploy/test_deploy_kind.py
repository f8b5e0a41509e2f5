"""kind-config.yaml: host ports that match the chart's kind NodePorts, the local registry wiring."""

from __future__ import annotations

from .deploy_helpers import KIND_CONFIG, KIND_VALUES, find, load_yaml

# What users reach on localhost right after `helm install -f values-kind.yaml` on this cluster.
EXPECTED_HOST_PORTS = {8080: "edge", 50051: "ingest", 50052: "query"}


def port_mappings():
    config = load_yaml(KIND_CONFIG)
    return [m for node in config["nodes"] for m in node.get("extraPortMappings", [])]


def test_cluster_is_named_for_the_tilt_context():
    config = load_yaml(KIND_CONFIG)
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == "marketdata", "kind names the context kind-<name>; the Tiltfile allows kind-marketdata"


def test_host_ports_match_the_node_ports_of_values_kind():
    values = load_yaml(KIND_VALUES)
    node_ports = {component: spec["service"]["nodePort"] for component, spec in values["services"].items()
                  if (spec.get("service") or {}).get("nodePort")}
    mappings = {m["hostPort"]: m["containerPort"] for m in port_mappings()}
    assert set(mappings) == set(EXPECTED_HOST_PORTS)
    for host_port, component in EXPECTED_HOST_PORTS.items():
        assert node_ports[component] == mappings[host_port], f"{component}: hostPort {host_port}"
        assert values["services"][component]["service"]["type"] == "NodePort"
    assert set(node_ports) == set(EXPECTED_HOST_PORTS.values())
    for mapping in port_mappings():
        assert mapping.get("protocol", "TCP") == "TCP"
        assert 30000 <= mapping["containerPort"] <= 32767


def test_rendered_kind_services_use_those_node_ports(rendered):
    docs = rendered("kind")
    mappings = {m["hostPort"]: m["containerPort"] for m in port_mappings()}
    for host_port, component in EXPECTED_HOST_PORTS.items():
        [service] = find(docs, "Service", f"md-marketdata-{component}")
        assert service["spec"]["type"] == "NodePort"
        ports = {p["nodePort"]: p for p in service["spec"]["ports"] if "nodePort" in p}
        assert mappings[host_port] in ports
        # gRPC on the gRPC ports, HTTP on 8080.
        expected = "http" if component == "edge" else "kubernetes.io/h2c"
        assert ports[mappings[host_port]]["appProtocol"] == expected
        assert ports[mappings[host_port]]["port"] == host_port, "same port inside and outside the cluster"


def test_local_registry_wiring():
    config = load_yaml(KIND_CONFIG)
    patches = "\n".join(config["containerdConfigPatches"])
    assert 'config_path = "/etc/containerd/certs.d"' in patches
    text = KIND_CONFIG.read_text()
    assert "localhost:5001" in text


def test_node_image_is_pinned_by_digest():
    config = load_yaml(KIND_CONFIG)
    for node in config["nodes"]:
        assert node["image"].startswith("kindest/node:v") and "@sha256:" in node["image"]
