"""Misbehaving clients against real processes: floods of waiting appends, idle connections."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from tests.support.http import get_health, get_messages, post_message, request
from tests.support.waiting import wait_until


def test_excess_waiting_appends_get_503_while_reads_and_w1_stay_fast(make_cluster):
    cluster = make_cluster(
        {"s1": {}, "s2": {"REPLICATION_DELAY": "4"}},
        primary_env={"HTTP_THREADS": "16", "MAX_WAITING_APPENDS": "8"},
    )
    url = cluster.primary.url
    # Overload, not recovery: while it recovers, every append waits (w=1 too).
    wait_until(lambda: not get_health(url)["recovering"], 10, what="the primary's recovery to end")
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(post_message, url, f"slow-{i}", w=3) for i in range(20)]
        wait_until(lambda: sum(f.done() for f in futures) >= 12, 10, what="the excess to be refused")
        assert not any(f.done() and f.result().status == 201 for f in futures), "too early for a 201"
        quick = post_message(url, "quick", w=1)
        read = request("GET", f"{url}/messages")
        health = request("GET", f"{url}/health")
        results = [f.result() for f in futures]
    assert quick.status == 201 and quick.elapsed < 1.0
    assert read.status == 200 and read.elapsed < 1.0
    assert health.status == 200 and health.elapsed < 1.0
    accepted = [r for r in results if r.status == 201]
    refused = [r for r in results if r.status == 503]
    assert len(accepted) == 8 and len(refused) == 12
    for resp in refused:
        assert resp.headers["Retry-After"] == "1" and "overloaded" in resp.json["error"]
    accepted_messages = {f"slow-{i}" for i, r in enumerate(results) if r.status == 201}
    stored = get_messages(url)
    assert len(stored) == 9  # nothing appended for the refused ones
    assert set(stored) == accepted_messages | {"quick"}


def test_hundreds_of_idle_connections_do_not_lock_others_out(make_cluster):
    cluster = make_cluster({"s1": {}})
    parts = urlsplit(cluster.primary.url)
    idle = [socket.create_connection((parts.hostname, parts.port), timeout=5) for _ in range(400)]
    try:
        append = post_message(cluster.primary.url, "still served", w=2, http_timeout=10)
        read = request("GET", f"{cluster.primary.url}/messages", timeout=10)
        assert append.status == 201 and read.status == 200
        # the idle connections were accepted too: the last one opened can be used
        idle[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle[-1].recv(12).startswith(b"HTTP/1.1 200")
    finally:
        for conn in idle:
            conn.close()
