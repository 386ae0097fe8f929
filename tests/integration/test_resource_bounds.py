"""What a peer on the replication port can make a node hold in memory:
a bounded amount, whatever it sends. Measured from /proc/PID/status."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import zmq

from shared import protocol
from shared.history import Segment
from tests.support.http import get_health, get_messages
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
    leader = protocol.Leader("someone-else", (Segment(1, "r", 0),))
    # 200 MB in one frame: the secondary disconnects before buffering it.
    dealer.send_multipart([protocol.PING, b"c1", b" " * (200 * MB)])
    # A million empty entries at id 10**9, ten times over: far past its window.
    far = protocol.encode_append("c2", leader, 10**9, [protocol.encode_entry("")] * 1_000_000)
    for _ in range(10):
        dealer.send_multipart(far)
    dealer.close()
    del far
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
