"""What a peer on the replication port can make a node hold in memory:
a bounded amount, whatever it sends. Measured from /proc/PID/status."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import zmq

from shared.consensus.raft_log import Entry
from shared.consensus.raft_messages import AppendEntries
from shared.wire import frames
from shared.wire.frames import encode_entry
from tests.support.raw_peer import ENVELOPE
from tests.support.http import get_health, get_messages, post_message
from tests.support.waiting import wait_until

MB = 1 << 20
#: Generous: an idle secondary sits near 40 MB.
PEAK_LIMIT_BYTES = 150 * MB


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_huge_frame_or_appends_far_ahead_never_fill_a_secondarys_memory(make_cluster, ctx):
    cluster = make_cluster({"s1": {}}, primary_env={"QUORUM": "1"})
    s1 = cluster["s1"]
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(s1.replication_endpoint)
    # 200 MB in one frame: the secondary disconnects before buffering it.
    dealer.send(b"BEAT " + b" " * (200 * MB))
    # A million empty messages in one frame, ten times over: refused unparsed.
    header = {"from": "someone-else", "term": 99, "url": ENVELOPE.url, "public": ENVELOPE.url,
              "limit": 1 << 30, "seq": 1, "prev_length": 0, "prev_term": 0, "prev_digest": 0,
              "commit": 0, "start": 0, "cluster": None, "vouch": False, "terms": [[99, 1_000_000]]}
    huge = b"REPLICATE " + json.dumps(header).encode() + b'\n""' * 1_000_000
    # Fifty thousand at index 10**9, ten times over: far past its log, refused.
    entries = tuple(Entry(99, encode_entry(""), 1) for _ in range(50_000))
    far = frames.encode(AppendEntries("someone-else", 99, 2, 10**9, 98, 0, entries, 0), ENVELOPE)
    for _ in range(10):
        dealer.send(huge)
        dealer.send(far)
    dealer.close()
    del huge, far
    # The node still works, and keeps what it had: nothing.
    wait_until(lambda: get_health(s1.url)["status"] == "ok", what="s1 to answer")
    assert get_messages(s1.url) == []
    assert peak_rss(s1.process.pid) < PEAK_LIMIT_BYTES


def test_half_open_http_connections_are_closed_after_the_idle_timeout(make_cluster):
    cluster = make_cluster({"s1": {"HTTP_IDLE_TIMEOUT": "1"}},
                           primary_env={"QUORUM": "1", "HTTP_IDLE_TIMEOUT": "1"})
    for node in cluster.nodes:
        host, port = node.url.removeprefix("http://").split(":")
        half_open = [socket.create_connection((host, int(port)), timeout=10) for _ in range(20)]
        for conn in half_open:
            conn.sendall(b"GET /messages HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        for conn in half_open:
            assert conn.recv(1) == b"", "the node closes it"
            conn.close()
        assert time.monotonic() - started < 8
        assert get_health(node.url)["status"] == "ok"


def test_clients_that_never_read_a_large_log_cannot_pin_the_node(make_cluster):
    cluster = make_cluster({"s1": {}}, primary_env={"QUORUM": "1"})
    primary = cluster.primary
    big = "x" * (1_000_000 - 100)
    for _ in range(20):  # a 20 MB log
        assert post_message(primary.url, big, w=2).status == 201
    wait_until(lambda: get_health(cluster["s1"].url)["length"] == 20, what="s1 to hold the log")
    for node in cluster.nodes:
        host, port = node.url.removeprefix("http://").split(":")
        stalled = []
        for _ in range(100):
            conn = socket.socket()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conn.connect((host, int(port)))
            conn.sendall(b"GET /messages HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
            stalled.append(conn)
        try:
            health = get_health(node.url)
            assert health["status"] == "ok"
            if node is primary:
                quick = post_message(primary.url, "still served", w=1, http_timeout=5)
                assert quick.status == 201 and quick.elapsed < 1.0
            started = time.monotonic()
            get_health(node.url)
            assert time.monotonic() - started < 1.0
            assert rss(node.process.pid) < 300 * MB
        finally:
            for conn in stalled:
                conn.close()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
