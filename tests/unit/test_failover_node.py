"""A failover cluster inside the test process: three nodes over inproc, their apps
through WebTest. Elections, appends, committed reads, keys and the document."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid

import pytest
import waitress
import webtest
import zmq
import zmq.auth

from shared.consensus.raft_messages import VoteRequest
from shared.log.node_log import open_log
from shared.node.forwarding import FORWARDED_BY
from shared.node.config import FailoverConfig, Peer
from shared.node.main import build
from shared.node.node_io import NodeIo
from shared.node.openapi import spec
from shared.runtime.config import DelayRange
from shared.wire import curve
from shared.wire.frames import Envelope, encode, frame_limit
from shared.wire.keys import create_pairs, public_file, secret_file
from tests.support.metrics import Scrape
from tests.support.waiting import wait_until

NAMES = ("n1", "n2", "n3")


class Node:
    """A failover node built as ``python -m primary`` with PEERS builds it (shared.node.main)."""

    def __init__(self, ctx, config: FailoverConfig, stands_at_once: bool) -> None:
        self.config = config
        self.service = service = build(config, ctx, stands_at_once)
        self.io = service.io_thread
        self.app = webtest.TestApp(service.app)
        self.io.start()

    def post(self, body: dict, status="*", headers=None):
        return self.app.post("/messages", json.dumps(body).encode(), headers=headers or {},
                             content_type="application/json", status=status, expect_errors=True)

    def health(self) -> dict:
        return self.app.get("/health").json


class Cluster:
    """Three nodes (those in ``running``) over inproc. The election timeout is
    generous: they share this process, and a test that asserts the term must
    not see an election that a busy machine provoked."""

    def __init__(self, ctx, tmp_path, running=NAMES, advertised: dict[str, str] | None = None,
                 **settings) -> None:
        """``advertised``: a node's ADVERTISED_URL, where the default's (never reached) will not do."""
        run = uuid.uuid4().hex
        peers = tuple(Peer(name, f"inproc://{name}-{run}") for name in NAMES)
        self.nodes: dict[str, Node] = {}
        for name in running:
            (tmp_path / name).mkdir()
            config = dataclasses.replace(
                FailoverConfig(), node_name=name, peers=peers, data_dir=str(tmp_path / name),
                replication_bind=peers[NAMES.index(name)].endpoint, election_timeout=1.0,
                heartbeat_interval=0.05, advertised_url=(advertised or {}).get(name, f"http://{name}:8000"),
                public_url=f"http://localhost:800{NAMES.index(name)}", **settings)
            self.nodes[name] = Node(ctx, config, stands_at_once=name == "n1")

    def primary(self) -> Node:
        def elected():
            roles = [n for n in self.nodes.values() if n.health()["role"] == "primary"]
            return roles[0] if len(roles) == 1 and all(
                n.health()["primary"] == roles[0].config.node_name for n in self.nodes.values()) else None
        return wait_until(elected, 10, what="one primary that every node follows")

    def stop(self) -> None:
        for node in self.nodes.values():
            node.io.stop()


@pytest.fixture
def cluster(ctx, tmp_path):
    nodes = Cluster(ctx, tmp_path)
    yield nodes
    nodes.stop()


def test_the_node_that_stands_at_once_is_elected_and_every_node_follows_it(cluster):
    primary = cluster.primary()
    assert primary.config.node_name == "n1"
    for node in cluster.nodes.values():
        health = node.health()
        assert (health["mode"], health["term"], health["primary"]) == ("failover", 1, "n1")
        wait_until(lambda: node.health()["caught_up"], 5, what="every node to be caught up")


def test_appends_get_ids_from_0_with_no_gap_and_reach_every_node(cluster):
    primary = cluster.primary()
    answers = [primary.post({"message": f"m{n}", "w": 3}) for n in range(3)]
    assert [(a.status_int, a.json["id"], a.json["acks"]) for a in answers] == [(201, n, 3) for n in range(3)]
    assert all(a.headers["Served-By"] == "n1" for a in answers)
    batch = primary.post({"messages": ["b0", "b1"], "w": "majority"})
    assert (batch.status_int, batch.json["first_id"], batch.json["last_id"]) == (201, 3, 4)
    expected = ["m0", "m1", "m2", "b0", "b1"]
    for node in cluster.nodes.values():
        wait_until(lambda: node.app.get("/messages?committed=true").json["messages"] == expected, 5,
                   what=f"{node.config.node_name}'s committed messages")
        assert node.app.get("/messages").json["messages"] == expected
        assert node.health()["committed"] == 5


def test_a_replayed_key_gets_the_original_id_and_another_message_under_it_409(cluster):
    primary = cluster.primary()
    first = primary.post({"message": "once", "w": 2}, headers={"Idempotency-Key": "k-1"})
    again = primary.post({"message": "once", "w": 2}, headers={"Idempotency-Key": "k-1"})
    other = primary.post({"message": "twice", "w": 2}, headers={"Idempotency-Key": "k-1"})
    assert (first.status_int, again.status_int, again.json["id"], again.json["duplicate"]) == (201, 200, 0, True)
    assert (other.status_int, other.json["id"]) == (409, 0)
    assert primary.app.get("/messages").json["messages"] == ["once"]


def test_headers_that_are_not_utf8_are_taken_and_forwarded_as_they_came(ctx, tmp_path):
    """A header's bytes that are not UTF-8, or UTF-8 beyond latin-1, as WSGI hands
    them over (latin-1 text): the primary takes the append, and a secondary
    forwards it, byte for byte, over HTTP to the primary served on 127.0.0.1."""
    cluster = Cluster(ctx, tmp_path, advertised={"n1": "http://127.0.0.1:0"})
    n1 = cluster.nodes["n1"]
    server = waitress.create_server(n1.service.app, host="127.0.0.1", port=0)
    n1.service.http_bound(f"http://127.0.0.1:{server.effective_port}")
    threading.Thread(target=server.run, name="n1-http", daemon=True).start()
    utf8_beyond_latin1 = "application/json; charset=" + "€".encode().decode("latin-1")
    try:
        assert cluster.primary() is n1
        direct = n1.app.post("/messages", b'{"message": "direct"}', expect_errors=True, headers={
            "Content-Type": "application/json; charset=\xe9", "Authorization": "\xff", FORWARDED_BY: "\xff"})
        assert direct.status_int == 201, direct.text
        n2 = cluster.nodes["n2"]
        wait_until(lambda: n2.health()["peers"]["n1"]["url"], 5, what="n2 to learn n1's URL")
        for message, content_type in (("forwarded", utf8_beyond_latin1), ("next", "application/json")):
            answer = n2.app.post("/messages", json.dumps({"message": message}).encode(), expect_errors=True,
                                 headers={"Content-Type": content_type, "Authorization": "\xff"})
            assert (answer.status_int, answer.headers["Served-By"]) == (201, "n1"), answer.text
        assert n1.app.get("/messages").json["messages"] == ["direct", "forwarded", "next"]
    finally:
        server.close()
        cluster.stop()


def test_committed_reads_take_only_true_or_false(cluster):
    node = cluster.nodes["n2"]
    assert node.app.get("/messages?committed=false").json == {"messages": [], "first_id": 0}
    bad = node.app.get("/messages?committed=yes", expect_errors=True)
    assert bad.status_int == 400 and "'committed' must be true or false" in bad.json["error"]


def test_the_served_document_describes_exactly_the_routes(cluster):
    app = cluster.nodes["n1"].app
    document = app.get("/openapi.json").json
    assert document == spec(cluster_size=3, bearer=False)
    served = {(route.method.lower(), route.rule) for route in app.app.routes}
    assert {(m, path) for path, item in document["paths"].items() for m in item} == served


def test_without_a_majority_there_is_no_primary_and_appends_get_503_at_once(ctx, tmp_path):
    alone = Cluster(ctx, tmp_path, running=("n2",))
    try:
        node = alone.nodes["n2"]
        answer = node.post({"message": "m", "w": 1})
        assert answer.status_int == 503 and answer.headers["Retry-After"] == "1"
        assert answer.json["error"].startswith("no primary: ") and "id" not in answer.json
        health = node.health()
        assert health["primary"] is None and health["role"] in ("secondary", "pre-candidate")
        assert node.app.get("/messages").json == {"messages": [], "first_id": 0}
    finally:
        alone.stop()


def test_a_write_concern_that_cannot_be_met_times_out_with_its_id(ctx, tmp_path):
    two = Cluster(ctx, tmp_path, running=("n1", "n2"))
    try:
        primary = two.primary()
        assert primary.post({"message": "two", "w": 2}).status_int == 201
        late = primary.post({"message": "three", "w": 3, "timeout": 0.3})
        assert (late.status_int, late.json["id"], late.json["acks"]) == (504, 1, 2)
    finally:
        two.stop()


def test_replication_delay_holds_entries_back_but_not_the_heartbeats(ctx, tmp_path):
    slow = Cluster(ctx, tmp_path, replication_delay=DelayRange(1.0, 1.0))
    try:
        primary = slow.primary()
        assert primary.post({"message": "quick", "w": 1}).status_int == 201
        lagging = slow.nodes["n3"]
        assert lagging.app.get("/messages").json == {"messages": [], "first_id": 0}  # held back for a second
        assert lagging.health()["primary"] == "n1"  # heartbeats were not: it follows, no election
        wait_until(lambda: lagging.app.get("/messages").json["messages"] == ["quick"], 5,
                   what="the delayed entry")
        assert lagging.health()["term"] == 1
    finally:
        slow.stop()


def test_health_names_every_node_by_the_url_clients_reach_it_at_and_any_origin_may_read_it(cluster):
    cluster.primary()
    response = cluster.nodes["n2"].app.get("/health")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    health = response.json
    assert health["url"] == "http://localhost:8001"
    assert health["peers"]["n1"]["url"] == "http://localhost:8000"  # a secondary hears its primary
    wait_until(lambda: {name: peer["url"] for name, peer in cluster.nodes["n1"].health()["peers"].items()}
               == {"n2": "http://localhost:8001", "n3": "http://localhost:8002"}, 5,
               what="the primary to hear from every secondary")


def test_metrics_show_the_term_the_primary_the_elections_and_the_committed_length(cluster):
    primary = cluster.primary()
    assert primary.post({"message": "counted", "w": 3}).status_int == 201
    wait_until(lambda: cluster.nodes["n2"].health()["committed"] == 1, 5, what="n2 to commit it")
    for name, node in cluster.nodes.items():
        scrape = Scrape(node.app.get("/metrics").text)
        assert scrape("replog_term") == 1 and scrape("replog_elections_total") == 1, name
        assert scrape("replog_is_primary") == (1 if name == "n1" else 0), name
        assert scrape("replog_committed_length") == scrape("replog_log_length") == 1, name
    assert Scrape(primary.app.get("/metrics").text)("replog_appends_total", outcome="ok") == 1


def test_with_curve_a_member_may_not_speak_for_another(ctx, tmp_path):
    keys = tmp_path / "keys"
    create_pairs(keys, list(NAMES))
    channel = curve.load_peers(str(keys), "n1", ["n2", "n3"])
    channel.start(ctx)
    config = dataclasses.replace(
        FailoverConfig(), node_name="n1", data_dir=str(tmp_path), replication_keys_dir=str(keys),
        peers=tuple(Peer(name, "tcp://127.0.0.1:9") for name in NAMES),
        replication_bind="tcp://127.0.0.1:0", advertised_url="http://n1:8000", public_url="http://n1:8000")
    node = NodeIo(ctx, config.node_settings(False, frame_limit(config.max_body_bytes)),
                  open_log(str(tmp_path), "failover", True, 10), channel)
    node.start()
    n2 = ctx.socket(zmq.DEALER)
    try:
        n2.curve_publickey, n2.curve_secretkey = zmq.auth.load_certificate(secret_file(keys, "n2"))
        n2.curve_serverkey = zmq.auth.load_certificate(public_file(keys, "n1"))[0]
        n2.connect(node.endpoint)
        envelope = Envelope("http://n2:8000", 1 << 20, "http://n2:8000")
        n2.send(encode(VoteRequest("n3", 5, 0, 0), envelope))  # n2's key, n3's name
        wait_until(lambda: node.state.bad_frames == 1, 5, what="the forged frame to be dropped")
        assert node.state.term == 0
        n2.send(encode(VoteRequest("n2", 5, 0, 0), envelope))  # its own name: heard
        wait_until(lambda: node.state.term == 5, 5, what="n2's own request to be taken")
        assert node.state.bad_frames == 1
    finally:
        n2.close()
        node.stop()
        channel.stop()
