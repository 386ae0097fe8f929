"""Durability (issue 10): nodes that crash and restart, with and without a
DATA_DIR, lose no acknowledged message, and nothing makes a node throw its
log away.

Real processes on 127.0.0.1, heartbeats every 0.1 s; workloads are checked
with the Jepsen-style checker in tests/support/checker.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid

import pytest

from shared.log.sqlite_log import FILE_NAME, SqliteLog
from tests.integration.test_failures import FAST_HEARTBEAT_ENV, in_background, secondary_state
from tests.integration.test_start_failures import assert_clean_exit, run_node
from tests.support.checker import OK, History, Snapshotter, check, incarnation, wait_for_convergence
from tests.support.durability import Writers, data_dir, length, wait_for_length
from tests.support.raw_peer import HandMadePrimary, RawPeer
from tests.support.http import get_health, get_messages, post_batch, post_message
from tests.support.processes import Cluster
from tests.support.waiting import wait_until

#: Appends the writers make before the crash, and after the restart.
BEFORE_CRASH = AFTER_RESTART = 300


def durable_cluster(make_cluster, tmp_path):
    """A primary and s1, s2, each with a DATA_DIR of its own."""
    return make_cluster(
        {name: data_dir(tmp_path, name) for name in ("s1", "s2")},
        primary_env={**FAST_HEARTBEAT_ENV, **data_dir(tmp_path, "primary")},
    )


def crash_under_load(cluster, crash):
    """Writers run; after BEFORE_CRASH appends ``crash()`` (which kills and
    restarts nodes) runs; the writers go on until AFTER_RESTART more are in.
    Returns the History, the snapshots and the converged lists."""
    url = cluster.primary.url
    history = History()
    with Snapshotter(cluster.urls) as snapshotter:
        with Writers(history, url):
            wait_for_length(url, BEFORE_CRASH)
            crash()
            wait_for_length(url, length(url) + AFTER_RESTART)
        final = wait_for_convergence(cluster.urls)
    return history, snapshotter.snapshots, final


def acknowledged(history: History, w: int) -> int:
    return sum(call.w == w for call in history.by_outcome(OK))


def assert_every_w_acknowledged(history: History) -> None:
    for w in (1, 2, 3):
        assert acknowledged(history, w) > 50, f"too few w={w} appends were acknowledged"


# -- crashes under load ---------------------------------------------------------


def test_durable_primary_killed_under_load_keeps_every_acknowledged_message(make_cluster, tmp_path):
    cluster = durable_cluster(make_cluster, tmp_path)

    def crash():
        cluster.primary.kill()
        cluster.primary.restart()

    history, snapshots, final = crash_under_load(cluster, crash)
    assert check(history, snapshots, final) == []
    assert_every_w_acknowledged(history)
    cluster.primary.wait_for_log(re.compile(r"leading history \w+ as run 2 from id [1-9]"))
    assert cluster.primary.log().count("recovering: asking") == 1, "a primary that kept its log recovers nothing"


def test_in_memory_primary_killed_under_load_keeps_every_w2_and_w3_message(make_cluster):
    # Random delays store entries out of order: at the crash, each secondary
    # holds some past a gap, and recovery takes the gap-free union.
    delayed = {"REPLICATION_DELAY": "0-0.03"}
    cluster = make_cluster({"s1": delayed, "s2": delayed}, primary_env=FAST_HEARTBEAT_ENV)
    url = cluster.primary.url
    crashed_run = []

    def crash():
        crashed_run.append(incarnation(url))
        cluster.primary.kill()
        cluster.primary.restart()

    history, snapshots, final = crash_under_load(cluster, crash)
    # Only the crashed primary held what it had not yet replicated: a w=1 append
    # may be lost, and what that primary showed may have been replaced since.
    assert check(history, snapshots, final, may_lose=lambda call: call.w == 1,
                 unchecked={"primary": crashed_run}) == []
    assert_every_w_acknowledged(history)
    cluster.primary.wait_for_log(re.compile(r"recovered [1-9]\d* messages of history \w+ from s[12], s[12] in"))


def test_durable_secondary_killed_under_load_keeps_its_log_and_is_caught_up(make_cluster, tmp_path):
    cluster = durable_cluster(make_cluster, tmp_path)
    s1 = cluster["s1"]

    def crash():
        held = length(s1.url)
        s1.kill()
        s1.restart()
        assert length(s1.url) >= held, "it reloads what it held before /health answers"

    history, snapshots, final = crash_under_load(cluster, crash)
    # s1 kept its incarnation, so the checker holds it to a list that only grew.
    assert {state for state, _ in snapshots["s1"]} == {incarnation(s1.url)}
    assert check(history, snapshots, final) == []
    assert_every_w_acknowledged(history)
    s1.wait_for_log(re.compile(r"loaded [1-9]\d* messages from "))
    cluster.shutdown()  # every line written
    assert "s1 restarted" not in cluster.primary.log()  # same state: only the tail is resent


def test_whole_durable_cluster_killed_under_load_comes_back_whole(make_cluster, tmp_path):
    cluster = durable_cluster(make_cluster, tmp_path)

    def crash():
        for node in cluster.nodes:
            node.kill()
        for node in cluster.secondaries.values():
            node.restart()
        # A restarted secondary serves its log while the primary is still down.
        assert all(length(node.url) >= BEFORE_CRASH // 2 for node in cluster.secondaries.values())
        cluster.primary.restart()

    history, snapshots, final = crash_under_load(cluster, crash)
    assert check(history, snapshots, final) == []
    assert_every_w_acknowledged(history)


# -- only the missing tail is resent --------------------------------------------


def fill(url: str, count: int, w: int) -> None:
    """Append m0..m{count-1} in batches of 100."""
    for start in range(0, count, 100):
        assert post_batch(url, [f"m{i}" for i in range(start, start + 100)], w=w).status == 201


@pytest.mark.parametrize("fsync", ["always", "off"])
def test_a_restarted_durable_secondary_is_resent_only_its_missing_tail(make_cluster, tmp_path, fsync):
    cluster = make_cluster({"s1": {**data_dir(tmp_path, "s1"), "FSYNC": fsync}, "s2": {}},
                           primary_env=FAST_HEARTBEAT_ENV, relayed=("s1",))
    url, s1, relay = cluster.primary.url, cluster["s1"], cluster.relays["s1"]
    fill(url, 2000, w=3)
    s1.kill()
    wait_until(lambda: secondary_state(url, "s1") == "unhealthy", 10, what="s1 unhealthy")
    sent_before = relay.appended_entries
    for i in range(100):
        assert post_message(url, f"tail{i}", w=2).status == 201
    s1.restart()
    s1.wait_for_log("loaded 2000 messages")
    wait_until(lambda: length(s1.url) == 2100, 20, what="s1 to catch up")
    resent = relay.appended_entries - sent_before
    # Each of the 100 at most twice (into the window of frames in flight before
    # the primary gave up on s1, then after its restart); the 2,000 it kept, never.
    assert 100 <= resent <= 200, f"{resent} entries were sent to catch s1 up on 100"
    assert get_messages(s1.url) == get_messages(url)
    # Without fsync it cannot vouch for what it acknowledged: a new incarnation,
    # resent from what it holds at its first answer: the 2,000 messages it
    # reloaded, and maybe some of the tail already, from frames its primary
    # queued while it was down (the count is that of the primary's pass).
    if fsync == "always":
        cluster.primary.wait_for_log("s1 caught up: 100 messages")
        assert "s1 restarted" not in cluster.primary.log()
    else:
        wait_until(lambda: re.search(r"s1 restarted \(it holds (\d+) messages\)", cluster.primary.log()),
                   10, what="the primary to log s1's new life")
        held = re.search(r"s1 restarted \(it holds (\d+) messages\)", cluster.primary.log())[1]
        assert 2000 <= int(held) <= 2100


@pytest.mark.parametrize("durable", [True, False], ids=["data-dir", "in-memory"])
def test_a_restarted_primary_resends_nothing_its_secondaries_hold(make_cluster, tmp_path, durable):
    cluster = make_cluster({"s1": {}, "s2": {}}, relayed=("s1",),
                           primary_env={**FAST_HEARTBEAT_ENV,
                                        **(data_dir(tmp_path, "primary") if durable else {})})
    url, relay = cluster.primary.url, cluster.relays["s1"]
    fill(url, 2000, w=3)
    cluster.primary.kill()
    sent_before = relay.appended_entries
    cluster.primary.restart()
    for i in range(10):
        assert post_message(url, f"after{i}", w=3).status == 201
    resent = relay.appended_entries - sent_before
    assert 10 <= resent <= 50, f"{resent} entries were sent to s1 for 10 new ones"
    assert get_messages(cluster["s1"].url) == get_messages(url)
    assert len(get_messages(url)) == 2010


# -- a fresh cluster ------------------------------------------------------------


@pytest.mark.parametrize("durable, heartbeat", [(False, 0.1), (True, 0.1), (False, 1.0)],
                         ids=["in-memory", "data-dir", "default-heartbeats"])
def test_fresh_cluster_with_s2_down_answers_msg1_at_once(make_cluster, tmp_path, durable, heartbeat):
    """Two heartbeats after s1 answers, not RECOVERY_TIMEOUT; and s1 is asked
    at once, not a heartbeat later."""
    def env(name):
        return data_dir(tmp_path, name) if durable else {}

    beats = FAST_HEARTBEAT_ENV if heartbeat == 0.1 else {}
    cluster = make_cluster({"s1": env("s1"), "s2": env("s2")}, down=("s2",),
                           primary_env={**beats, "RECOVERY_TIMEOUT": "10", **env("primary")})
    url = cluster.primary.url
    assert get_messages(url) == []
    msg1 = post_message(url, "Msg1", w=1)
    assert msg1.status == 201 and msg1.json["id"] == 0
    # The answer's own time only tells the two rules apart (RECOVERY_TIMEOUT
    # is 10 s); the primary's measure of its recovery, free of HTTP and of a
    # loaded machine's scheduling, is held to two heartbeats.
    assert msg1.elapsed < 5, "it must not wait for RECOVERY_TIMEOUT"
    found = cluster.primary.wait_for_log(re.compile(r"recovery found no history: a new cluster \((\d+\.\d+)s\)"))
    assert found and float(found.group(1)) < 2 * heartbeat + 0.6, found
    assert post_message(url, "Msg2", w=2).status == 201
    assert get_messages(cluster["s1"].url) == ["Msg1", "Msg2"]


# -- forged frames --------------------------------------------------------------


def test_the_old_epoch_trick_no_longer_wipes_a_secondary(make_cluster, ctx):
    cluster = make_cluster({"s1": {}, "s2": {}}, primary_env=FAST_HEARTBEAT_ENV)
    url, s1 = cluster.primary.url, cluster["s1"]
    for message in ("a", "b", "c"):
        assert post_message(url, message, w=3).status == 201
    real = get_health(s1.url)
    peer = RawPeer(ctx, s1.replication_endpoint)
    try:
        # Another cluster's primary, of a much newer term, writes at 0 and at 3.
        forger = HandMadePrimary(peer, term=real["term"] + 99, cluster=uuid.uuid4().hex)
        answers = [forger.append(0, "forged"), forger.append(3, "forged")]
    finally:
        peer.close()
    assert not any(answer.success for answer in answers), "a forged append was acknowledged"
    assert all(answer.diverged and answer.term == real["term"] for answer in answers), answers
    assert get_messages(s1.url) == ["a", "b", "c"]
    health = get_health(s1.url)
    assert (health["history"], health["run"]) == (real["history"], real["run"])
    assert health["bad_frames"] > real["bad_frames"]
    assert post_message(url, "d", w=3).status == 201  # the primary still replicates to it
    assert get_messages(s1.url) == ["a", "b", "c", "d"]
    assert secondary_state(url, "s1") == "healthy"


# -- recovery of an in-memory primary -------------------------------------------


def test_appends_during_recovery_wait_or_time_out_with_503(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}},
                           primary_env={**FAST_HEARTBEAT_ENV, "RECOVERY_TIMEOUT": "3"})
    url = cluster.primary.url
    before = [f"m{i}" for i in range(5)]
    for message in before:
        assert post_message(url, message, w=3).status == 201
    cluster["s2"].kill()  # it held the history: recovery waits RECOVERY_TIMEOUT for it
    cluster.primary.kill()
    cluster.primary.restart()
    health = get_health(url)  # 200 while recovering
    assert health["recovering"] is True and health["history"] is None
    waiting, waited = in_background(post_message, url, "waited", w=2)
    refused = post_message(url, "refused", w=1, timeout=0.5)
    assert refused.status == 503 and refused.json["error"].startswith("recovering: "), refused.json
    assert refused.headers["Retry-After"] == "1" and refused.elapsed >= 0.5
    assert waiting.is_alive(), "an append without a timeout waits for the recovery"
    shown = get_messages(url)
    assert shown == before[: len(shown)]
    waiting.join(30)
    assert waited["value"].status == 201 and waited["value"].json["id"] == 5
    assert get_messages(url) == [*before, "waited"]
    assert not get_health(url)["recovering"]
    found = cluster.primary.wait_for_log(re.compile(r"recovered 5 messages of history \w+ from s1 in (\d+\.\d+)s"))
    assert found and 2.5 <= float(found.group(1)) < 4.5  # RECOVERY_TIMEOUT, and the fetch
    assert "no answer from s2" in cluster.primary.log()
    cluster["s2"].restart()
    final = wait_for_convergence(cluster.urls, 20)
    assert all(messages == [*before, "waited"] for messages in final.values()), final


@pytest.mark.parametrize("away", ["paused-in-memory", "killed-with-data-dir"])
def test_a_secondary_away_through_recovery_loses_only_what_it_alone_held(make_cluster, tmp_path, away):
    """The documented limit: s2 alone held m5..m7 when the primary, in memory,
    crashed and recovered from s1 without it. Back, s2 truncates them."""
    durable = away == "killed-with-data-dir"
    cluster = make_cluster({"s1": {}, "s2": data_dir(tmp_path, "s2") if durable else {}},
                           relayed=("s1",), primary_env={**FAST_HEARTBEAT_ENV, "RECOVERY_TIMEOUT": "2"})
    url, s2, relay = cluster.primary.url, cluster["s2"], cluster.relays["s1"]
    for i in range(5):
        assert post_message(url, f"m{i}", w=3).status == 201
    relay.set_faults(drop=1.0)  # s1 hears nothing more
    for i in range(5, 8):
        assert post_message(url, f"m{i}", w=2).status == 201  # the primary and s2
    assert get_messages(cluster["s1"].url) == [f"m{i}" for i in range(5)]
    if durable:
        s2.kill()
    else:
        s2.pause()  # SIGSTOP: it keeps its log, and answers nobody
    cluster.primary.kill()
    relay.set_faults(drop=0.0)
    cluster.primary.restart()
    after = post_message(url, "after", w=2)  # waits for the recovery from s1
    assert after.status == 201 and after.json["id"] == 5
    if durable:
        s2.restart()
        s2.wait_for_log("loaded 8 messages")
    else:
        s2.resume()
    expected = [*(f"m{i}" for i in range(5)), "after"]
    final = wait_for_convergence(cluster.urls, 20)
    assert all(messages == expected for messages in final.values()), final
    s2.wait_for_log("truncated")
    truncations = [line for line in s2.log().splitlines() if "truncated" in line]
    assert len(truncations) == 1 and " WARNING " in truncations[0], truncations
    assert "truncated 3 message(s), ids 5..7" in truncations[0]
    if durable:  # the truncation is on disk: m5..m7 never come back
        s2.kill()
        s2.restart()
        assert get_messages(s2.url) == expected
        s2.wait_for_log("loaded 6 messages")


def test_with_every_secondary_up_recovery_keeps_what_only_one_held(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}}, relayed=("s1",),
                           primary_env={**FAST_HEARTBEAT_ENV, "RECOVERY_TIMEOUT": "10"})
    url, relay = cluster.primary.url, cluster.relays["s1"]
    for i in range(5):
        assert post_message(url, f"m{i}", w=3).status == 201
    relay.set_faults(drop=1.0)
    for i in range(5, 8):
        assert post_message(url, f"m{i}", w=2).status == 201  # only s2 holds m5..m7
    cluster.primary.kill()
    relay.set_faults(drop=0.0)
    cluster.primary.restart()
    after = post_message(url, "after", w=3)
    assert after.status == 201 and after.json["id"] == 8
    expected = [*(f"m{i}" for i in range(8)), "after"]
    final = wait_for_convergence(cluster.urls, 20)
    assert all(messages == expected for messages in final.values()), final
    cluster.primary.wait_for_log("recovered 8 messages")
    cluster.shutdown()  # every line written
    assert all("truncated" not in node.log() for node in cluster.secondaries.values())


def heard_from(url: str, secondary: str) -> bool:
    """Whether the primary at ``url`` heard ``secondary`` since it started."""
    health = get_health(url)
    return any(peer["name"] == secondary and peer["last_heard_s_ago"] is not None
               for peer in health["secondaries"])


def restart_in_memory_primary_heard_by_s1_first(cluster):
    """Every node in memory, both secondaries relayed: m0..m4 on every node, m5
    on the primary and s1 only (s1 holds the longest log: it is fetched from
    first). The primary is killed and restarted; returns once s1 has answered
    its recovery's question, with s2's answer held back by its relay."""
    url, to_s2 = cluster.primary.url, cluster.relays["s2"]
    for i in range(5):
        assert post_message(url, f"m{i}", w=3).status == 201
    to_s2.set_faults(drop=1.0)
    assert post_message(url, "m5", w=2).status == 201
    cluster.primary.kill()
    to_s2.set_faults(drop=0.0)
    to_s2.pause()
    cluster.primary.restart()
    wait_until(lambda: heard_from(url, "s1"), what="s1 to answer the recovering primary")


def assert_recovered_and_appends_after(cluster, recovered: int) -> None:
    """The recovery took m0..m<recovered - 1>: the next append gets the next id,
    and every node converges on them and it."""
    after = post_message(cluster.primary.url, "after", w=3)
    assert after.status == 201 and after.json["id"] == recovered, after.json
    expected = [*(f"m{i}" for i in range(recovered)), "after"]
    final = wait_for_convergence(cluster.urls, 20)
    assert all(messages == expected for messages in final.values()), final
    cluster.primary.wait_for_log(f"recovered {recovered} messages")


def test_a_source_that_restarts_without_its_log_before_the_fetch_is_passed_over(make_cluster):
    """Every node in memory. s1 answers the recovering primary (6 messages),
    then restarts empty before the primary, which waits for s2's answer,
    fetches from it. Its empty page is no "the log ends here": the primary
    takes the log from s2, and m0..m4, acknowledged by every node, survive
    (m5, which only the old primary and s1 held, is gone with them). Before,
    the recovery ended with nothing, and the new run wiped s2's log."""
    cluster = make_cluster({"s1": {}, "s2": {}}, relayed=("s1", "s2"),
                           primary_env={**FAST_HEARTBEAT_ENV, "RECOVERY_TIMEOUT": "30"})
    restart_in_memory_primary_heard_by_s1_first(cluster)
    cluster["s1"].kill()
    cluster["s1"].restart()
    cluster.relays["s2"].resume()
    assert_recovered_and_appends_after(cluster, 5)
    assert "s1 holds 0 entries, fewer than it said" in cluster.primary.log()


def test_a_primary_cut_off_from_every_source_while_it_fetches_waits_and_loses_nothing(make_cluster):
    """Both secondaries answer the recovering primary, then hear nothing from it
    (and it nothing from them) for several RECOVERY_TIMEOUTs while it fetches
    the log. It asks each again in turn, and once they are back takes the
    whole log. Before, it gave each up after RECOVERY_TIMEOUT and began its
    run with nothing: its first append truncated m0..m5 on both."""
    cluster = make_cluster({"s1": {}, "s2": {}}, relayed=("s1", "s2"),
                           primary_env={**FAST_HEARTBEAT_ENV, "RECOVERY_TIMEOUT": "0.5"})
    url, to_s1, to_s2 = cluster.primary.url, cluster.relays["s1"], cluster.relays["s2"]
    restart_in_memory_primary_heard_by_s1_first(cluster)
    to_s1.set_faults(drop=1.0)
    to_s2.resume()  # the primary decides on s2's answer, and fetches from s1
    wait_until(lambda: heard_from(url, "s2"), what="s2 to answer the recovering primary")
    to_s2.set_faults(drop=1.0)
    # Twice RECOVERY_TIMEOUT without an answer: where it used to give up.
    cluster.primary.wait_for_log(re.compile(r"s2 did not answer a fetch for [\d.]+s; asking s1|recovered \d+ "))
    assert get_health(url)["recovering"], "it ended its recovery without the log"
    to_s1.set_faults(drop=0.0)
    to_s2.set_faults(drop=0.0)
    wait_until(lambda: not get_health(url)["recovering"], what="the recovery to end")
    assert_recovered_and_appends_after(cluster, 6)


def test_an_in_memory_primary_recovers_its_idempotency_keys_from_the_secondaries(make_cluster):
    """The keys travel with their entries, so the log a primary takes over
    from its secondaries brings them back."""
    cluster = make_cluster({"s1": {}, "s2": {}}, primary_env=FAST_HEARTBEAT_ENV)
    url = cluster.primary.url
    first = post_message(url, "pay", w=3, headers={"Idempotency-Key": "order-42"})
    batch = post_batch(url, ["x", "y"], w=3, headers={"Idempotency-Key": "order-43"})
    assert (first.json["id"], batch.json["first_id"]) == (0, 1)
    cluster.primary.kill()
    cluster.primary.restart()
    replay = post_message(url, "pay", w=3, headers={"Idempotency-Key": "order-42"})
    assert replay.status == 200 and replay.json["id"] == 0 and replay.json["duplicate"] is True
    replayed_batch = post_batch(url, ["x", "y"], w=3, headers={"Idempotency-Key": "order-43"})
    assert replayed_batch.status == 200 and replayed_batch.json["first_id"] == 1
    assert post_message(url, "new", w=3).json["id"] == 3


def test_a_primary_killed_and_restarted_with_its_data_dir_still_knows_its_idempotency_keys(make_cluster, tmp_path):
    cluster = durable_cluster(make_cluster, tmp_path)
    url = cluster.primary.url
    first = post_message(url, "pay", w=3, headers={"Idempotency-Key": "order-42"})
    batch = post_batch(url, ["x", "y"], w=2, headers={"Idempotency-Key": "order-43"})
    assert (first.status, first.json["id"], batch.status, batch.json["first_id"]) == (201, 0, 201, 1)
    cluster.primary.kill()
    cluster.primary.restart()
    replay = post_message(url, "pay", w=3, headers={"Idempotency-Key": "order-42"})
    assert replay.status == 200 and replay.json["id"] == 0 and replay.json["duplicate"] is True
    assert replay.json["acks"] == 3
    replayed_batch = post_batch(url, ["x", "y"], w=2, headers={"Idempotency-Key": "order-43"})
    assert replayed_batch.status == 200 and replayed_batch.json["first_id"] == 1
    misused = post_message(url, "other", w=1, headers={"Idempotency-Key": "order-42"})
    assert misused.status == 409 and misused.json["id"] == 0
    assert post_message(url, "new", w=3).json["id"] == 3
    final = wait_for_convergence(cluster.urls, 20)
    assert all(messages == ["pay", "x", "y", "new"] for messages in final.values()), final


def test_a_recovering_primary_that_knows_its_quorum_is_lost_refuses_appends_at_once(make_cluster):
    """Not after RECOVERY_TIMEOUT: it is still recovering when it answers."""
    cluster = make_cluster({"s1": {}, "s2": {}},
                           primary_env={**FAST_HEARTBEAT_ENV, "RECOVERY_TIMEOUT": "120"})
    url = cluster.primary.url
    assert post_message(url, "before", w=3).status == 201
    cluster["s1"].stop()
    cluster["s2"].stop()
    cluster.primary.kill()
    cluster.primary.restart()  # in memory: it must recover its log from s1 and s2
    wait_until(lambda: all(s["state"] == "unhealthy" for s in get_health(url)["secondaries"]), 10,
               what="both secondaries declared unhealthy")
    refused = post_message(url, "nobody home", w=1, timeout=60)
    assert refused.status == 503 and refused.json["error"] == "read-only: no quorum"
    assert refused.headers["Retry-After"] == "1"
    health = get_health(url)
    assert health["recovering"] and health["length"] == 0, "it answered before recovery ended"


def test_a_primary_that_lost_its_data_dir_recovers_and_keeps_what_it_recovered(make_cluster, tmp_path):
    cluster = durable_cluster(make_cluster, tmp_path)
    url = cluster.primary.url
    fill(url, 300, w=2)
    cluster.primary.kill()
    shutil.rmtree(tmp_path / "primary")
    cluster.primary.restart()
    assert post_message(url, "after loss", w=2).json["id"] == 300
    cluster.primary.wait_for_log("recovered 300 messages")
    cluster.primary.kill()  # now it has a log of its own again
    cluster.primary.restart()
    cluster.primary.wait_for_log("loaded 301 messages")
    assert post_message(url, "after restart", w=3).json["id"] == 301
    expected = [*(f"m{i}" for i in range(300)), "after loss", "after restart"]
    final = wait_for_convergence(cluster.urls, 20)
    assert all(messages == expected for messages in final.values())


def test_secondaries_silent_through_recovery_are_diverged_when_they_return_never_wiped(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}},
                           primary_env={**FAST_HEARTBEAT_ENV, "RECOVERY_TIMEOUT": "1", "QUORUM": "1"})
    url = cluster.primary.url
    for message in ("a", "b", "c"):
        assert post_message(url, message, w=3).status == 201
    old_history = get_health(url)["history"]
    for node in cluster.secondaries.values():
        node.pause()  # SIGSTOP: they keep their logs, and answer nobody
    cluster.primary.kill()
    cluster.primary.restart()
    fresh = post_message(url, "new", w=1)  # after RECOVERY_TIMEOUT: a new cluster
    assert fresh.status == 201 and fresh.json["id"] == 0
    assert get_health(url)["history"] != old_history
    for node in cluster.secondaries.values():
        node.resume()
    for name in ("s1", "s2"):
        wait_until(lambda: secondary_state(url, name) == "diverged", 10, what=f"{name} diverged")
    assert post_message(url, "newer", w=1).status == 201
    for node in cluster.secondaries.values():
        assert get_messages(node.url) == ["a", "b", "c"]
        assert get_health(node.url)["history"] == old_history
    assert get_messages(url) == ["new", "newer"]


# -- another cluster's node ------------------------------------------------------


def test_a_secondary_with_another_clusters_data_is_diverged_and_never_written(
        make_cluster, tmp_path, ctx):
    other_dir = data_dir(tmp_path, "other-s1")
    (tmp_path / "other").mkdir()  # that cluster's logs
    other = Cluster(tmp_path / "other", {"s1": other_dir},
                    primary_env={**FAST_HEARTBEAT_ENV, "QUORUM": "1"}, ctx=ctx)
    try:
        other.start()
        for message in ("x0", "x1", "x2"):
            assert post_message(other.primary.url, message, w=2).status == 201
        other_history = get_health(other.primary.url)["history"]
    finally:
        other.shutdown()
    cluster = make_cluster({"s1": data_dir(tmp_path, "s1"), "s2": other_dir}, down=("s2",),
                           primary_env={**FAST_HEARTBEAT_ENV, **data_dir(tmp_path, "primary")})
    url, s2 = cluster.primary.url, cluster["s2"]
    for message in ("b0", "b1"):
        assert post_message(url, message, w=2).status == 201
    assert get_health(url)["history"] != other_history
    s2.restart()
    wait_until(lambda: secondary_state(url, "s2") == "diverged", 10, what="s2 diverged")
    cluster.primary.wait_for_log("s2 is diverged")
    errors = [line for line in cluster.primary.log().splitlines() if "s2 is diverged" in line]
    assert len(errors) == 1 and " ERROR " in errors[0] and "empty its DATA_DIR" in errors[0], errors
    assert post_message(url, "b2", w=2).status == 201
    unconfirmed = post_message(url, "b3", w=3, timeout=1)
    assert unconfirmed.status == 504 and unconfirmed.json["acks"] == 2
    assert get_messages(s2.url) == ["x0", "x1", "x2"]  # never written to
    assert get_health(s2.url)["history"] == other_history
    assert get_health(url)["available_nodes"] == 2  # s2 does not count
    cluster["s1"].stop()
    wait_until(lambda: get_health(url)["read_only"], 10, what="read-only without s1")
    refused = post_message(url, "b4", w=1)
    assert refused.status == 503 and refused.json["error"] == "read-only: no quorum"
    assert get_messages(s2.url) == ["x0", "x1", "x2"]


# -- a full disk --------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs, mounted for the test and unmounted after it."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (it takes root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_refuses_appends_with_503_until_space_returns(make_cluster, small_disk):
    cluster = make_cluster({}, primary_env={**FAST_HEARTBEAT_ENV, "DATA_DIR": str(small_disk / "log")})
    primary = cluster.primary
    try:
        url = primary.url
        assert post_message(url, "before", w=1).status == 201
        filler = small_disk / "filler"
        filler.write_bytes(b"\1" * (shutil.disk_usage(small_disk).free - (64 << 10)))
        bulk = "x" * (16 << 10)
        for i in range(200):
            failed = post_message(url, f"{i}:{bulk}", w=1)
            if failed.status != 201:
                break
        assert failed.status == 503, failed.body
        assert failed.json["error"].startswith("storage unavailable: ") and "id" in failed.json
        failed_id = failed.json["id"]
        later = post_message(url, "later", w=1)
        assert later.status == 503 and later.json["error"].startswith("storage unavailable: ")
        assert "id" not in later.json and later.headers["Retry-After"] == "1"
        shown = get_messages(url)  # reads go on
        assert shown[0] == "before" and "later" not in shown
        filler.unlink()
        tries: list[str] = []

        def append_again():
            tries.append(f"resumed{len(tries)}")
            response = post_message(url, tries[-1], w=1)
            return response if response.status == 201 else None

        resumed = wait_until(append_again, 10, what="appends to resume")
        assert primary.running
        messages = get_messages(url)
        assert messages[resumed.json["id"]] == tries[-1]
        if len(messages) > failed_id:  # not acknowledged, but it may be stored later: at its id
            assert messages[failed_id] == f"{i}:{bulk}"
        assert "later" not in messages
        assert "disk is full" in failed.json["error"], "the error must say why: " + failed.json["error"]
    finally:
        if primary.running:
            primary.stop()


# -- bad configuration and unusable stores --------------------------------------------


ROLES = ["primary", "secondary"]


def start_alone(role: str, tmp_path, **env) -> subprocess.CompletedProcess:
    """Run a node that is expected to refuse to start; PORT_FILE tells if it did."""
    port_file = tmp_path / f"{role}.ports.json"
    result = run_node(role, {"HTTP_PORT": "0", "REPLICATION_BIND": "tcp://127.0.0.1:0",
                             "PORT_FILE": str(port_file), **env})
    assert not port_file.exists(), "it started"
    assert_clean_exit(result.stderr)
    return result


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", ["a-file", "under-a-file", "unwritable", "uncreatable"])
def test_an_unusable_data_dir_exits_2_naming_it(role, case, tmp_path):
    regular_file = tmp_path / "a-file"
    regular_file.write_text("not a directory")
    path, reason = {
        "a-file": (regular_file, "is not a directory"),
        "under-a-file": (regular_file / "data", "cannot create"),
        "unwritable": ("/proc/self", "is not writable"),  # root ignores modes, not procfs
        "uncreatable": ("/proc/replicated-log-data", "cannot create"),
    }[case]
    result = start_alone(role, tmp_path, DATA_DIR=str(path))
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert "DATA_DIR" in line and reason in line and str(path) in line, line


@pytest.mark.parametrize("role", ROLES)
def test_a_corrupt_store_exits_1_and_starts_nothing(role, tmp_path):
    store_dir = tmp_path / "data"
    store_dir.mkdir()
    (store_dir / FILE_NAME).write_bytes(b"this is not a SQLite database\n" * 200)
    result = start_alone(role, tmp_path, DATA_DIR=str(store_dir))
    assert result.returncode == 1, result.stderr
    assert "is not a usable store" in one_line(result)
    assert (store_dir / FILE_NAME).read_bytes() == b"this is not a SQLite database\n" * 200


@pytest.mark.parametrize("role, other", [("primary", "secondary"), ("secondary", "primary")])
def test_the_other_roles_store_exits_1_and_starts_nothing(role, other, tmp_path):
    store_dir = tmp_path / "data"
    store_dir.mkdir()
    SqliteLog(str(store_dir), other, fsync=True, key_capacity=10).close()
    result = start_alone(role, tmp_path, DATA_DIR=str(store_dir))
    assert result.returncode == 1, result.stderr
    assert f"belongs to a {other}, not a {role}" in one_line(result)


@pytest.mark.parametrize("role, variable", [("primary", "FSYNC"), ("secondary", "FSYNC"),
                                            ("primary", "RECOVERY_TIMEOUT")])
def test_a_bogus_durability_setting_exits_2_naming_it(role, variable, tmp_path):
    result = start_alone(role, tmp_path, **{variable: "bogus"})
    assert result.returncode == 2, result.stderr
    assert f"{variable}:" in one_line(result)
