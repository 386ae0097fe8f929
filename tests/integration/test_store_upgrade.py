"""Upgrading a cluster that ran the previous release: stop every node, start
this release's nodes on the same DATA_DIRs (README: Upgrading), and every
message is there at its id, a retry under an old Idempotency-Key is answered
200 with the original id, and new appends go on at the next id.

The previous release's stores are made by tests/support/old_stores.py (no
checkout of that release is needed); where one is at hand (OLD_RELEASE),
``test_a_failover_cluster_run_by_the_previous_release_comes_back_whole`` also
runs that release's own nodes first.
"""

from __future__ import annotations

import pytest

from tests.integration.test_failures import FAST_HEARTBEAT_ENV
from tests.support import processes
from tests.support.checker import wait_for_convergence
from tests.support.durability import data_dir
from tests.support.failover import FailoverCluster
from tests.support.http import get_messages, post_batch, post_message
from tests.support.old_stores import OLD_RELEASE, OldFailoverNode, OldFixedPrimary, OldFixedSecondary
from tests.support.processes import stop_all

HISTORY = "5e1f0c4a9b2d4e6f8a7b6c5d4e3f2a10"
UPGRADED = "to schema 2"


def check_keys_and_next_id(url: str, expected: list[str], keyed: dict[str, tuple[list[str], int]], w) -> None:
    """Each old key retried (single message or batch) is a duplicate at its original
    id; a new append gets the next id."""
    for key, (texts, first_id) in keyed.items():
        headers = {"Idempotency-Key": key}
        replay = (post_message(url, texts[0], w=w, timeout=10, headers=headers) if len(texts) == 1 else
                  post_batch(url, texts, w=w, timeout=10, headers=headers))
        assert replay.status == 200 and replay.json["duplicate"] is True, (key, replay.body)
        assert replay.json["id" if len(texts) == 1 else "first_id"] == first_id, (key, replay.body)
    fresh = post_message(url, "after the upgrade", w=w, timeout=10)
    assert fresh.status == 201 and fresh.json["id"] == len(expected), fresh.body
    expected.append("after the upgrade")


# -- failover ------------------------------------------------------------------------------------

FAILOVER_LOG = ["a", "b", "c", "d", "e", "f", "g"]
FAILOVER_KEYS = {"one-1": (["a"], 0), "batch-1": (["b", "c", "d"], 1), "batch-2": (["f", "g"], 5)}


def write_failover_store(directory, upto: int | None = None) -> None:
    """A node of a failover cluster of the previous release: two terms, n1 and n2
    its primaries; ``upto`` cuts its log short (a node that lagged)."""
    with OldFailoverNode(directory) as node:
        node.hard_state(1, "n1")
        node.noop(1)
        node.append(1, ["a"], key="one-1")
        node.append(1, ["b", "c", "d"], key="batch-1")
        node.hard_state(2, "n2")
        node.noop(2)
        node.append(2, ["e"])
        node.append(2, ["f", "g"], key="batch-2")
        if upto is not None:
            node.truncate(upto)


def test_a_failover_cluster_of_the_previous_release_comes_back_whole(make_failover):
    cluster = make_failover(start=False)
    for name in cluster.names:  # n3 lagged: it lacks the last append (two rows)
        write_failover_store(cluster[name].env["DATA_DIR"], upto=7 if name == "n3" else None)
    cluster.start()
    primary = cluster.primary()
    assert cluster.term(primary) >= 3
    final, committed = cluster.converge()
    assert final == committed == {name: FAILOVER_LOG for name in cluster.names}, final
    expected = list(FAILOVER_LOG)
    for name in cluster.names:  # through the primary, and through secondaries that forward
        check_keys_and_next_id(cluster[name].url, expected, FAILOVER_KEYS, w="majority")
    final, committed = cluster.converge()
    assert final == committed == {name: expected for name in cluster.names}, final
    for name in cluster.names:
        assert UPGRADED in cluster[name].log()


# -- fixed roles ---------------------------------------------------------------------------------

FIXED_LOG = ["a", "b", "c", "d", "e", "f", "g", "h"]
FIXED_KEYS = {"batch-1": (["b", "c"], 1), "one-1": (["d"], 3), "batch-2": (["e", "f", "g"], 4)}


def write_fixed_stores(tmp_path) -> None:
    """A fixed primary of the previous release that ran twice, s1 up to date, s2 behind."""
    with OldFixedPrimary(tmp_path / "primary") as primary:
        primary.start_run(history=HISTORY)
        primary.append(["a"])
        primary.append(["b", "c"], key="batch-1")
        primary.append(["d"], key="one-1")
    with OldFixedPrimary(tmp_path / "primary") as primary:
        segments = primary.start_run()
        primary.append(["e", "f", "g"], key="batch-2")
        primary.append(["h"])
    for name, upto in (("s1", 8), ("s2", 5)):
        with OldFixedSecondary(tmp_path / name, incarnation=f"{name}-incarnation") as secondary:
            secondary.follow(HISTORY, segments)
            secondary.put(0, FIXED_LOG[:upto])


def test_a_fixed_cluster_of_the_previous_release_comes_back_whole(make_cluster, tmp_path):
    write_fixed_stores(tmp_path)
    cluster = make_cluster({name: data_dir(tmp_path, name) for name in ("s1", "s2")},
                           primary_env={**FAST_HEARTBEAT_ENV, **data_dir(tmp_path, "primary")})
    final = wait_for_convergence(cluster.urls, 20)
    assert final == {name: FIXED_LOG for name in cluster.urls}, final  # s2 caught up: one cluster
    expected = list(FIXED_LOG)
    check_keys_and_next_id(cluster.primary.url, expected, FIXED_KEYS, w=3)
    final = wait_for_convergence(cluster.urls, 20)
    assert final == {name: expected for name in cluster.urls}, final
    for node in cluster.nodes:
        assert UPGRADED in node.log()
        assert "another cluster" not in node.log()


# -- the previous release's own nodes (a development check) --------------------------------------


@pytest.mark.skipif(not (OLD_RELEASE / "shared" / "failover").is_dir(),
                    reason=f"no checkout of the previous release at {OLD_RELEASE} (OLD_RELEASE): this "
                           "development check runs its nodes; the tests above need none")
def test_a_failover_cluster_run_by_the_previous_release_comes_back_whole(make_failover, monkeypatch):
    monkeypatch.setattr(processes, "REPO", OLD_RELEASE)
    cluster: FailoverCluster = make_failover()
    old_primary = cluster.primary()
    url = cluster[old_primary].url
    sent = {"one-1": ["a"], "batch-1": ["b", "c", "d"], None: ["e"], "batch-2": ["f", "g"]}
    keyed, expected = {}, []
    for key, texts in sent.items():
        headers = {"Idempotency-Key": key} if key else {}
        answer = (post_message(url, texts[0], w="all", timeout=10, headers=headers) if len(texts) == 1 else
                  post_batch(url, texts, w="all", timeout=10, headers=headers))
        assert answer.status == 201, answer.body
        if key:
            keyed[key] = (texts, answer.json["id" if len(texts) == 1 else "first_id"])
        expected += texts
    assert {name: get_messages(cluster[name].url) for name in cluster.names} == {
        name: expected for name in cluster.names}
    old_term = cluster.term(old_primary)
    stop_all(cluster.nodes.values())  # SIGTERM: stop all, upgrade, start all
    monkeypatch.setattr(processes, "REPO", processes.Path(processes.__file__).resolve().parents[2])
    for name in cluster.names:
        cluster.restart(name)  # the same ports, DATA_DIR and PEERS
    primary = cluster.primary()
    assert cluster.term(primary) > old_term
    final, committed = cluster.converge()
    assert final == committed == {name: expected for name in cluster.names}, final
    for name in cluster.names:
        check_keys_and_next_id(cluster[name].url, expected, keyed, w="majority")
    final, committed = cluster.converge()
    assert final == committed == {name: expected for name in cluster.names}, final
    for name in cluster.names:
        assert UPGRADED in cluster[name].log()


@pytest.mark.skipif(not (OLD_RELEASE / "primary").is_dir(),
                    reason=f"no checkout of the previous release at {OLD_RELEASE} (OLD_RELEASE): this "
                           "development check runs its nodes; the tests above need none")
def test_a_fixed_cluster_run_by_the_previous_release_comes_back_whole(make_cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "REPO", OLD_RELEASE)
    cluster = make_cluster({name: data_dir(tmp_path, name) for name in ("s1", "s2")},
                           primary_env={**FAST_HEARTBEAT_ENV, **data_dir(tmp_path, "primary")})
    keyed, expected = {}, []
    for run in range(2):  # two runs of the primary
        if run:
            cluster.primary.stop()
            cluster.primary.restart()
        for key, texts in {f"one-{run}": [f"a{run}"], f"batch-{run}": [f"b{run}", f"c{run}"],
                           None: [f"d{run}"]}.items():
            headers = {"Idempotency-Key": key} if key else {}
            url = cluster.primary.url
            answer = (post_message(url, texts[0], w=3, headers=headers) if len(texts) == 1 else
                      post_batch(url, texts, w=3, headers=headers))
            assert answer.status == 201, answer.body
            if key:
                keyed[key] = (texts, answer.json["id" if len(texts) == 1 else "first_id"])
            expected += texts
    assert wait_for_convergence(cluster.urls, 20) == {name: expected for name in cluster.urls}
    stop_all(cluster.nodes)  # SIGTERM: stop all, upgrade, start all
    monkeypatch.setattr(processes, "REPO", processes.Path(processes.__file__).resolve().parents[2])
    for node in [*cluster.secondaries.values(), cluster.primary]:
        node.restart()
    assert wait_for_convergence(cluster.urls, 20) == {name: expected for name in cluster.urls}
    check_keys_and_next_id(cluster.primary.url, expected, keyed, w=3)
    assert wait_for_convergence(cluster.urls, 20) == {name: expected for name in cluster.urls}
    for node in cluster.nodes:
        assert UPGRADED in node.log()
        assert "another cluster" not in node.log()
