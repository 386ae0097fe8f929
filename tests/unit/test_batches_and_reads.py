"""Batch appends, paged reads, tailing reads, consistency levels and retention, through
the apps in-process."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.waiting import wait_until


def test_a_batch_lands_at_consecutive_ids_under_one_write_concern(cluster):
    first = cluster.post({"message": "single", "w": 3})
    batch = cluster.post({"messages": ["a", "b", "c"], "w": 3})
    assert batch.status_int == 201
    assert {**batch.json, "acked_by": sorted(batch.json["acked_by"])} == {
        "first_id": 1, "last_id": 3, "count": 3, "w": 3, "acks": 3, "acked_by": ["primary", "s1", "s2"]}
    assert first.json["id"] == 0
    for app in (cluster.app, *(s.app for s in cluster.secondaries.values())):
        wait_until(lambda: app.get("/messages").json["messages"] == ["single", "a", "b", "c"])


@pytest.mark.parametrize("body, status, error", [
    ({"messages": "abc"}, 400, "'messages' must be a list of strings, got the string 'abc'"),
    ({"messages": []}, 400, "at least one message"),
    ({"messages": ["a", 5, "c"]}, 400, "'messages'[1] must be a string, got an integer"),
    ({"messages": ["a", None]}, 400, "'messages'[1] must be a string, got null"),
    ({"message": "a", "messages": ["b"]}, 400, "either 'message' or 'messages', not both"),
    ({"messages": ["m"] * 10_001}, 413, "MAX_BATCH_MESSAGES"),
])
def test_a_bad_batch_appends_nothing(cluster, body, status, error):
    resp = cluster.post(body)
    assert resp.status_int == status and error in resp.json["error"]
    assert cluster.app.get("/messages").json == {"messages": [], "first_id": 0}


def test_a_batch_larger_than_the_body_limit_is_a_413(make_inprocess_cluster):
    cluster = make_inprocess_cluster(max_body_bytes=1000)
    resp = cluster.post({"messages": ["x" * 100] * 20})
    assert resp.status_int == 413 and cluster.app.get("/messages").json == {"messages": [], "first_id": 0}


def test_an_idempotent_batch_replay_returns_the_original_ids(cluster):
    key = {"Idempotency-Key": "batch-1"}
    original = cluster.post({"messages": ["a", "b"], "w": 2}, headers=key)
    replay = cluster.post({"messages": ["a", "b"], "w": 2}, headers=key)
    assert replay.status_int == 200 and replay.json["duplicate"] is True
    assert (replay.json["first_id"], replay.json["last_id"]) == (original.json["first_id"], 1)
    for other in ({"messages": ["a", "c"]}, {"messages": ["a"]}, {"message": "a"}):
        assert cluster.post({**other, "w": 2}, headers=key).status_int == 409
    assert cluster.app.get("/messages").json == {"messages": ["a", "b"], "first_id": 0}


def test_a_batch_times_out_with_the_same_fields(make_inprocess_cluster):
    cluster = make_inprocess_cluster(running=("s1",), quorum=1)
    cluster.wait_recovered()
    resp = cluster.post({"messages": ["a", "b"], "w": 3, "timeout": 0.2})
    assert resp.status_int == 504
    assert resp.json["first_id"] == 0 and resp.json["last_id"] == 1 and resp.json["count"] == 2
    assert resp.json["acks"] == 2 and "timed out" in resp.json["error"]


def test_pages_are_slices_of_the_full_list(cluster):
    cluster.post({"messages": [f"m{i}" for i in range(25)], "w": 3})
    for app in (cluster.app, cluster.secondaries["s1"].app):
        assert app.get("/messages?from=0&limit=10").json == {
            "messages": [f"m{i}" for i in range(10)], "from": 0, "next": 10, "length": 25}
        assert app.get("/messages?from=20").json["messages"] == [f"m{i}" for i in range(20, 25)]
        assert app.get("/messages?from=25&limit=5").json == {
            "messages": [], "from": 25, "next": 25, "length": 25}
        assert app.get("/messages?from=99").json["messages"] == []
        assert app.get("/messages?limit=2").json["messages"] == ["m0", "m1"]  # from 0
        pages, position = [], 0
        while True:
            page = app.get(f"/messages?from={position}&limit=7").json
            if not page["messages"]:
                break
            pages.extend(page["messages"])
            position = page["next"]
        assert pages == app.get("/messages").json["messages"]


@pytest.mark.parametrize("query, error", [
    ("from=-1", "'from' must be a whole number"),
    ("from=x", "'from' must be a whole number"),
    ("from=1.5", "'from' must be a whole number"),
    ("from=0&limit=0", "'limit' must be at least 1"),
    ("from=0&limit=-3", "'limit' must be a whole number"),
    ("from=0&wait=0", "'wait' must be seconds"),
    ("from=0&wait=61", "'wait' must be seconds"),
    ("from=0&wait=nan", "'wait' must be seconds"),
    ("from=0&offset=3", "unknown query parameter(s) 'offset'"),
])
def test_bad_read_parameters_get_a_400(cluster, query, error):
    for app in (cluster.app, cluster.secondaries["s1"].app):
        resp = app.get(f"/messages?{query}", expect_errors=True)
        assert resp.status_int == 400 and error in resp.json["error"]


def test_a_tailing_read_answers_at_once_when_there_is_something_to_read(cluster):
    cluster.post({"message": "already", "w": 3})
    started = time.monotonic()
    resp = cluster.secondaries["s1"].app.get("/messages?from=0&wait=30")
    assert resp.json["messages"] == ["already"] and time.monotonic() - started < 1


def test_a_tailing_read_returns_when_a_message_arrives_and_empty_at_its_deadline(cluster):
    result = {}
    reader = threading.Thread(
        target=lambda: result.setdefault("page", cluster.app.get("/messages?from=0&wait=20").json))
    reader.start()
    wait_until(lambda: reader.is_alive(), what="the reader to wait")
    started = time.monotonic()
    cluster.post({"message": "news", "w": 1})
    reader.join(10)
    assert result["page"]["messages"] == ["news"] and time.monotonic() - started < 1
    started = time.monotonic()
    empty = cluster.app.get("/messages?from=1&wait=0.3").json
    assert empty == {"messages": [], "from": 1, "next": 1, "length": 1}
    assert 0.25 <= time.monotonic() - started < 2


def test_waiting_readers_beyond_the_cap_get_503_while_appends_and_health_go_on(make_inprocess_cluster):
    cluster = make_inprocess_cluster(max_waiting_reads=2)
    readers = [threading.Thread(target=cluster.app.get, args=("/messages?from=0&wait=30",))
               for _ in range(2)]
    for reader in readers:
        reader.start()
    wait_until(lambda: cluster.app.get("/messages?from=0&wait=1", expect_errors=True).status_int == 503,
               what="the cap to be reached")
    refused = cluster.app.get("/messages?from=0&wait=1", expect_errors=True)
    assert refused.headers["Retry-After"] == "1" and "MAX_WAITING_READS" in refused.json["error"]
    started = time.monotonic()
    assert cluster.app.get("/health").status_int == 200
    assert cluster.post({"message": "m", "w": 1}).status_int == 201
    assert cluster.app.get("/messages").json == {"messages": ["m"], "first_id": 0}
    assert time.monotonic() - started < 1
    for reader in readers:
        reader.join(5)
        assert not reader.is_alive(), "the append released them"


def test_shutdown_answers_waiting_readers_at_once(cluster):
    result = {}
    reader = threading.Thread(
        target=lambda: result.setdefault("page", cluster.app.get("/messages?from=0&wait=30").json))
    reader.start()
    wait_until(lambda: reader.is_alive(), what="the reader to wait")
    started = time.monotonic()
    cluster.stop()
    reader.join(5)
    assert result["page"]["messages"] == [] and time.monotonic() - started < 2


@pytest.mark.parametrize("query", ["", "?consistency=local", "?consistency=committed",
                                   "?committed=true", "?consistency=linearizable"])
def test_every_consistency_level_reads_on_either_role(cluster, query):
    assert cluster.post({"message": "m", "w": 3}).status_int == 201
    for app in (cluster.app, cluster.secondaries["s1"].app):
        # A secondary learns the commit from the primary's next frame; a
        # linearizable read waits for it by itself.
        wait_until(lambda: app.get(f"/messages{query}").json == {"messages": ["m"], "first_id": 0},
                   what=f"{query or 'a plain read'} to show the message")


def test_only_a_local_read_shows_what_is_not_committed(make_inprocess_cluster):
    cluster = make_inprocess_cluster(running=(), quorum=1)  # no majority: nothing commits
    assert cluster.post({"message": "alone", "w": 1}).status_int == 201
    assert cluster.app.get("/messages").json["messages"] == ["alone"]
    assert cluster.app.get("/messages?consistency=committed").json["messages"] == []
    assert cluster.app.get("/messages?from=0&committed=true").json["messages"] == []
    unconfirmed = cluster.app.get("/messages?consistency=linearizable", expect_errors=True)
    assert unconfirmed.status_int == 503 and unconfirmed.headers["Retry-After"] == "1"
    assert "cannot confirm a linearizable read" in unconfirmed.json["error"]
    # committed=true asks for at least committed: with a level, the stronger of the two.
    assert cluster.app.get("/messages?consistency=local&committed=true").json["messages"] == []
    assert cluster.app.get("/messages?consistency=local&committed=false").json["messages"] == ["alone"]
    assert cluster.app.get("/messages?consistency=linearizable&committed=true",
                           expect_errors=True).status_int == 503


@pytest.mark.parametrize("query, error", [
    ("consistency=strong", "'consistency' must be one of local, committed, linearizable"),
    ("committed=yes", "'committed' must be true or false"),
])
def test_a_bad_consistency_is_a_400(cluster, query, error):
    for app in (cluster.app, cluster.secondaries["s1"].app):
        resp = app.get(f"/messages?{query}", expect_errors=True)
        assert resp.status_int == 400 and error in resp.json["error"]


def test_a_read_below_what_retention_kept_is_410_with_the_first_id_kept(make_inprocess_cluster):
    cluster = make_inprocess_cluster(retention_messages=2)
    for n in range(6):
        assert cluster.post({"message": f"m{n}", "w": 3}).status_int == 201
    for app in (cluster.app, cluster.secondaries["s1"].app):
        kept = wait_until(lambda: app.get("/messages").json["first_id"] > 0 and app.get("/messages").json,
                          what="the start to move")
        first = kept["first_id"]
        assert kept["messages"] == [f"m{n}" for n in range(first, 6)]
        gone = app.get("/messages?from=0", expect_errors=True)
        assert gone.status_int == 410 and gone.json["first_id"] == first
        assert app.get(f"/messages?from={first}").json["messages"] == kept["messages"]
