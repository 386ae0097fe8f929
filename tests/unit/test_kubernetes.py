"""deployment/kubernetes/fixed-role/, the fixed primary and secondaries (no
PEERS), without a cluster, which these machines cannot run. The failover
layout in deployment/kubernetes/ itself has its own tests
(tests/unit/test_kubernetes_failover.py).

Every manifest is validated offline, strictly (no unknown field), against
the Kubernetes schemas that kubernetes-validate ships. Then the manifests
are held to the nodes' configuration contract: each variable a node is given
is a setting of its role and parses; the ports are the defaults; DATA_DIR is
the claim's mount; the key files are the ones the nodes read (the init
container's copy is run for real); the probes ask /health; SECONDARIES names
exactly the secondaries' pods. Kustomize is not available either: the
kustomization is read as data and every file it lists is checked.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from primary.config import PrimaryConfig
from secondary.config import SecondaryConfig
from shared.runtime.config import declared_settings
from tests.support.processes import REPO

KUBERNETES = REPO / "deployment" / "kubernetes" / "fixed-role"
#: The oldest and the newest Kubernetes whose schemas the pinned
#: kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.25", "1.37")
CONFIGS = {"primary": PrimaryConfig, "secondary": SecondaryConfig}
IMAGE = "replicated-log"
#: The two workloads, as ``the`` finds them.
PRIMARY = ("StatefulSet", "primary")
SECONDARIES = ("StatefulSet", "secondary")


def kustomization() -> dict:
    return yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())


def manifests() -> list[dict]:
    """Every object of every file the kustomization lists, in its order."""
    objects = []
    for name in kustomization()["resources"]:
        objects += [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]
    return objects


def the(kind: str, name: str) -> dict:
    [found] = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def role_of(container: dict) -> str:
    """The role a container runs: its command is ``python -m ROLE``."""
    python, flag, role = container["command"]
    assert (python, flag) == ("python", "-m") and role in CONFIGS, container["command"]
    return role


def node_container(statefulset: dict) -> dict:
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def keys_container(statefulset: dict) -> dict:
    [container] = statefulset["spec"]["template"]["spec"]["initContainers"]
    return container


def pod_names(statefulset: dict) -> list[str]:
    name = statefulset["metadata"]["name"]
    return [f"{name}-{ordinal}" for ordinal in range(statefulset["spec"]["replicas"])]


def environment(container: dict, pod_name: str) -> dict[str, str]:
    """The container's variables as its pod ``pod_name`` sees them."""
    env = {}
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            assert variable["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, variable
            env[variable["name"]] = pod_name
    return env


def mount(container: dict, volume: str) -> dict:
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume]
    return mount


def volume(statefulset: dict, name: str) -> dict:
    [found] = [v for v in statefulset["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    return found


def container_port(container: dict, name: str) -> int:
    [port] = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return port


def pod_config(statefulset: dict, pod_name: str, data_dir: Path):
    """The configuration the node in pod ``pod_name`` reads at start, with
    DATA_DIR (checked to be the claim's mount) moved to ``data_dir``."""
    container = node_container(statefulset)
    env = environment(container, pod_name)
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert env["DATA_DIR"] == mount(container, claim["metadata"]["name"])["mountPath"]
    return CONFIGS[role_of(container)].from_env({**env, "DATA_DIR": str(data_dir)})


def statefulsets() -> list[dict]:
    return [m for m in manifests() if m["kind"] == "StatefulSet"]


# -- the kustomization ---------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_only_existing_ones():
    config = kustomization()
    assert (config["apiVersion"], config["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    # Kustomize rejects unknown fields; these are the ones this file may use.
    assert set(config) <= {"apiVersion", "kind", "namespace", "resources", "secretGenerator", "images"}
    listed = config["resources"]
    assert len(listed) == len(set(listed))
    assert all((KUBERNETES / name).is_file() for name in listed), listed
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def test_every_object_is_in_the_kustomization_namespace():
    namespace = kustomization()["namespace"]
    for manifest in manifests():
        if manifest["kind"] == "Namespace":
            assert manifest["metadata"]["name"] == namespace
        else:
            assert manifest["metadata"]["namespace"] == namespace, manifest["metadata"]
    assert the("Namespace", namespace)


# -- the schemas ---------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve a name or open a connection fails the test."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("the validation tried to use the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly_offline(no_network, version):
    checked = []
    for manifest in manifests():
        # Raises on any schema error, on an unknown field, and for a kind it
        # has no schema for.
        assert kubernetes_validate.validate(manifest, version, strict=True) == version
        checked.append(manifest["kind"])
    assert sorted(checked) == sorted(
        ["Namespace", "Service", "Service", "StatefulSet", "StatefulSet", "NetworkPolicy"]
    )


@pytest.mark.parametrize("spoil", [
    lambda s: s["spec"].update(replica=1),  # misspelt
    lambda s: s["spec"].update(replicas="one"),
    lambda s: node_container(s)["livenessProbe"]["httpGet"].update(paht="/health"),
    lambda s: node_container(s)["env"].append({"name": "X", "valu": "1"}),
])
def test_the_strict_validation_catches_a_spoilt_manifest(spoil):
    manifest = copy.deepcopy(the(*PRIMARY))
    spoil(manifest)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)


# -- the objects agree with each other ------------------------------------------


def test_each_service_and_policy_selects_the_pods_it_means():
    def labels(statefulset) -> dict:
        return statefulset["spec"]["template"]["metadata"]["labels"]

    primary, secondaries = the(*PRIMARY), the(*SECONDARIES)
    for statefulset in (primary, secondaries):
        selector = statefulset["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels(statefulset).items()
        assert the("Service", statefulset["spec"]["serviceName"])
    assert the("Service", "primary")["spec"]["selector"] == labels(primary)
    headless = the("Service", secondaries["spec"]["serviceName"])
    assert headless["spec"]["selector"] == labels(secondaries)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True  # reachable while starting
    assert labels(primary) != labels(secondaries)


def test_only_the_primary_may_reach_the_replication_port():
    secondaries = the(*SECONDARIES)
    replication = container_port(node_container(secondaries), "replication")
    http = container_port(node_container(secondaries), "http")
    [policy] = [m for m in manifests() if m["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == secondaries["spec"]["template"]["metadata"]["labels"]
    assert spec["policyTypes"] == ["Ingress"]
    by_port = {port["port"]: rule for rule in spec["ingress"] for port in rule["ports"]}
    assert set(by_port) == {replication, http}
    primary_labels = the(*PRIMARY)["spec"]["template"]["metadata"]["labels"]
    assert by_port[replication]["from"] == [{"podSelector": {"matchLabels": primary_labels}}]
    assert "from" not in by_port[http]  # reads and the kubelet's probes
    assert the("Service", "primary")["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert [p["port"] for p in the("Service", "primary")["spec"]["ports"]] == [http]


# -- the nodes' configuration contract ------------------------------------------


@pytest.mark.parametrize("workload", [PRIMARY, SECONDARIES])
def test_every_variable_a_node_gets_is_a_setting_of_its_role(workload):
    statefulset = the(*workload)
    container = node_container(statefulset)
    declared = {s.variable for s in declared_settings(CONFIGS[role_of(container)])}
    names = [variable["name"] for variable in container["env"]]
    assert len(names) == len(set(names))
    assert set(names) <= declared, set(names) - declared
    # Kubernetes adds no variables of its own (FOO_SERVICE_HOST, FOO_PORT).
    assert statefulset["spec"]["template"]["spec"]["enableServiceLinks"] is False


@pytest.mark.parametrize("workload", [PRIMARY, SECONDARIES])
def test_every_pod_configuration_parses(workload, tmp_path):
    statefulset = the(*workload)
    for pod in pod_names(statefulset):
        config = pod_config(statefulset, pod, tmp_path / pod)
        assert config.node_name == ("primary" if workload == PRIMARY else pod)
        assert config.log_format == "json"


def test_secondaries_names_exactly_the_secondaries_pods_by_their_dns_names(tmp_path):
    primary, secondaries = the(*PRIMARY), the(*SECONDARIES)
    config = pod_config(primary, "primary-0", tmp_path / "primary")
    assert primary["spec"]["replicas"] == 1
    service = secondaries["spec"]["serviceName"]
    pods = pod_names(secondaries)
    assert len(pods) >= 2
    assert [spec.name for spec in config.secondaries] == pods
    for spec, pod in zip(config.secondaries, pods):
        port = pod_config(secondaries, pod, tmp_path / pod).replication_bind.rsplit(":", 1)[1]
        assert spec.endpoint == f"tcp://{pod}.{service}:{port}"


def test_the_ports_are_the_nodes_defaults(tmp_path):
    primary, secondaries = the(*PRIMARY), the(*SECONDARIES)
    primary_config = pod_config(primary, "primary-0", tmp_path / "p")
    secondary_config = pod_config(secondaries, "secondary-0", tmp_path / "s")
    assert primary_config.http_port == PrimaryConfig().http_port == 8000
    assert secondary_config.http_port == SecondaryConfig().http_port == 8000
    assert secondary_config.replication_bind == SecondaryConfig().replication_bind == "tcp://0.0.0.0:5555"
    assert container_port(node_container(primary), "http") == 8000
    assert container_port(node_container(secondaries), "http") == 8000
    assert container_port(node_container(secondaries), "replication") == 5555
    assert {p.get("name") for p in node_container(primary)["ports"]} == {"http"}  # no replication port
    service_ports = {p["name"]: (p["port"], p["targetPort"])
                     for p in the("Service", secondaries["spec"]["serviceName"])["spec"]["ports"]}
    assert service_ports == {"http": (8000, "http"), "replication": (5555, "replication")}
    assert the("Service", "primary")["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http"}]


def test_the_secondaries_link_to_the_primary_where_the_documented_port_forward_puts_it(tmp_path):
    config = pod_config(the(*SECONDARIES), "secondary-0", tmp_path / "s")
    [service_port] = the("Service", "primary")["spec"]["ports"]
    forward = f"port-forward service/primary {service_port['port']}:{service_port['port']}"
    assert forward in (REPO / "docs" / "deployment.md").read_text()
    assert config.primary_url == f"http://127.0.0.1:{service_port['port']}"


@pytest.mark.parametrize("workload", [PRIMARY, SECONDARIES])
def test_data_dir_is_the_mount_of_the_pods_own_claim(workload):
    statefulset = the(*workload)
    container = node_container(statefulset)
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    data = mount(container, claim["metadata"]["name"])
    assert environment(container, "any")["DATA_DIR"] == data["mountPath"] == "/data"
    assert not data.get("readOnly", False)
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # A claim per pod: no shared volume of that name in the pod template.
    assert claim["metadata"]["name"] not in {v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]}


@pytest.mark.parametrize("workload", [PRIMARY, SECONDARIES])
@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_the_probes_ask_health_on_the_http_port(workload, probe):
    container = node_container(the(*workload))
    check = container[probe]["httpGet"]
    assert check["path"] == "/health"
    assert container_port(container, check["port"]) == 8000
    openapi = json.loads((REPO / "docs" / "openapi" / f"{role_of(container)}.json").read_text())
    assert "get" in openapi["paths"]["/health"]


def test_every_container_runs_the_image_built_from_the_dockerfile_as_its_user():
    [image] = kustomization()["images"]
    assert image["name"] == IMAGE
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "deployment" / "Dockerfile").read_text(), re.M)
    for statefulset in statefulsets():
        pod = statefulset["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(user[1])
        assert pod["securityContext"]["runAsGroup"] == pod["securityContext"]["fsGroup"] == int(user[2])
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"] + pod["initContainers"]:
            assert container["image"] == IMAGE
            # The "restricted" Pod Security Standard, which namespace.yaml enforces.
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


# -- the keys --------------------------------------------------------------------


def node_names() -> list[str]:
    """Every node's NODE_NAME: the primary's, then each secondary pod's."""
    primary = environment(node_container(the(*PRIMARY)), "primary-0")["NODE_NAME"]
    return [primary, *pod_names(the(*SECONDARIES))]


def test_the_secret_holds_a_pair_per_node_and_every_pod_mounts_it():
    [generator] = kustomization()["secretGenerator"]
    expected = [f"keys/{name}{suffix}" for name in node_names() for suffix in (".key", ".key_secret")]
    assert generator["files"] == expected
    for statefulset in statefulsets():
        source = volume(statefulset, "all-keys")
        assert source["secret"]["secretName"] == generator["name"]
        assert source["secret"]["defaultMode"] == 0o440
        assert volume(statefulset, "keys")["emptyDir"]["medium"] == "Memory"
        node, keys = node_container(statefulset), keys_container(statefulset)
        # Only the init container sees the whole Secret.
        assert "all-keys" not in {m["name"] for m in node["volumeMounts"]}
        pod = pod_names(statefulset)[-1]
        keys_dir = environment(node, pod)["REPLICATION_KEYS_DIR"]
        assert mount(node, "keys") == {"name": "keys", "mountPath": keys_dir, "readOnly": True}
        assert mount(keys, "keys")["mountPath"] == keys_dir
        assert environment(keys, pod) == {"NODE_NAME": environment(node, pod)["NODE_NAME"],
                                          "REPLICATION_KEYS_DIR": keys_dir}
        assert keys["command"][-1] == mount(keys, "all-keys")["mountPath"]


def test_the_keys_folder_is_never_committed():
    ignored = (KUBERNETES / "keys" / ".gitignore").read_text().split()
    assert "*" in ignored


def run_keys_init_container(statefulset: dict, pod: str, secret: Path, keys_dir: Path):
    """The init container's command, with its two folders moved to ``secret``
    (the Secret's mount) and ``keys_dir`` (REPLICATION_KEYS_DIR)."""
    container = keys_container(statefulset)
    command = [*container["command"][:-1], str(secret)]
    env = {**environment(container, pod), "REPLICATION_KEYS_DIR": str(keys_dir),
           "PATH": os.environ["PATH"]}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture
def secret(tmp_path) -> Path:
    """What the Secret's volume holds: every node's pair, from python -m shared.keys."""
    from shared.wire.keys import create_pairs

    folder = tmp_path / "secret"
    create_pairs(folder, node_names())
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted(Path(f).name for f in kustomization()["secretGenerator"][0]["files"])
    return folder


@pytest.mark.parametrize("workload", [PRIMARY, SECONDARIES])
def test_each_node_gets_its_own_secret_key_and_the_public_keys_it_reads(workload, secret, tmp_path):
    from shared.wire import curve

    statefulset = the(*workload)
    for pod in pod_names(statefulset):
        keys_dir = tmp_path / pod / "keys"
        keys_dir.mkdir(parents=True)
        result = run_keys_init_container(statefulset, pod, secret, keys_dir)
        assert result.returncode == 0, result.stderr
        config = pod_config(statefulset, pod, tmp_path / pod / "data")
        publics = {f"{name}.key" for name in node_names()}
        assert {p.name for p in keys_dir.iterdir()} == {f"{config.node_name}.key_secret", *publics}
        assert stat.S_IMODE((keys_dir / f"{config.node_name}.key_secret").stat().st_mode) == 0o600
        # What the node loads at start, from REPLICATION_KEYS_DIR moved here.
        if workload == PRIMARY:
            channel = curve.load_client(str(keys_dir), config.node_name, [s.name for s in config.secondaries])
        else:
            assert config.primary_name == node_names()[0]
            channel = curve.load_server(str(keys_dir), config.node_name, config.primary_name)
        assert channel is not curve.PLAIN


def test_a_pod_without_its_pair_in_the_secret_does_not_start(secret, tmp_path):
    secondaries = the(*SECONDARIES)
    pod = pod_names(secondaries)[-1]
    (secret / f"{pod}.key_secret").unlink()
    result = run_keys_init_container(secondaries, pod, secret, tmp_path)
    assert result.returncode != 0 and f"{pod}.key_secret" in result.stderr
