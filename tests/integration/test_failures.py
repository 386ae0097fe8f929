"""Secondaries that stop, restart, stall, and lose or garble frames.

Real processes on 127.0.0.1; the workloads are checked with the Jepsen-style
checker in tests/support/checker.py. Heartbeats are fast here (0.1 s) so that
failure detection takes a fraction of a second.
"""

from __future__ import annotations

import re
import threading
import time

from tests.support.checker import History, Snapshotter, check, wait_for_convergence
from tests.support.http import get_health, get_messages, post_message
from tests.support.waiting import wait_until

#: The primary's environment for heartbeats every 0.1 s.
FAST_HEARTBEAT_ENV = {"HEARTBEAT_INTERVAL": "0.1", "SUSPECT_AFTER": "2", "UNHEALTHY_AFTER": "5"}


def in_background(function, *args, **kwargs) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function(*args, **kwargs)))
    thread.start()
    return thread, result


def run_checked(cluster, count: int, threads: int) -> list[str]:
    """``count`` appends at w = 1, 2, 3 in turn; the checker's violations, if any."""
    history = History()
    with Snapshotter(cluster.urls) as snapshotter:
        history.run(cluster.primary.url, count, threads, w_for=lambda i: 1 + i % 3)
        final = wait_for_convergence(cluster.urls)
    assert len(history.by_outcome("ok")) == count, "every append should have completed"
    return check(history, snapshotter.snapshots, final)


def secondary_state(url: str, name: str) -> str:
    return next(s for s in get_health(url)["secondaries"] if s["name"] == name)["state"]


def test_classic_self_check(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}}, primary_env=FAST_HEARTBEAT_ENV, down=("s2",))
    url = cluster.primary.url
    assert post_message(url, "Msg1", w=1).status == 201
    assert post_message(url, "Msg2", w=2).status == 201
    msg3, msg3_result = in_background(post_message, url, "Msg3", w=3)
    wait_until(lambda: "Msg3" in get_messages(url), what="Msg3 on the primary")
    msg4 = post_message(url, "Msg4", w=1)
    assert msg4.status == 201 and msg4.elapsed < 1.0
    assert msg3.is_alive(), "Msg3 must wait for S2"
    cluster["s2"].restart()
    msg3.join(30)
    assert msg3_result["value"].status == 201 and msg3_result["value"].json["acks"] == 3
    wait_until(lambda: get_messages(cluster["s2"].url) == ["Msg1", "Msg2", "Msg3", "Msg4"],
               10, what="S2 to catch up")


def test_restart_under_load_converges_without_violations(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}}, primary_env=FAST_HEARTBEAT_ENV)
    url = cluster.primary.url
    history = History()
    with Snapshotter(cluster.urls) as snapshotter:
        writer, _ = in_background(history.run, url, 2000, 8)
        wait_until(lambda: len(get_messages(url)) >= 400, 30, what="the load to get going")
        cluster["s1"].kill()
        cluster["s1"].restart()
        writer.join(120)
        final = wait_for_convergence(cluster.urls)
    assert len(history.by_outcome("ok")) == 2000
    assert check(history, snapshotter.snapshots, final) == []
    assert len(final["s1"]) == 2000
    cluster.primary.wait_for_log("s1 caught up:")
    assert "restarted" in cluster.primary.log()  # the primary noticed and resent, before that line


def test_lossy_acks_and_random_delays_lose_nothing(make_cluster):
    lossy = {"FAULT_DROP_ACKS": "0.3", "REPLICATION_DELAY": "0-0.2"}
    cluster = make_cluster({"s1": lossy, "s2": lossy}, primary_env=FAST_HEARTBEAT_ENV)
    assert run_checked(cluster, 1000, 16) == []


def test_a_dropping_duplicating_reordering_network_loses_nothing(make_cluster):
    cluster = make_cluster(
        {"s1": {}, "s2": {}},
        primary_env={**FAST_HEARTBEAT_ENV, "UNHEALTHY_AFTER": "20"},
        relayed=("s1", "s2"),
    )
    for relay in cluster.relays.values():
        relay.set_faults(drop=0.2, duplicate=0.2, delay=(0.0, 0.05))
    assert run_checked(cluster, 300, 8) == []
    cluster.primary.wait_for_log("resending")  # losses were made good by resends


def test_paused_replication_holds_w3_until_resumed(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}}, primary_env=FAST_HEARTBEAT_ENV, relayed=("s2",))
    url = cluster.primary.url
    cluster.relays["s2"].pause()
    waiting, result = in_background(post_message, url, "held", w=3)
    wait_until(lambda: secondary_state(url, "s2") == "unhealthy", 10, what="s2 to look dead")
    assert post_message(url, "meanwhile", w=2).status == 201
    assert waiting.is_alive()
    cluster.relays["s2"].resume()
    waiting.join(30)
    assert result["value"].status == 201 and result["value"].json["acks"] == 3
    wait_until(lambda: get_messages(cluster["s2"].url) == ["held", "meanwhile"], 10, what="s2")
    assert secondary_state(url, "s2") == "healthy"


def test_without_quorum_the_primary_is_read_only_until_a_secondary_returns(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}}, primary_env=FAST_HEARTBEAT_ENV)
    url = cluster.primary.url
    assert post_message(url, "before", w=3).status == 201
    cluster["s1"].stop()
    wait_until(lambda: secondary_state(url, "s1") == "unhealthy", 10, what="s1 unhealthy")
    assert post_message(url, "one down", w=2).status == 201  # 2 of 3 is still a majority
    cluster["s2"].stop()
    wait_until(lambda: get_health(url)["read_only"], 10, what="read-only mode")
    refused = post_message(url, "nobody home", w=1)
    assert refused.status == 503 and refused.json["error"] == "read-only: no quorum"
    assert refused.headers["Retry-After"] == "1"
    assert get_messages(url) == ["before", "one down"]  # reads go on; nothing appended
    health = get_health(url)["secondaries"]
    assert all(s["state"] == "unhealthy" and s["last_heard_s_ago"] > 0 for s in health)
    assert [s["lag"] for s in health] == [1, 0]  # s1 left before "one down", s2 after
    cluster["s1"].restart()
    wait_until(lambda: not get_health(url)["read_only"], 10, what="writable again")
    assert post_message(url, "back", w=2).status == 201
    wait_until(lambda: get_messages(cluster["s1"].url) == ["before", "one down", "back"], 10,
               what="s1 caught up")


def test_heartbeats_mark_a_stopped_secondary_suspected_then_unhealthy(make_cluster):
    cluster = make_cluster(
        {"s1": {}}, primary_env={"HEARTBEAT_INTERVAL": "0.2", "SUSPECT_AFTER": "2",
                                 "UNHEALTHY_AFTER": "6", "QUORUM": "1"}
    )
    url = cluster.primary.url
    wait_until(lambda: secondary_state(url, "s1") == "healthy", 10, what="healthy")
    cluster["s1"].pause()  # SIGSTOP: connected but silent
    seen = set()
    wait_until(lambda: seen.add(secondary_state(url, "s1")) or "unhealthy" in seen, 10,
               interval=0.05, what="unhealthy")
    assert "suspected" in seen
    cluster["s1"].resume()
    wait_until(lambda: secondary_state(url, "s1") == "healthy", 10, what="healthy again")
    cluster.primary.wait_for_log(re.compile(r"s1 is suspected[\s\S]*s1 is unhealthy[\s\S]*s1 is healthy"))


def test_sigterm_stops_every_role_promptly_even_with_requests_waiting(make_cluster):
    cluster = make_cluster({"s1": {"REPLICATION_DELAY": "30"}})
    waiting, result = in_background(post_message, cluster.primary.url, "never", w=2)
    wait_until(lambda: get_messages(cluster.primary.url) == ["never"], what="the append")
    for node in cluster.nodes:
        started = time.monotonic()
        assert node.stop(timeout=10) == 0
        assert time.monotonic() - started < 3
    waiting.join(10)
    assert result["value"].status == 503  # released, told its concern is unconfirmed


def test_a_primary_resumed_after_a_pause_never_judges_live_secondaries_dead(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}}, primary_env=FAST_HEARTBEAT_ENV)
    url = cluster.primary.url
    wait_until(lambda: all(s["state"] == "healthy" for s in get_health(url)["secondaries"]),
               10, what="both healthy")
    cluster.primary.pause()  # SIGSTOP: the primary hears nothing for 20 heartbeats
    time.sleep(2.0)  # the fault itself lasts this long; nothing waits on it
    cluster.primary.resume()
    seen = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        health = get_health(url)
        seen.append((health["read_only"], sorted(s["state"] for s in health["secondaries"])))
    assert not any(read_only for read_only, _ in seen), "it must not turn read-only"
    assert all("unhealthy" not in states for _, states in seen), seen[:5]
