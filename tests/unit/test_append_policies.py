"""Idempotency keys, overload protection and the quorum read-only mode, in-process."""

from __future__ import annotations

import threading

import pytest

from shared.web.append_request import AppendRequest
from tests.support.waiting import wait_until


def keyed(key):
    return {"Idempotency-Key": key}


def test_a_repeated_key_appends_nothing_and_returns_the_original_id(cluster):
    first = cluster.post({"message": "once", "w": 3}, headers=keyed("k-1"))
    again = cluster.post({"message": "once", "w": 3}, headers=keyed("k-1"))
    assert first.status_int == 201 and "duplicate" not in first.json
    assert again.status_int == 200 and again.json["duplicate"] is True
    assert again.json["id"] == first.json["id"] and again.json["acks"] == 3
    assert cluster.app.get("/messages").json == {"messages": ["once"], "first_id": 0}


def test_a_replay_reports_who_holds_the_message_now(cluster):
    first = cluster.post({"message": "m", "w": 1}, headers=keyed("k"))
    assert first.json["acked_by"] == ["primary"]
    wait_until(
        lambda: all(s["acked_length"] == 1 for s in cluster.app.get("/health").json["secondaries"]),
        what="both ACKs to reach the primary",
    )
    replay = cluster.post({"message": "m", "w": 1}, headers=keyed("k"))
    assert replay.status_int == 200 and sorted(replay.json["acked_by"]) == ["primary", "s1", "s2"]


def test_a_replay_waits_for_its_write_concern_like_the_original(make_inprocess_cluster):
    cluster = make_inprocess_cluster(running=(), quorum=1)
    cluster.post({"message": "m", "w": 1}, headers=keyed("k"))
    replay = cluster.post({"message": "m", "w": 2, "timeout": 0.2}, headers=keyed("k"))
    assert replay.status_int == 504 and replay.json["duplicate"] is True and replay.json["id"] == 0
    assert cluster.message_count == 1


def test_a_key_reused_for_another_message_is_a_conflict(cluster):
    cluster.post({"message": "original", "w": 1}, headers=keyed("k"))
    clash = cluster.post({"message": "different", "w": 1}, headers=keyed("k"))
    assert clash.status_int == 409 and clash.json["id"] == 0 and "different message" in clash.json["error"]
    assert cluster.message_count == 1


@pytest.mark.parametrize("key", ["", "x" * 201, "has space", "tab\tkey", "é"])
def test_malformed_keys_are_rejected(cluster, key):
    resp = cluster.app.post(
        "/messages", b'{"message": "m", "w": 1}', content_type="application/json",
        headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")}, expect_errors=True,
    )
    assert resp.status_int == 400 and "Idempotency-Key" in resp.json["error"]
    assert cluster.message_count == 0


def test_concurrent_retries_with_one_key_append_once(cluster):
    results = []
    lock = threading.Lock()

    def retry():
        result = cluster.appends.append(AppendRequest(("race",), 3, None), "same-key")
        with lock:
            results.append(result)

    threads = [threading.Thread(target=retry) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cluster.message_count == 1
    assert sorted(r.status for r in results) == [200] * 15 + [201]
    assert {r.body["id"] for r in results} == {0}


def test_the_key_table_is_bounded_and_forgets_the_oldest(make_inprocess_cluster):
    cluster = make_inprocess_cluster(idempotency_keys=2)
    for key in ("a", "b", "c"):
        cluster.post({"message": key, "w": 1}, headers=keyed(key))
    assert cluster.post({"message": "c", "w": 1}, headers=keyed("c")).status_int == 200
    assert cluster.post({"message": "a", "w": 1}, headers=keyed("a")).status_int == 201  # forgotten
    assert cluster.message_count == 4


def test_waiting_appends_beyond_the_cap_get_503_and_append_nothing(make_inprocess_cluster):
    cluster = make_inprocess_cluster(running=(), quorum=1, max_waiting_appends=2)
    waiting = [
        threading.Thread(target=cluster.appends.append, args=(AppendRequest((f"w{i}",), 2, 2.0), None))
        for i in range(2)
    ]
    for t in waiting:
        t.start()
    wait_until(lambda: cluster.message_count == 2, what="two appends to start waiting")
    refused = cluster.post({"message": "third", "w": 2})
    assert refused.status_int == 503 and refused.headers["Retry-After"] == "1"
    assert "overloaded" in refused.json["error"]
    assert cluster.message_count == 2
    quick = cluster.post({"message": "w1", "w": 1})
    assert quick.status_int == 201 and cluster.app.get("/messages").status_int == 200
    for t in waiting:
        t.join()
    assert cluster.post({"message": "later", "w": 2, "timeout": 0.1}).status_int == 504  # slots freed


def test_without_quorum_appends_get_503_and_reads_go_on(make_inprocess_cluster):
    cluster = make_inprocess_cluster(running=())  # quorum 2 of 3; nobody answers
    wait_until(lambda: cluster.app.get("/health").json["read_only"], what="read-only mode")
    refused = cluster.post({"message": "m", "w": 1})
    assert refused.status_int == 503 and refused.json["error"] == "read-only: no quorum"
    assert refused.json["quorum"] == 2 and refused.json["available_nodes"] == 1
    assert cluster.message_count == 0
    assert cluster.app.get("/messages").json == {"messages": [], "first_id": 0}
    # s1 comes up at its configured endpoint: the primary leaves read-only mode by itself
    cluster.start_secondary("s1")
    wait_until(lambda: not cluster.app.get("/health").json["read_only"], what="writable again")
    assert cluster.post({"message": "m", "w": 2}).status_int == 201


def test_quorum_1_turns_read_only_mode_off(make_inprocess_cluster):
    cluster = make_inprocess_cluster(running=(), quorum=1)
    wait_until(lambda: cluster.app.get("/health").json["secondaries"][0]["state"] == "unhealthy",
               what="secondaries declared unhealthy")
    assert cluster.post({"message": "m", "w": 1}).status_int == 201


def test_a_dead_replication_thread_fails_stop(make_inprocess_cluster, monkeypatch):
    cluster = make_inprocess_cluster(quorum=1)
    assert cluster.post({"message": "before", "w": 1}).status_int == 201
    # Answered as it was queued: read once, so that node-io has taken it before it crashes.
    assert cluster.app.get("/messages").json["messages"] == ["before"]
    crashed = threading.Event()
    cluster.node.on_crash = crashed.set

    def bug(*_):
        raise RuntimeError("a bug in a pass")

    monkeypatch.setattr(cluster.node, "_pass", bug)
    cluster.node.wake()
    assert crashed.wait(5), "the crash hook must run"
    refused = cluster.post({"message": "after", "w": 1})
    assert refused.status_int == 503 and "replication stopped" in refused.json["error"]
    health = cluster.app.get("/health", expect_errors=True)
    assert health.status_int == 503 and health.json["status"] == "replication stopped"
    assert cluster.app.get("/messages").json == {"messages": ["before"], "first_id": 0}
