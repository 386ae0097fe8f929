"""Failover (PEERS): three real nodes elect a primary among themselves, and
elect another when it dies or is cut off, losing no write a majority
acknowledged.

Real processes on 127.0.0.1, each with a DATA_DIR, and every replication
link through a TcpRelay that a test can cut (tests/support/failover.py).
Elections are fast here: ELECTION_TIMEOUT 0.5 s, heartbeats every 0.05 s,
unless a test says otherwise. Workloads are checked with
tests/support/checker.check_failover.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import uuid

import pytest

from shared.wire.keys import create_pairs, public_file, secret_file
from tests.integration.test_security import every_key_text
from tests.integration.test_start_failures import assert_clean_exit, run_node
from tests.support.checker import OK, History, Snapshotter, check_failover
from tests.support.failover import (
    ELECTION_TIMEOUT_S, FailoverCluster, FailoverWriters, get_committed, majority_acks,
    wait_for_majority_acks, wait_role,
)
from tests.support.http import get_health, get_messages, post_message, request
from tests.support.waiting import wait_until

MAJORITY = 2  # of 3
#: What the WARNING of a node that truncates its log says.
TRUNCATION = re.compile("truncat", re.IGNORECASE)


def snapshotters(cluster: FailoverCluster) -> tuple[Snapshotter, Snapshotter]:
    """Readers of every node's committed list and of its whole list, each
    snapshot filed under the node's run (a restarted node starts a new one)."""
    def run_of(name, url):
        return cluster.incarnation(name)

    return (Snapshotter(cluster.urls, read=get_committed, incarnation_of=run_of),
            Snapshotter(cluster.urls, incarnation_of=run_of))


def served_by(response) -> str | None:
    return next((v for k, v in response.headers.items() if k.lower() == "served-by"), None)


def acknowledged(history: History, w) -> list:
    return [c for c in history.by_outcome(OK) if c.w == w]


def truncation_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "truncat" in line.lower()]


# -- the primary dies ---------------------------------------------------------------


def test_killing_the_primary_three_times_under_load_loses_no_majority_write(make_failover):
    cluster = make_failover()
    history = History()
    leader = cluster.primary()
    terms = [cluster.term(leader)]
    leaders = [leader]
    committed, lists = snapshotters(cluster)
    with committed, lists:
        with FailoverWriters(history, cluster, threads=6, ws=(1, 2, "all"), timeout=1.0):
            for _ in range(3):
                wait_for_majority_acks(history, MAJORITY, 20, since=time.monotonic())
                cluster.kill(leader)
                survivors = cluster.secondaries(leader)
                successor = cluster.primary(among=survivors, above_term=terms[-1])
                terms.append(cluster.term(successor))
                # Writes resume with the old primary still down...
                wait_for_majority_acks(history, MAJORITY, 20, since=time.monotonic())
                cluster.restart(leader)  # ...and it comes back, as a secondary
                leader = successor
                leaders.append(leader)
            wait_for_majority_acks(history, MAJORITY, 20, since=time.monotonic())
        final, committed_final = cluster.converge()
    violations = check_failover(history, committed.snapshots, final, MAJORITY,
                                snapshots=lists.snapshots, committed_final=committed_final)
    assert violations == [], violations
    assert terms == sorted(set(terms)), f"each new primary has a higher term: {terms}"
    assert all(a != b for a, b in zip(leaders, leaders[1:])), leaders
    for w in (1, 2, "all"):
        assert len(acknowledged(history, w)) >= 5, f"too few w={w} appends were acknowledged"
    # Every primary served acknowledged appends, and the writers reached it through every node.
    assert set(leaders) <= {c.served_by for c in history.by_outcome(OK)}
    assert {c.sent_to for c in history.by_outcome(OK)} == set(cluster.urls.values())
    assert len(final["n1"]) >= len(majority_acks(history, MAJORITY))


def test_the_whole_cluster_killed_under_load_comes_back_with_every_majority_write(make_failover):
    cluster = make_failover()
    history = History()
    term = cluster.term(cluster.primary())
    committed, lists = snapshotters(cluster)
    with committed, lists:
        with FailoverWriters(history, cluster, threads=6, ws=(1, 2, "all"), timeout=1.0):
            wait_for_majority_acks(history, MAJORITY, 40, since=0.0)
            for name in cluster.names:
                cluster.kill(name)
            held = len(majority_acks(history, MAJORITY))
            for name in cluster.names:
                cluster.restart(name)
            # Each kept its term and its log: the next election is of a higher term.
            assert all(cluster.term(name) >= term for name in cluster.names)
            cluster.primary(above_term=term)
            wait_for_majority_acks(history, MAJORITY, 20, since=time.monotonic())
        final, committed_final = cluster.converge()
    violations = check_failover(history, committed.snapshots, final, MAJORITY,
                                snapshots=lists.snapshots, committed_final=committed_final)
    assert violations == [], violations
    assert held >= 40 and len(final["n1"]) >= held + 20


# -- partitions -------------------------------------------------------------------------


def test_an_isolated_primary_steps_down_and_its_lone_w1_write_is_truncated(make_failover):
    timeout = 1.0  # a wider window for the isolated primary's write
    cluster = make_failover(env={"ELECTION_TIMEOUT": str(timeout), "HEARTBEAT_INTERVAL": "0.1"})
    old = cluster.primary()
    old_term, old_url = cluster.term(old), cluster[old].url
    base = [f"base{i}" for i in range(3)]
    for message in base:
        assert post_message(old_url, message, w="all", timeout=5).status == 201
    cluster.isolate(old)
    isolated_at = time.monotonic()
    lonely = post_message(old_url, "lonely", w=1)
    assert lonely.status == 201 and lonely.json["id"] == 3, lonely.body
    assert served_by(lonely) == old
    # A w=2 append waits for acks that cannot come, until the primary steps down:
    # appended (it has an id), its fate unknown.
    unconfirmed = post_message(old_url, "unconfirmed", w=2, timeout=10)
    assert unconfirmed.status == 503 and unconfirmed.json.get("id") == 4, unconfirmed.body
    assert unconfirmed.json["acked_by"] == [old]
    assert get_messages(old_url) == [*base, "lonely", "unconfirmed"]
    assert get_committed(old_url) == base, "what only the old primary holds is not committed"

    down = wait_role(cluster, old, lambda h: h["role"] != "primary", 5 * timeout, "to step down")
    stepped_down_after = time.monotonic() - isolated_at
    assert stepped_down_after < 3 * timeout, f"it stepped down {stepped_down_after:.2f}s after the cut"
    assert down["term"] == old_term, down
    # A tailing committed read is not woken by what the old primary alone holds.
    tail = request("GET", f"{old_url}/messages?committed=true&from=3&wait=0.5")
    assert tail.status == 200 and tail.json["messages"] == [] and tail.elapsed >= 0.45, tail.body
    held = request("GET", f"{old_url}/messages?from=3&wait=0.5")
    assert held.json["messages"] == ["lonely", "unconfirmed"] and held.elapsed < 0.45, held.body
    others = cluster.secondaries(old)
    new = cluster.primary(among=others, above_term=old_term)
    new_term, new_url = cluster.term(new), cluster[new].url
    after = [f"after{i}" for i in range(3)]
    for i, message in enumerate(after):
        written = post_message(new_url, message, w=2, timeout=5)
        assert written.status == 201 and written.json["id"] == 3 + i, written.body
    # Cut off, the old primary knows no primary, takes nothing, and raises no term.
    refused = post_message(old_url, "refused", w=1, timeout=5)
    assert refused.status == 503 and "no primary" in refused.json["error"], refused.body
    assert "id" not in refused.json and refused.headers.get("Retry-After") == "1"
    assert get_health(old_url)["term"] == old_term

    cluster.heal()
    final, committed = cluster.converge()
    expected = [*base, *after]
    assert final == committed == {name: expected for name in cluster.names}, final
    cluster[old].wait_for_log(TRUNCATION)
    lines = truncation_lines(cluster[old].log())
    assert lines and all(" WARNING " in line for line in lines), lines
    for name in others:
        assert not truncation_lines(cluster[name].log()), f"{name} truncated something"
    assert cluster.primary() == new and cluster.term(new) == new_term
    following = wait_role(cluster, old, lambda h: h["primary"] == new, 5, "to follow the new primary")
    assert following["role"] == "secondary" and following["term"] == new_term


def test_a_secondary_cut_off_and_healed_does_not_depose_the_primary(make_failover):
    cluster = make_failover()
    leader = cluster.primary()
    term, leader_url = cluster.term(leader), cluster[leader].url
    loner, other = cluster.secondaries(leader)
    for i in range(3):
        assert post_message(leader_url, f"before{i}", w="all", timeout=5).status == 201
    cluster.isolate(loner)
    # It hears no primary for several election timeouts, and stands (pre-votes) again and again.
    cut_off = wait_role(
        cluster, loner,
        lambda h: (h["primary"] is None or h["role"] != "secondary")
        and (h["peers"][leader]["last_heard_s_ago"] or 0) > 4 * ELECTION_TIMEOUT_S,
        20, "to have heard no primary for 4 election timeouts")
    assert cut_off["term"] == term, "PreVote: a node cut off raises no term"
    assert cut_off["role"] != "primary"
    for i in range(5):
        written = post_message(leader_url, f"meanwhile{i}", w=2, timeout=5)
        assert written.status == 201 and loner not in written.json["acked_by"], written.body
    assert cluster.primary(among=[leader, other]) == leader and cluster.term(leader) == term
    cluster.heal()
    wait_role(cluster, loner, lambda h: h["primary"] == leader and h["role"] == "secondary"
              and h["length"] == 8 and h["committed"] == 8, 10, "to rejoin and catch up")
    written = post_message(leader_url, "after", w="all", timeout=5)
    assert written.status == 201 and written.json["acks"] == 3, written.body
    final, committed = cluster.converge()
    assert final == committed and len(final[loner]) == 9
    assert cluster.primary() == leader
    assert {name: cluster.term(name) for name in cluster.names} == {name: term for name in cluster.names}
    assert cluster.primaries_by_term == {term: leader}


def test_a_secondary_cut_off_from_the_primary_alone_deposes_no_one(make_failover):
    """The partial partition: the loner still reaches the other secondary, which
    hears the primary and so refuses it its pre-vote."""
    cluster = make_failover()
    leader = cluster.primary()
    term, leader_url = cluster.term(leader), cluster[leader].url
    loner, other = cluster.secondaries(leader)
    cluster.cut(leader, loner)
    wait_role(cluster, loner,
              lambda h: (h["peers"][leader]["last_heard_s_ago"] or 0) > 4 * ELECTION_TIMEOUT_S,
              20, "to have heard no primary for 4 election timeouts")
    for i in range(3):
        written = post_message(leader_url, f"m{i}", w=2, timeout=5)
        assert written.status == 201, written.body
        assert sorted(written.json["acked_by"]) == sorted([leader, other]), written.body
    assert cluster.healths()[loner]["term"] == term
    assert cluster.primary(among=[leader, other]) == leader and cluster.term(leader) == term
    cluster.heal()
    final, committed = cluster.converge()
    assert final == committed == {name: ["m0", "m1", "m2"] for name in cluster.names}
    assert cluster.primary() == leader
    assert {cluster.term(name) for name in cluster.names} == {term}


def test_committed_reads_never_show_what_a_failover_rolls_back(make_failover):
    cluster = make_failover()
    history = History()
    old = cluster.primary()
    old_term = cluster.term(old)
    committed, lists = snapshotters(cluster)
    with committed, lists:
        # The writers follow the primary, as clients that read Served-By do: cut
        # off, it still takes their w=1 writes until it steps down.
        with FailoverWriters(history, cluster, threads=4, ws=(1, 1, 2), spread=False, timeout=0.5):
            wait_for_majority_acks(history, MAJORITY, 20, since=time.monotonic())
            cluster.isolate(old)
            wait_role(cluster, old, lambda h: h["role"] != "primary", 10, "to step down")
            new = cluster.primary(among=cluster.secondaries(old), above_term=old_term)
            wait_for_majority_acks(history, MAJORITY, 20, since=time.monotonic())
            cluster.heal()
            wait_for_majority_acks(history, MAJORITY, 20, since=time.monotonic())
        final, committed_final = cluster.converge()
    violations = check_failover(history, committed.snapshots, final, MAJORITY,
                                snapshots=lists.snapshots, committed_final=committed_final)
    assert violations == [], violations
    held = set(final[old])
    rolled_back = {c.message for c in acknowledged(history, 1) if c.message not in held}
    assert rolled_back, "the isolated primary acknowledged w=1 writes that were then rolled back"
    assert all(c.served_by == old for c in acknowledged(history, 1) if c.message in rolled_back)
    shown_by_old = {m for _, snapshot in lists.snapshots[old] for m in snapshot}
    assert rolled_back & shown_by_old, "the old primary showed them in GET /messages"
    for name, seen in committed.snapshots.items():
        assert seen, f"no committed read of {name} succeeded"
        shown = {m for _, snapshot in seen for m in snapshot}
        assert not shown & rolled_back, f"{name} showed as committed what was rolled back"
    assert cluster.primary() == new
    cluster[old].wait_for_log(TRUNCATION)


def test_a_paused_primary_woken_after_a_failover_acknowledges_no_majority_write(make_failover):
    """A primary that stalls (SIGSTOP, as in a long GC pause or a VM migration)
    while the others elect a successor, and then runs on as if nothing happened."""
    cluster = make_failover()
    old = cluster.primary()
    old_term, old_url = cluster.term(old), cluster[old].url
    history = History()
    for _ in range(3):
        assert history.append(old_url, "all", timeout=5).outcome == OK
    cluster[old].pause()
    # Clients that sent their appends to the stalled primary, and wait for its answer.
    stalled = [threading.Thread(target=history.append, args=(old_url, w), kwargs={"timeout": 2},
                                name=f"stalled-client-{i}") for i, w in enumerate((1, 2, "all", 2))]
    for thread in stalled:
        thread.start()
    new = cluster.primary(among=cluster.secondaries(old), above_term=old_term)
    for _ in range(3):
        assert history.append(cluster[new].url, 2, timeout=5).outcome == OK
    cluster[old].resume()
    for thread in stalled:
        thread.join(30)
    assert not any(thread.is_alive() for thread in stalled)
    final, committed = cluster.converge()
    assert check_failover(history, {}, final, MAJORITY, committed_final=committed) == []
    for call in [c for c in history.calls[3:] if c.sent_to == old_url]:  # the stalled ones
        if call.outcome == OK and call.w != 1:
            assert call.served_by == new, f"the deposed primary acknowledged {call}"
    assert len(final[new]) >= 6
    assert cluster.primary() == new and cluster.term(old) == cluster.term(new) > old_term


# -- clients ------------------------------------------------------------------------------


def test_an_idempotency_key_retried_after_a_failover_gets_the_original_id(make_failover):
    cluster = make_failover()
    old = cluster.primary()
    old_term = cluster.term(old)
    key = {"Idempotency-Key": "order-42"}
    first = post_message(cluster[old].url, "pay", w=2, timeout=5, headers=key)
    assert first.status == 201 and first.json["id"] == 0, first.body
    assert post_message(cluster[old].url, "other", w=2, timeout=5).json["id"] == 1
    cluster.kill(old)
    new = cluster.primary(among=cluster.secondaries(old), above_term=old_term)
    (third,) = [name for name in cluster.names if name not in (old, new)]
    for via in (new, third):  # the new primary, and a secondary that forwards it there
        replay = post_message(cluster[via].url, "pay", w=2, timeout=5, headers=key)
        assert replay.status == 200, (via, replay.body)
        assert replay.json["id"] == 0 and replay.json["duplicate"] is True, (via, replay.body)
        assert served_by(replay) == new
    fresh = post_message(cluster[new].url, "next", w=2, timeout=5)
    assert fresh.status == 201 and fresh.json["id"] == 2, fresh.body
    cluster.restart(old)
    final, committed = cluster.converge()
    assert final == committed == {name: ["pay", "other", "next"] for name in cluster.names}, final
    again = post_message(cluster[old].url, "pay", w=2, timeout=5, headers=key)  # back as a secondary
    assert again.status == 200 and again.json["id"] == 0 and served_by(again) == new, again.body
    assert get_messages(cluster[new].url) == ["pay", "other", "next"]


def test_an_idempotency_key_whose_entry_was_rolled_back_is_forgotten_with_it(make_failover):
    cluster = make_failover(env={"ELECTION_TIMEOUT": "1", "HEARTBEAT_INTERVAL": "0.1"})
    old = cluster.primary()
    old_term, old_url = cluster.term(old), cluster[old].url
    key = {"Idempotency-Key": "order-7"}
    assert post_message(old_url, "base", w="all", timeout=5).status == 201
    cluster.isolate(old)
    lonely = post_message(old_url, "pay", w=1, headers=key)
    assert lonely.status == 201 and lonely.json["id"] == 1, lonely.body
    replay = post_message(old_url, "pay", w=1, headers=key)
    assert replay.status == 200 and replay.json["duplicate"] is True, replay.body
    wait_role(cluster, old, lambda h: h["role"] != "primary", 10, "to step down")
    new = cluster.primary(among=cluster.secondaries(old), above_term=old_term)
    # The new primary never held the entry: the retry is a new append, at the same id.
    retry = post_message(cluster[new].url, "pay", w=2, timeout=5, headers=key)
    assert retry.status == 201 and retry.json["id"] == 1, retry.body
    cluster.heal()
    final, committed = cluster.converge()
    assert final == committed == {name: ["base", "pay"] for name in cluster.names}, final
    cluster[old].wait_for_log(TRUNCATION)
    # The old primary forgot its own entry's key and learnt the new one's.
    again = post_message(old_url, "pay", w=2, timeout=5, headers=key)
    assert again.status == 200 and again.json["id"] == 1 and served_by(again) == new, again.body
    assert again.json["acks"] >= 2


def test_a_secondary_forwards_appends_and_without_a_primary_refuses_them_at_once(make_failover):
    cluster = make_failover(roles={"n1": "primary"})  # either module runs a failover node
    leader = cluster.primary()
    secondary, other = cluster.secondaries(leader)
    direct = post_message(cluster[leader].url, "direct", w=2, timeout=5)
    assert direct.status == 201 and direct.json["id"] == 0 and served_by(direct) == leader
    forwarded = post_message(cluster[secondary].url, "forwarded", w="all", timeout=5)
    assert forwarded.status == 201, forwarded.body
    assert served_by(forwarded) == leader and forwarded.json["id"] == 1 and forwarded.json["acks"] == 3
    wait_until(lambda: get_committed(cluster[secondary].url) == ["direct", "forwarded"], 5,
               what=f"{secondary} to commit both")
    cluster.kill(leader)
    cluster.kill(other)
    wait_role(cluster, secondary, lambda h: h["primary"] is None and h["role"] != "primary",
              10, "to know there is no primary")
    refused = post_message(cluster[secondary].url, "nobody home", w=1, timeout=10)
    assert refused.status == 503, refused.body
    assert "no primary" in refused.json["error"] and "id" not in refused.json, refused.body
    assert refused.headers.get("Retry-After") == "1" and served_by(refused) == secondary
    assert refused.elapsed < 1.5, f"it took {refused.elapsed:.2f}s to refuse"
    assert get_messages(cluster[secondary].url) == ["direct", "forwarded"]
    assert get_health(cluster[secondary].url)["length"] == 2


# -- security ----------------------------------------------------------------------------


def test_with_curve_the_cluster_elects_and_replicates_and_a_foreign_key_is_refused(
        make_failover, tmp_path):
    keys, foreign = tmp_path / "keys", tmp_path / "foreign"
    create_pairs(keys, ["n1", "n2", "n3"])
    create_pairs(tmp_path / "impostor", ["n3"])  # another n3's pair
    shutil.copytree(keys, foreign)
    for path in (public_file, secret_file):
        shutil.copy(path(tmp_path / "impostor", "n3"), path(foreign, "n3"))
    cluster = make_failover(start=False, env={"REPLICATION_KEYS_DIR": str(keys)},
                            node_env={"n3": {"REPLICATION_KEYS_DIR": str(foreign)}}, record=True)
    cluster.start(wait_for_primary=False)
    leader = cluster.primary(among=["n1", "n2"])
    assert leader != "n3"
    secret = f"wire-{uuid.uuid4().hex}"
    written = post_message(cluster[leader].url, secret, w=2, timeout=5)
    assert written.status == 201 and "n3" not in written.json["acked_by"], written.body
    unmet = post_message(cluster[leader].url, "needs n3", w="all", timeout=1)
    assert unmet.status == 504 and unmet.json["acks"] == 2 and unmet.json["id"] == 1, unmet.body
    # Each side refuses the other: n1 and n2 (ZAP) n3's key, n3 a handshake for its real key.
    for name in ("n1", "n2"):
        cluster[name].wait_for_log(
            "refused a replication peer at 127.0.0.1: its CURVE key is not one of")
    cluster["n3"].wait_for_log("the peer's handshake is not for this node's key (n3.key)")
    n3 = get_health(cluster["n3"].url)
    assert n3["length"] == 0 and n3["role"] != "primary" and get_messages(cluster["n3"].url) == []
    # n3 back with its real keys: it is let in, and caught up.
    cluster.kill("n3")
    cluster["n3"].env["REPLICATION_KEYS_DIR"] = str(keys)
    cluster.restart("n3")
    final, committed = cluster.converge()
    assert final == committed == {name: [secret, "needs n3"] for name in cluster.names}, final
    everyone = post_message(cluster["n3"].url, "everyone", w="all", timeout=5)
    assert everyone.status == 201 and everyone.json["acks"] == 3, everyone.body
    carried = {pair: relay.carried for pair, relay in cluster.relays.items()}
    assert all(len(seen) > 100 for seen in carried.values()), "every link carried traffic"
    assert not any(secret.encode() in seen for seen in carried.values()), "a message crossed in clear"
    cluster.shutdown()  # every line written
    for node in cluster.nodes.values():
        log = node.log()
        assert not any(key in log for key in every_key_text(keys) + every_key_text(foreign)), node.name
        assert "unauthenticated" not in log, node.name


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["secondary", "primary"])
def test_peers_without_a_data_dir_exits_2_naming_both(role, tmp_path):
    port_file = tmp_path / "ports.json"
    result = run_node(role, {
        "HTTP_PORT": "0", "REPLICATION_BIND": "tcp://127.0.0.1:0", "NODE_NAME": "n1",
        "PEERS": "n1=tcp://127.0.0.1:9,n2=tcp://127.0.0.1:9,n3=tcp://127.0.0.1:9",
        "PORT_FILE": str(port_file),
    })
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "DATA_DIR" in lines[0] and "PEERS" in lines[0], result.stderr
    assert not port_file.exists()
    assert_clean_exit(result.stderr)
