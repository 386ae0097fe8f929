"""Replication semantics with real processes on 127.0.0.1.

Timings here are coarse and define the semantics ("w=1 does not wait for a
2 s delay"); they are far from the limits so a loaded CI machine passes.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.support.http import get_messages, post_message, request
from tests.support.raw_peer import HandMadePrimary, RawPeer
from tests.support.waiting import wait_until


def test_w1_answers_at_once_and_the_delayed_secondary_catches_up(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {"REPLICATION_DELAY": "2"}})
    resp = post_message(cluster.primary.url, "hello", w=1)
    assert resp.status == 201, resp.body
    assert resp.json == {"id": 0, "w": 1, "acks": 1, "acked_by": ["primary"]}
    assert resp.elapsed < 1.0
    assert get_messages(cluster.primary.url) == ["hello"]
    assert get_messages(cluster["s2"].url) == []  # the inconsistency window
    wait_until(lambda: get_messages(cluster["s2"].url) == ["hello"], 10, what="s2 to converge")
    assert get_messages(cluster["s1"].url) == ["hello"]


def test_w2_answers_when_the_fastest_secondary_acks(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {"REPLICATION_DELAY": "2"}})
    resp = post_message(cluster.primary.url, "fast", w=2)
    assert resp.status == 201, resp.body
    assert resp.json["acks"] == 2 and resp.json["acked_by"] == ["primary", "s1"]
    assert resp.elapsed < 1.5
    assert get_messages(cluster["s1"].url) == ["fast"]


def test_w3_waits_for_the_delayed_secondary(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {"REPLICATION_DELAY": "2"}})
    resp = post_message(cluster.primary.url, "all of them", w=3)
    assert resp.status == 201, resp.body
    assert resp.json["acks"] == 3 and sorted(resp.json["acked_by"]) == ["primary", "s1", "s2"]
    assert resp.elapsed >= 1.5
    assert get_messages(cluster["s2"].url) == ["all of them"]  # held when answered


def test_missing_w_means_all_and_majority_is_computed_from_the_configuration(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}})
    assert post_message(cluster.primary.url, "a").json["w"] == 3
    assert post_message(cluster.primary.url, "b", w="all").json["w"] == 3
    majority = post_message(cluster.primary.url, "c", w="majority")
    assert majority.status == 201 and majority.json["w"] == 2 and majority.json["acks"] >= 2


def test_concurrent_w3_appends_are_pipelined_not_serialised(make_cluster):
    cluster = make_cluster({"s1": {"REPLICATION_DELAY": "1"}, "s2": {"REPLICATION_DELAY": "1"}})
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda i: post_message(cluster.primary.url, f"m{i}", w=3), range(20)))
    elapsed = time.monotonic() - started
    assert [r.status for r in responses] == [201] * 20
    assert all(r.json["acks"] == 3 for r in responses)
    assert sorted(r.json["id"] for r in responses) == list(range(20))
    assert elapsed < 6, f"20 appends took {elapsed:.1f}s: serialised behind the 1 s delay?"


def test_w1_and_reads_are_not_blocked_by_a_waiting_w3(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {"REPLICATION_DELAY": "4"}})
    slow = {}
    waiter = threading.Thread(
        target=lambda: slow.setdefault("resp", post_message(cluster.primary.url, "slow", w=3))
    )
    waiter.start()
    wait_until(lambda: get_messages(cluster.primary.url) == ["slow"], 5, what="slow append to land")
    quick = post_message(cluster.primary.url, "quick", w=1)
    read = request("GET", f"{cluster.primary.url}/messages")
    assert quick.status == 201 and quick.elapsed < 1.0
    assert read.status == 200 and read.elapsed < 1.0
    assert waiter.is_alive(), "the w=3 append should still be waiting on s2"
    waiter.join(15)
    assert slow["resp"].status == 201 and slow["resp"].json["acks"] == 3


def test_timeout_answers_504_and_the_message_still_reaches_everyone(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {"REPLICATION_DELAY": "2"}})
    resp = post_message(cluster.primary.url, "patience", w=3, timeout=0.3)
    assert resp.status == 504
    body = resp.json
    assert body["id"] == 0 and body["w"] == 3
    assert body["acks"] == 2 and body["acked_by"] == ["primary", "s1"]
    assert "timed out" in body["error"]
    assert get_messages(cluster.primary.url) == ["patience"]  # not rolled back
    wait_until(lambda: get_messages(cluster["s2"].url) == ["patience"], 10, what="s2 to get it")


def test_total_order_holds_across_nodes_with_random_delays(make_cluster):
    cluster = make_cluster(
        {"s1": {"REPLICATION_DELAY": "0-0.3"}, "s2": {"REPLICATION_DELAY": "0-0.3"}}
    )
    writers, per_writer = 8, 25
    snapshots: dict[str, list[list[str]]] = {"s1": [], "s2": []}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for name in snapshots:
                snapshots[name].append(get_messages(cluster[name].url))

    def write(writer):
        sent = []
        for i in range(per_writer):
            message = f"w{writer}-{i}"
            sent.append((message, post_message(cluster.primary.url, message, w=1 + (i % 3))))
        return sent

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(writers) as pool:
            sent = [pair for batch in pool.map(write, range(writers)) for pair in batch]
    finally:
        stop.set()
        watcher.join()
    assert all(resp.status == 201 for _, resp in sent)
    ids = sorted(resp.json["id"] for _, resp in sent)
    assert ids == list(range(writers * per_writer)), "ids must be 0..n-1 without gaps or repeats"
    final = get_messages(cluster.primary.url)
    assert final == [message for message, _ in sorted(sent, key=lambda pair: pair[1].json["id"])]
    for name in snapshots:
        wait_until(lambda: get_messages(cluster[name].url) == final, 10, what=f"{name} to converge")
        for snapshot in snapshots[name]:
            assert snapshot == final[: len(snapshot)], f"{name} showed a non-prefix"


def test_a_secondary_stores_a_resent_entry_once_and_hides_gaps(make_cluster, ctx):
    cluster = make_cluster({"s1": {}})
    s1 = cluster["s1"]
    # A primary of a newer term than the real one, by hand: s1 follows it.
    primary = HandMadePrimary(RawPeer(ctx, s1.replication_endpoint), term=99)
    try:
        first = primary.append(0, "zero")
        assert first.success and first.match_length == 1
        again = primary.append(0, "zero")  # a resend: acknowledged again, stored once
        assert again.success and again.match_length == 1
        assert get_messages(s1.url) == ["zero"]
        ahead = primary.append(2, "two")  # its predecessor never came: refused, nothing held
        assert not ahead.success and ahead.retry_length == 1
        assert get_messages(s1.url) == ["zero"]
        assert primary.append(1, "one", "two").match_length == 3
        assert get_messages(s1.url) == ["zero", "one", "two"]
    finally:
        primary.peer.close()
