"""deployment/kubernetes/, the failover cluster, without a cluster, which these
machines cannot run.

Every manifest is validated offline, strictly (no unknown field), against the
Kubernetes schemas that kubernetes-validate ships. Then the manifests are held
to each other and to the nodes' configuration contract, as each pod would see
them (the downward API and Kubernetes' ``$(VAR)`` expansion applied): PEERS
names exactly the StatefulSet's pods, through its headless Service, on the
port each binds and the Service carries; ADVERTISED_URL is the pod's own
stable name and HTTP port; the Secret holds a key pair per pod, and the init
container's copy is run for real; the PodDisruptionBudget leaves a majority;
the readiness probe is run for real against nodes' own /health. A change to
one side alone (replicas without PEERS, a port, a name) fails here: see
``test_a_drifted_manifest_fails_the_membership_check``. Kustomize is not
available either: the kustomization is read as data and every file it lists
is checked. The fixed-role layout in fixed-role/ has its own tests
(tests/unit/test_kubernetes.py).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import kubernetes_validate
import pytest
import yaml

from shared.consensus.quorum import majority
from shared.node.config import FailoverConfig, Peer
from shared.node.main import build
from shared.runtime.config import declared_settings
from tests.support.processes import REPO
from tests.support.waiting import wait_until

KUBERNETES = REPO / "deployment" / "kubernetes"
#: The oldest and the newest Kubernetes whose schemas the pinned
#: kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.25", "1.37")
IMAGE = "replicated-log"
#: The cluster DNS domain the stable names are spelt with.
CLUSTER_DOMAIN = "cluster.local"
#: The one variable a node gets that is not one of its settings: it is only
#: spelt into others, as $(POD_NAMESPACE).
NAMESPACE_VARIABLE = "POD_NAMESPACE"
DOWNWARD = {"metadata.name", "metadata.namespace"}


# -- reading the manifests -----------------------------------------------------


def kustomization() -> dict:
    return yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())


def manifests() -> list[dict]:
    """Every object of every file the kustomization lists, in its order."""
    objects = []
    for name in kustomization()["resources"]:
        objects += [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]
    return objects


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    """The one object of ``kind`` (named ``name``, when given)."""
    [found] = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def node_container(statefulset: dict) -> dict:
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def keys_container(statefulset: dict) -> dict:
    [container] = statefulset["spec"]["template"]["spec"]["initContainers"]
    return container


def pod_labels(statefulset: dict) -> dict:
    return statefulset["spec"]["template"]["metadata"]["labels"]


def pod_names(statefulset: dict) -> list[str]:
    name = statefulset["metadata"]["name"]
    return [f"{name}-{ordinal}" for ordinal in range(statefulset["spec"]["replicas"])]


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' expansion of an env value: ``$(VAR)`` becomes the value of
    a variable defined earlier in the list, ``$$`` a ``$``; a reference to
    anything else stays as it is written."""
    def replace(match: re.Match) -> str:
        if match[0] == "$$":
            return "$"
        return defined.get(match[1], match[0])

    return _REFERENCE.sub(replace, value)


def environment(container: dict, pod: str, namespace: str) -> dict[str, str]:
    """The container's variables as its pod ``pod`` in ``namespace`` sees them."""
    downward = {"metadata.name": pod, "metadata.namespace": namespace}
    env: dict[str, str] = {}
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = expand(variable["value"], env)
        else:
            assert set(variable["valueFrom"]) == {"fieldRef"}, variable
            env[variable["name"]] = downward[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    unexpanded = {name: value for name, value in env.items() if "$(" in value}
    assert not unexpanded, f"a $(VAR) refers to no variable defined before it: {unexpanded}"
    return env


def mount(container: dict, volume: str) -> dict:
    [found] = [m for m in container["volumeMounts"] if m["name"] == volume]
    return found


def volume(statefulset: dict, name: str) -> dict:
    [found] = [v for v in statefulset["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    return found


def container_port(container: dict, name: str) -> int:
    [port] = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return port


def service_port(service: dict, name: str, container: dict) -> int:
    """The Service's port ``name``, checked to reach the container's port of that name."""
    [port] = [p for p in service["spec"]["ports"] if p["name"] == name]
    target = port["targetPort"]
    assert (container_port(container, target) if isinstance(target, str) else target) \
        == container_port(container, name), port
    return port["port"]


def pod_env(statefulset: dict, pod: str) -> dict[str, str]:
    return environment(node_container(statefulset), pod, statefulset["metadata"]["namespace"])


def pod_config(statefulset: dict, pod: str, data_dir: Path) -> FailoverConfig:
    """The configuration the node in pod ``pod`` reads at start, with DATA_DIR
    (checked to be the claim's mount) moved to ``data_dir``, which parsing
    creates."""
    container = node_container(statefulset)
    env = pod_env(statefulset, pod)
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert env["DATA_DIR"] == mount(container, claim["metadata"]["name"])["mountPath"]
    assert env["PEERS"].strip(), "without PEERS a node runs a fixed role, not failover"
    return FailoverConfig.from_env({**env, "DATA_DIR": str(data_dir)})


def stable_name(statefulset: dict, pod: str) -> str:
    """The pod's DNS name through the StatefulSet's headless Service."""
    service = statefulset["spec"]["serviceName"]
    return f"{pod}.{service}.{statefulset['metadata']['namespace']}.svc.{CLUSTER_DOMAIN}"


@pytest.fixture
def objects() -> list[dict]:
    return manifests()


@pytest.fixture
def statefulset(objects) -> dict:
    return find(objects, "StatefulSet")


# -- the kustomization -----------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_only_existing_ones():
    config = kustomization()
    assert (config["apiVersion"], config["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    # Kustomize rejects unknown fields; these are the ones this file may use.
    assert set(config) <= {"apiVersion", "kind", "namespace", "resources", "secretGenerator", "images"}
    listed = config["resources"]
    assert len(listed) == len(set(listed))
    assert all((KUBERNETES / name).is_file() for name in listed), listed
    # fixed-role/ is a kustomization of its own, never part of this one.
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk
    assert (KUBERNETES / "fixed-role" / "kustomization.yaml").is_file()
    assert kustomization()["namespace"] != yaml.safe_load(
        (KUBERNETES / "fixed-role" / "kustomization.yaml").read_text())["namespace"]


def test_every_object_is_in_the_kustomization_namespace(objects):
    namespace = kustomization()["namespace"]
    for manifest in objects:
        if manifest["kind"] == "Namespace":
            assert manifest["metadata"]["name"] == namespace
        else:
            assert manifest["metadata"]["namespace"] == namespace, manifest["metadata"]
    assert find(objects, "Namespace", namespace)


# -- the schemas -----------------------------------------------------------------


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
        ["Namespace", "Service", "Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"]
    )


@pytest.mark.parametrize("spoil", [
    lambda s: s["spec"].update(podManagementPolicy=["Parallel"]),  # a list, not a string
    lambda s: s["spec"].update(replica=3),  # misspelt
    lambda s: node_container(s)["readinessProbe"]["exec"].update(comand=["true"]),
    lambda s: node_container(s)["env"].append({"name": "X", "valueFrom": {"fieldRef": {"fieldpath": "a"}}}),
])
def test_the_strict_validation_catches_a_spoilt_manifest(statefulset, spoil):
    manifest = copy.deepcopy(statefulset)
    spoil(manifest)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)


# -- the membership: PEERS, the pods, the headless Service ---------------------


def check_membership(objects: list[dict], data_root: Path) -> None:
    """PEERS of every pod names exactly the StatefulSet's ``replicas`` pods, in
    ordinal order, each by its stable name in the headless Service, on the
    port its REPLICATION_BIND binds and the Service carries; ADVERTISED_URL is
    the pod's own stable name on its HTTP port. Raises AssertionError (or
    ConfigError, for a value no node would start with) otherwise."""
    statefulset = find(objects, "StatefulSet")
    container = node_container(statefulset)
    headless = find(objects, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"].get("clusterIP") == "None"
    assert headless["spec"]["selector"] == pod_labels(statefulset)
    replication = service_port(headless, "replication", container)
    http = service_port(headless, "http", container)
    pods = pod_names(statefulset)
    assert len(pods) >= 3 and len(pods) % 2 == 1, "an odd cluster of at least three"
    for pod in pods:
        config = pod_config(statefulset, pod, data_root / pod)
        assert config.node_name == pod
        bound = config.replication_bind.rsplit(":", 1)[1]
        assert int(bound) == replication == container_port(container, "replication")
        assert config.http_port == http == container_port(container, "http")
        assert [peer.name for peer in config.peers] == pods
        assert [peer.endpoint for peer in config.peers] == [
            f"tcp://{stable_name(statefulset, peer)}:{replication}" for peer in pods]
        assert config.advertised_url == f"http://{stable_name(statefulset, pod)}:{http}"
        assert config.public_url == config.advertised_url
        # The same membership on every pod.
        assert config.peers == pod_config(statefulset, pods[0], data_root / pods[0]).peers


def test_peers_names_exactly_the_statefulset_pods_through_the_headless_service(objects, statefulset, tmp_path):
    check_membership(objects, tmp_path)
    # What it checks, spelt out once for the manifests as they are.
    config = pod_config(statefulset, "replica-1", tmp_path / "replica-1")
    assert statefulset["spec"]["replicas"] == 3
    assert [f"{p.name}={p.endpoint}" for p in config.peers] == [
        f"replica-{n}=tcp://replica-{n}.replicas.replicated-log.svc.cluster.local:5555" for n in range(3)]
    assert config.advertised_url == "http://replica-1.replicas.replicated-log.svc.cluster.local:8000"
    assert config.replication_bind == "tcp://0.0.0.0:5555"


def test_the_stable_names_follow_the_namespace_the_pods_are_put_in(statefulset, tmp_path):
    moved = copy.deepcopy(statefulset)
    moved["metadata"]["namespace"] = "elsewhere"  # what kustomize's namespace: does
    config = pod_config(moved, "replica-2", tmp_path / "replica-2")
    assert config.peers[0].endpoint == "tcp://replica-0.replicas.elsewhere.svc.cluster.local:5555"
    assert config.advertised_url == "http://replica-2.replicas.elsewhere.svc.cluster.local:8000"


def _env(statefulset: dict, name: str) -> dict:
    [variable] = [v for v in node_container(statefulset)["env"] if v["name"] == name]
    return variable


def _headless(objects: list[dict]) -> dict:
    return find(objects, "Service", find(objects, "StatefulSet")["spec"]["serviceName"])


def _port(service: dict, name: str) -> dict:
    [port] = [p for p in service["spec"]["ports"] if p["name"] == name]
    return port


@pytest.mark.parametrize("drift", [
    pytest.param(lambda o: find(o, "StatefulSet")["spec"].update(replicas=5), id="replicas-without-peers"),
    pytest.param(lambda o: _env(find(o, "StatefulSet"), "PEERS").update(
        value=_env(find(o, "StatefulSet"), "PEERS")["value"].rsplit(",", 1)[0]), id="a-peer-dropped"),
    pytest.param(lambda o: _env(find(o, "StatefulSet"), "PEERS").update(
        value=_env(find(o, "StatefulSet"), "PEERS")["value"].replace("replica-2=", "replica-3=")),
        id="a-peer-misnamed"),
    pytest.param(lambda o: _env(find(o, "StatefulSet"), "PEERS").update(
        value=_env(find(o, "StatefulSet"), "PEERS")["value"].replace(".replicas.", ".nodes.")),
        id="peers-through-another-service"),
    pytest.param(lambda o: _env(find(o, "StatefulSet"), "PEERS").update(
        value=_env(find(o, "StatefulSet"), "PEERS")["value"].replace("$(POD_NAMESPACE)", "default")),
        id="peers-in-another-namespace"),
    pytest.param(lambda o: find(o, "StatefulSet")["spec"].update(serviceName="api"), id="service-name"),
    pytest.param(lambda o: _env(find(o, "StatefulSet"), "REPLICATION_BIND").update(value="tcp://0.0.0.0:5556"),
                 id="replication-bind-port"),
    pytest.param(lambda o: _port(_headless(o), "replication").update(port=5556), id="service-port"),
    pytest.param(lambda o: _port(_headless(o), "http").update(targetPort=8080), id="service-target-port"),
    pytest.param(lambda o: _env(find(o, "StatefulSet"), "ADVERTISED_URL").update(
        value="http://$(NODE_NAME).replicas.$(POD_NAMESPACE).svc.cluster.local:8080"), id="advertised-port"),
    pytest.param(lambda o: _env(find(o, "StatefulSet"), "ADVERTISED_URL").update(
        value="http://$(NODE_NAME):8000"), id="advertised-short-name"),
    pytest.param(lambda o: find(o, "StatefulSet")["metadata"].update(name="node"), id="statefulset-renamed"),
])
def test_a_drifted_manifest_fails_the_membership_check(objects, drift, tmp_path):
    drifted = copy.deepcopy(objects)
    drift(drifted)
    with pytest.raises(Exception) as raised:
        check_membership(drifted, tmp_path)
    assert raised.type.__name__ in ("AssertionError", "ConfigError"), raised.value


def test_all_pods_start_together_as_identical_failover_nodes(statefulset):
    spec = statefulset["spec"]
    # OrderedReady would wait for replica-0 to be ready, which needs a primary,
    # which needs a majority of pods: it would never make the second one.
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["selector"]["matchLabels"].items() <= pod_labels(statefulset).items()
    # One template: every pod runs the same command (a fresh cluster's
    # `python -m primary` cannot be given to one pod alone).
    assert node_container(statefulset)["command"] == ["python", "-m", "secondary"]


def test_every_variable_a_node_gets_is_a_failover_setting(statefulset):
    container = node_container(statefulset)
    declared = {s.variable for s in declared_settings(FailoverConfig)}
    names = [variable["name"] for variable in container["env"]]
    assert len(names) == len(set(names))
    assert set(names) - declared == {NAMESPACE_VARIABLE}
    for variable in container["env"]:
        if "valueFrom" in variable:
            assert variable["valueFrom"]["fieldRef"]["fieldPath"] in DOWNWARD
    assert _env(statefulset, "NODE_NAME")["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert _env(statefulset, NAMESPACE_VARIABLE)["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # POD_NAMESPACE is only ever spelt into other values.
    assert any(f"$({NAMESPACE_VARIABLE})" in v.get("value", "") for v in container["env"])
    # Kubernetes adds no variables of its own (FOO_SERVICE_HOST, FOO_PORT).
    assert statefulset["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_every_pod_configuration_parses(statefulset, tmp_path):
    for pod in pod_names(statefulset):
        config = pod_config(statefulset, pod, tmp_path / pod)
        assert config.node_name == pod
        assert config.log_format == "json"
        assert config.replication_keys_dir == "/keys"
        assert config.majority == 2


def test_data_dir_is_the_mount_of_the_pods_own_claim(statefulset):
    container = node_container(statefulset)
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    data = mount(container, claim["metadata"]["name"])
    assert pod_env(statefulset, "replica-0")["DATA_DIR"] == data["mountPath"] == "/data"
    assert not data.get("readOnly", False)
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # A claim per pod: no shared volume of that name in the pod template.
    assert claim["metadata"]["name"] not in {v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]}


# -- the Services, the budget, the policy --------------------------------------


def test_the_headless_service_lists_every_pod_ready_or_not(objects, statefulset):
    headless = _headless(objects)
    assert headless["spec"]["clusterIP"] == "None"
    # A pod is ready only once a primary is elected; the election needs the
    # names of pods that are not ready yet.
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"] == pod_labels(statefulset)


def test_the_client_service_sends_to_every_ready_pod_on_its_http_port(objects, statefulset, tmp_path):
    [client] = [s for s in objects if s["kind"] == "Service" and s is not _headless(objects)]
    spec = client["spec"]
    assert spec["selector"] == pod_labels(statefulset)  # every pod: appends are forwarded
    assert spec.get("type", "ClusterIP") == "ClusterIP" and spec.get("clusterIP") != "None"
    assert not spec.get("publishNotReadyAddresses", False)  # ready ones only
    container = node_container(statefulset)
    assert [p["name"] for p in spec["ports"]] == ["http"]  # never the replication port
    assert service_port(client, "http", container) == pod_config(statefulset, "replica-0", tmp_path).http_port
    # The port forward the docs show reaches it.
    forward = f"port-forward service/{client['metadata']['name']} 8000:{spec['ports'][0]['port']}"
    assert forward in (REPO / "docs" / "deployment.md").read_text()


def test_the_disruption_budget_evicts_one_pod_at_a_time_and_leaves_a_majority(objects, statefulset):
    budget = find(objects, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    spec = budget["spec"]
    assert spec["selector"] == statefulset["spec"]["selector"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels(statefulset).items()
    assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec
    replicas = statefulset["spec"]["replicas"]
    assert replicas - spec["maxUnavailable"] >= majority(replicas)


def test_only_the_clusters_own_pods_may_reach_the_replication_port(objects, statefulset):
    container = node_container(statefulset)
    replication, http = container_port(container, "replication"), container_port(container, "http")
    spec = find(objects, "NetworkPolicy")["spec"]
    assert spec["podSelector"]["matchLabels"] == pod_labels(statefulset)
    assert spec["policyTypes"] == ["Ingress"]
    by_port = {port["port"]: rule for rule in spec["ingress"] for port in rule["ports"]}
    assert set(by_port) == {replication, http}
    # A podSelector alone: pods of this namespace with these labels.
    assert by_port[replication]["from"] == [{"podSelector": {"matchLabels": pod_labels(statefulset)}}]
    assert "from" not in by_port[http]  # clients, forwarded appends, the kubelet's probes


def test_the_pods_prefer_separate_machines(statefulset):
    [term] = statefulset["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == pod_labels(statefulset)


# -- the probes ------------------------------------------------------------------


def health_url(statefulset: dict) -> str:
    return f"http://127.0.0.1:{container_port(node_container(statefulset), 'http')}/health"


def test_liveness_and_startup_ask_health_on_the_http_port(statefulset, tmp_path):
    container = node_container(statefulset)
    for probe in ("startupProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health"
        assert container_port(container, check["port"]) == pod_config(statefulset, "replica-0", tmp_path).http_port
    openapi = (REPO / "docs" / "openapi" / "failover.json").read_text()
    assert '"/health"' in openapi and '"primary"' in openapi


def test_readiness_runs_python_that_reads_this_nodes_health(statefulset):
    probe = node_container(statefulset)["readinessProbe"]
    python, flag, script = probe["exec"]["command"]
    assert (python, flag) == ("python", "-c")
    assert script.count(health_url(statefulset)) == 1
    compile(script, "readinessProbe", "exec")
    # Its own HTTP timeout ends before the kubelet gives up on it.
    assert re.search(r"timeout=(\d+)", script) and int(re.search(r"timeout=(\d+)", script)[1]) \
        < probe["timeoutSeconds"]


def run_readiness_probe(statefulset: dict, url: str) -> subprocess.CompletedProcess:
    """The readiness probe's command, run as the kubelet would, against ``url``
    (a node's /health) instead of 127.0.0.1:8000."""
    probe = node_container(statefulset)["readinessProbe"]
    _python, flag, script = probe["exec"]["command"]
    return subprocess.run([sys.executable, flag, script.replace(health_url(statefulset), url)],
                          capture_output=True, text=True, timeout=probe["timeoutSeconds"] + 10)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *_args) -> None:
        pass


class ServedNode:
    """The failover node of one pod, as the manifest configures it, inside the
    test process: its replication over inproc, its real HTTP app served on
    127.0.0.1."""

    def __init__(self, ctx, statefulset: dict, pod: str, run: str, data_dir: Path) -> None:
        base = pod_config(statefulset, pod, data_dir)
        peers = tuple(Peer(peer.name, f"inproc://{peer.name}-{run}") for peer in base.peers)
        self.server = make_server("127.0.0.1", 0, lambda e, s: self.app(e, s), handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        config = dataclasses.replace(
            base, peers=peers, replication_bind=f"inproc://{pod}-{run}", replication_keys_dir="",
            election_timeout=0.3, heartbeat_interval=0.05, advertised_url=self.url, public_url=self.url)
        service = build(config, ctx, stands_at_once=False)
        self.io, self.app = service.io_thread, service.app
        self.io.start()
        self.serving = threading.Thread(target=self.server.serve_forever, name=f"http-{pod}", daemon=True)
        self.serving.start()

    @property
    def health_url(self) -> str:
        return f"{self.url}/health"

    def primary(self) -> str | None:
        return self.io.state.primary

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.io.stop()


@pytest.fixture
def serve(ctx, statefulset, tmp_path):
    run = uuid.uuid4().hex
    served: list[ServedNode] = []

    def start(pod: str) -> ServedNode:
        served.append(ServedNode(ctx, statefulset, pod, run, tmp_path / pod))
        return served[-1]

    yield start
    for node in served:
        node.stop()


def test_readiness_fails_while_the_node_knows_no_primary(statefulset, serve):
    # One pod of three: it can never gather a majority, so no primary is known.
    alone = serve("replica-0")
    result = run_readiness_probe(statefulset, alone.health_url)
    assert result.returncode != 0
    assert "no primary known" in result.stderr and "term" in result.stderr
    assert alone.primary() is None


def test_readiness_succeeds_on_the_primary_and_on_every_node_that_follows_it(statefulset, serve):
    nodes = [serve(pod) for pod in pod_names(statefulset)]

    def elected():
        known = {node.primary() for node in nodes}
        return len(known) == 1 and None not in known and known.pop()

    primary = wait_until(elected, 15, what="one primary that every node follows")
    assert primary in pod_names(statefulset)
    for node in nodes:
        result = run_readiness_probe(statefulset, node.health_url)
        assert result.returncode == 0, result.stderr


def test_readiness_fails_when_nothing_answers():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    statefulset = find(manifests(), "StatefulSet")
    result = run_readiness_probe(statefulset, f"http://127.0.0.1:{port}/health")
    assert result.returncode != 0


# -- the image and the Pod Security Standard -----------------------------------


def test_every_container_runs_the_image_built_from_the_dockerfile_as_its_user(statefulset):
    [image] = kustomization()["images"]
    assert image["name"] == IMAGE
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "deployment" / "Dockerfile").read_text(), re.M)
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
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert find(manifests(), "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# -- the keys ----------------------------------------------------------------------


def check_keys(objects: list[dict], generator: dict) -> None:
    """The Secret's generator holds a pair per pod, in pod order, and every
    pod mounts that Secret, for its init container alone."""
    statefulset = find(objects, "StatefulSet")
    expected = [f"keys/{pod}{suffix}" for pod in pod_names(statefulset) for suffix in (".key", ".key_secret")]
    assert generator["files"] == expected
    source = volume(statefulset, "all-keys")
    assert source["secret"]["secretName"] == generator["name"]
    assert source["secret"]["defaultMode"] == 0o440
    assert volume(statefulset, "keys")["emptyDir"]["medium"] == "Memory"
    node, keys = node_container(statefulset), keys_container(statefulset)
    # Only the init container sees the whole Secret.
    assert "all-keys" not in {m["name"] for m in node["volumeMounts"]}
    for pod in pod_names(statefulset):
        keys_dir = pod_env(statefulset, pod)["REPLICATION_KEYS_DIR"]
        assert mount(node, "keys") == {"name": "keys", "mountPath": keys_dir, "readOnly": True}
        assert mount(keys, "keys")["mountPath"] == keys_dir
        namespace = statefulset["metadata"]["namespace"]
        assert environment(keys, pod, namespace) == {"NODE_NAME": pod, "REPLICATION_KEYS_DIR": keys_dir}
    assert keys["command"][-1] == mount(keys, "all-keys")["mountPath"]


def test_the_secret_holds_a_pair_per_pod_and_every_pod_mounts_it(objects):
    [generator] = kustomization()["secretGenerator"]
    check_keys(objects, generator)


def test_more_replicas_without_their_keys_fail_the_key_check(objects):
    [generator] = kustomization()["secretGenerator"]
    find(objects, "StatefulSet")["spec"]["replicas"] = 5
    with pytest.raises(AssertionError):
        check_keys(objects, generator)


def test_the_keys_folder_is_never_committed():
    ignored = (KUBERNETES / "keys" / ".gitignore").read_text().split()
    assert "*" in ignored


def test_the_documented_keys_command_names_the_pods():
    pods = " ".join(pod_names(find(manifests(), "StatefulSet")))
    command = f"python -m shared.keys deployment/kubernetes/keys {pods}"
    assert command in (KUBERNETES / "kustomization.yaml").read_text()
    assert command in (REPO / "docs" / "deployment.md").read_text()


def run_keys_init_container(statefulset: dict, pod: str, secret: Path, keys_dir: Path):
    """The init container's command, with its two folders moved to ``secret``
    (the Secret's mount) and ``keys_dir`` (REPLICATION_KEYS_DIR)."""
    container = keys_container(statefulset)
    command = [*container["command"][:-1], str(secret)]
    env = {**environment(container, pod, statefulset["metadata"]["namespace"]),
           "REPLICATION_KEYS_DIR": str(keys_dir), "PATH": os.environ["PATH"]}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture
def secret(tmp_path, statefulset) -> Path:
    """What the Secret's volume holds: every pod's pair, from python -m shared.keys."""
    from shared.wire.keys import create_pairs

    folder = tmp_path / "secret"
    create_pairs(folder, pod_names(statefulset))
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted(Path(f).name for f in kustomization()["secretGenerator"][0]["files"])
    return folder


def test_each_node_gets_its_own_secret_key_and_every_peers_public_key(statefulset, secret, tmp_path):
    from shared.wire import curve

    pods = pod_names(statefulset)
    for pod in pods:
        keys_dir = tmp_path / pod / "keys"
        keys_dir.mkdir(parents=True)
        result = run_keys_init_container(statefulset, pod, secret, keys_dir)
        assert result.returncode == 0, result.stderr
        config = pod_config(statefulset, pod, tmp_path / pod / "data")
        assert {p.name for p in keys_dir.iterdir()} == {f"{pod}.key_secret", *(f"{p}.key" for p in pods)}
        assert stat.S_IMODE((keys_dir / f"{pod}.key_secret").stat().st_mode) == 0o600
        # What the node loads at start (shared.node.main), from
        # REPLICATION_KEYS_DIR moved here.
        channel = curve.load_peers(str(keys_dir), config.node_name, [peer.name for peer in config.others])
        assert channel is not curve.PLAIN


def test_a_pod_without_its_pair_in_the_secret_does_not_start(statefulset, secret, tmp_path):
    pod = pod_names(statefulset)[-1]
    (secret / f"{pod}.key_secret").unlink()
    result = run_keys_init_container(statefulset, pod, secret, tmp_path)
    assert result.returncode != 0 and f"{pod}.key_secret" in result.stderr
