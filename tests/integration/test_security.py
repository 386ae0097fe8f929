"""Security end to end, on real processes over 127.0.0.1: CurveZMQ on the
replication channel (REPLICATION_KEYS_DIR) and the HTTP bearer token (API_TOKEN)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid

import pytest
import zmq

from shared.consensus.raft_messages import Heartbeat
from shared.wire import frames
from tests.support.raw_peer import ENVELOPE, HandMadePrimary
from shared.wire.keys import create_pairs
from tests.support.http import get_health, get_messages, post_message, request
from tests.support.processes import REPO, Node
from tests.support.tcp_relay import TcpRelay
from tests.support.waiting import wait_until

FAST_HEARTBEAT_ENV = {"HEARTBEAT_INTERVAL": "0.1", "SUSPECT_AFTER": "2", "UNHEALTHY_AFTER": "5"}
TOKEN = "integration-token-7f3a"


@pytest.fixture
def keys(tmp_path):
    directory = tmp_path / "keys"
    create_pairs(directory, ["primary", "s1", "s2"])
    return directory


def keyed(keys, **env) -> dict[str, str]:
    return {"REPLICATION_KEYS_DIR": str(keys), **env}


def every_key_text(keys) -> list[str]:
    """Every public and secret key in ``keys``, as Z85 text."""
    found = []
    for path in keys.glob("*.key_secret"):
        public, secret = zmq.auth.load_certificate(path)
        found += [public.decode(), secret.decode()]
    return found


def assert_no_key_in_logs(cluster, keys) -> None:
    """Shut the cluster down, so that every line is written, and look for keys."""
    cluster.shutdown()
    for node in cluster.nodes:
        log = node.log()
        for key in every_key_text(keys):
            assert key not in log, f"{node.name} logged a key"


def ready(url: str) -> bool:
    """Recovery over: the primary takes appends without waiting."""
    return not get_health(url).get("recovering")


def test_with_keys_w3_appends_succeed_and_every_node_converges(make_cluster, keys):
    cluster = make_cluster({"s1": keyed(keys), "s2": keyed(keys)}, primary_env=keyed(keys))
    for n in range(5):
        response = post_message(cluster.primary.url, f"m{n}", w=3)
        assert response.status == 201, response.body
        assert response.json["acks"] == 3
    expected = [f"m{n}" for n in range(5)]
    for name in ("s1", "s2"):
        wait_until(lambda: get_messages(cluster[name].url) == expected, 10, what=f"{name} to converge")
    cluster.primary.wait_for_log("replication channel: CURVE")
    assert_no_key_in_logs(cluster, keys)
    for node in cluster.nodes:
        assert "unauthenticated" not in node.log(), node.name


def raw_client(ctx, endpoint: str, keypair=None, server_key=None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    if keypair is not None:
        sock.curve_publickey, sock.curve_secretkey = keypair
        sock.curve_serverkey = server_key
    sock.connect(endpoint)
    return sock


def test_a_raw_dealer_without_the_primary_s_key_gets_no_reply_and_changes_nothing(
    make_cluster, keys, ctx
):
    cluster = make_cluster({"s1": keyed(keys)}, primary_env=keyed(keys, **FAST_HEARTBEAT_ENV))
    assert post_message(cluster.primary.url, "genuine", w=2).status == 201
    s1 = cluster["s1"]
    s1_public = zmq.auth.load_certificate(keys / "s1.key")[0]
    forged = HandMadePrimary(None, term=99, cluster="forged-" + uuid.uuid4().hex[:20])
    intruders = {
        "a random key": zmq.curve_keypair(),  # first: ZAP logs this one, with its address
        "no key": None,
        "s1's own secret key": zmq.auth.load_certificate(keys / "s1.key_secret"),
        "s2's secret key": zmq.auth.load_certificate(keys / "s2.key_secret"),
    }
    for who, keypair in intruders.items():
        sock = raw_client(ctx, s1.replication_endpoint, keypair, s1_public)
        sock.send(frames.encode(forged.append_entries(0, "INJECTED"), ENVELOPE))
        sock.send(frames.encode(Heartbeat(forged.name, forged.term, 2, 0, 0, forged.cluster), ENVELOPE))
        assert not sock.poll(1000), f"{who}: got a reply"
        sock.close()
        assert get_messages(s1.url) == ["genuine"], who
    s1.wait_for_log("refused a replication peer at 127.0.0.1")
    # The real primary still gets through.
    assert post_message(cluster.primary.url, "still replicating", w=2).status == 201
    assert_no_key_in_logs(cluster, keys)
    assert "INJECTED" not in s1.log()


def test_a_primary_holding_a_wrong_key_for_s1_gets_no_ack_and_times_out(make_cluster, keys, tmp_path):
    wrong = tmp_path / "wrong-keys"
    shutil.copytree(keys, wrong)
    shutil.copy(keys / "s2.key", wrong / "s1.key")  # s1's name, s2's key
    cluster = make_cluster(
        {"s1": keyed(keys), "s2": keyed(keys)}, primary_env=keyed(wrong, **FAST_HEARTBEAT_ENV)
    )
    wait_until(lambda: ready(cluster.primary.url), 10, what="the primary to finish recovery")
    response = post_message(cluster.primary.url, "needs s1", w=3, timeout=1.5)
    assert response.status == 504, response.body
    assert response.json["acked_by"] == ["primary", "s2"]
    assert get_messages(cluster["s1"].url) == []
    wait_until(lambda: "not for this node's key (s1.key)" in cluster["s1"].log(), 10,
               what="s1 to log the refused handshake")
    cluster.primary.wait_for_log("no CURVE handshake with s1")
    assert_no_key_in_logs(cluster, keys)


@pytest.fixture
def nodes():
    """Nodes a test starts by hand; all stopped afterwards."""
    started: list[Node] = []
    yield started
    for node in started:
        if node.running:
            node.stop()


@pytest.mark.parametrize("secured", [False, True], ids=["plain", "curve"])
def test_a_message_never_crosses_the_wire_in_plain_text(tmp_path, keys, nodes, secured):
    env = keyed(keys) if secured else {}
    s1 = Node("secondary", "s1", tmp_path, env).start()
    nodes.append(s1)
    s1.wait_ready()
    relay = TcpRelay(s1.replication_endpoint)
    relay.start()
    try:
        primary = Node("primary", "primary", tmp_path, {**env, "SECONDARIES": f"s1={relay.endpoint}"})
        nodes.append(primary.start())
        primary.wait_ready()
        unique = f"wire-{uuid.uuid4().hex}"
        assert post_message(primary.url, unique, w=2).status == 201
        assert get_messages(s1.url) == [unique]
        carried = relay.carried
    finally:
        relay.stop()
    assert len(carried) > 100, "the relay should have carried the replication traffic"
    # The plain run shows what the check would catch; the CURVE run shows it never happens.
    assert (unique.encode() in carried) is not secured


@pytest.mark.parametrize("role, missing", [("secondary", "s1.key_secret"), ("primary", "s2.key")])
def test_a_node_lacking_a_key_file_exits_2_naming_it(keys, role, missing):
    (keys / missing).unlink()
    result = subprocess.run(
        [sys.executable, "-m", role], cwd=REPO, capture_output=True, text=True, timeout=30,
        env={"NO_COLOR": "1", "HTTP_HOST": "127.0.0.1", "HTTP_PORT": "0", "NODE_NAME":
             "s1" if role == "secondary" else "primary", "REPLICATION_BIND": "tcp://127.0.0.1:0",
             "SECONDARIES": "s1=tcp://127.0.0.1:9,s2=tcp://127.0.0.1:9",
             "REPLICATION_KEYS_DIR": str(keys)},
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "invalid configuration" in line]
    assert len(errors) == 1
    assert "REPLICATION_KEYS_DIR" in errors[0] and str(keys / missing) in errors[0]
    assert "Traceback" not in result.stderr and " ready: " not in result.stderr


def test_without_keys_each_node_warns_once_that_replication_is_unauthenticated(make_cluster):
    cluster = make_cluster({"s1": {}})
    cluster.shutdown()  # every line written
    for node in cluster.nodes:
        assert node.log().count("unauthenticated") == 1, node.name


def test_the_api_token_guards_data_and_never_shows(make_cluster, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cluster = make_cluster({"s1": {"API_TOKEN_FILE": str(token_file)}},
                           primary_env={"API_TOKEN": TOKEN})
    primary, s1 = cluster.primary.url, cluster["s1"].url
    right = {"Authorization": f"Bearer {TOKEN}"}
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        refused = post_message(primary, "nope", w=1, headers=headers)
        headers_seen = {name.lower(): value for name, value in refused.headers.items()}
        assert refused.status == 401 and headers_seen["www-authenticate"].startswith("Bearer")
        assert "error" in refused.json
        assert request("GET", f"{s1}/messages", headers=headers).status == 401
    accepted = post_message(primary, "yes", w=2, headers=right)
    assert accepted.status == 201, accepted.body
    assert request("GET", f"{s1}/messages", headers=right).json == {"messages": ["yes"], "first_id": 0}
    assert request("GET", f"{primary}/messages", headers=right).json == {"messages": ["yes"], "first_id": 0}
    for url in (primary, s1):
        assert request("GET", f"{url}/health").status == 200
        assert request("GET", f"{url}/openapi.json").status == 200
    cluster.shutdown()
    for node in cluster.nodes:
        assert TOKEN not in node.log(), node.name
