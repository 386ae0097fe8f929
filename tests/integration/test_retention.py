"""Retention: RETENTION_MESSAGES (and the other bounds) move the log's start
on every node alike, ids go on, reads below the start are 410 Gone, keys
outlive their messages, the store gives its space back, and a node that was
away while the start moved catches up from it. In both modes.

Real processes on 127.0.0.1 (tests/support/failover.py, tests/support/processes.py).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shared.log.sqlite_log import JOURNAL_BYTES
from tests.integration.test_failures import FAST_HEARTBEAT_ENV
from tests.support.durability import data_dir
from tests.support.http import get_health, get_messages, post_batch, post_message, request
from tests.support.waiting import wait_until

KEPT = 1000


def fill(url: str, batches: int, size: int = 100, prefix: str = "m", **fields) -> list[str]:
    """``batches`` batch appends of ``size`` messages; the messages, in order."""
    sent = []
    for batch in range(batches):
        messages = [f"{prefix}{batch * size + i}" for i in range(size)]
        answer = post_batch(url, messages, w="majority", **fields)
        assert answer.status == 201, answer.body
        sent += messages
    return sent


def starts(urls: dict[str, str]) -> dict[str, int]:
    return {name: get_health(url)["first_id"] for name, url in urls.items()}


def journal_bytes(directory: str) -> int:
    return sum(path.stat().st_size for path in Path(directory).glob("*.sqlite3-wal"))


def store_bytes(directory: str) -> int:
    """The database's size, without its journal (which SQLite keeps below 4 MiB)."""
    return sum(path.stat().st_size for path in Path(directory).glob("*.sqlite3"))


# -- failover mode -----------------------------------------------------------------------


def test_the_start_moves_on_every_node_and_reads_below_it_are_gone(make_failover):
    cluster = make_failover(env={"RETENTION_MESSAGES": str(KEPT)})
    leader = cluster.primary()
    keyed = post_batch(cluster[leader].url, ["k0", "k1"], w="majority", headers={"Idempotency-Key": "early"})
    assert keyed.status == 201 and keyed.json["first_id"] == 0
    sent = ["k0", "k1"] + fill(cluster[leader].url, 30)
    total = len(sent)
    # Within a second of the bound being passed, every node has dropped the same prefix.
    wait_until(lambda: len(set(starts(cluster.urls).values())) == 1
               and next(iter(starts(cluster.urls).values())) > 0, 2, what="every node to move its start")
    first = next(iter(starts(cluster.urls).values()))
    assert KEPT <= total - first <= KEPT * 1.1 + 100, first  # a batch (100) is kept or dropped whole
    for name, node in cluster.nodes.items():
        gone = request("GET", f"{node.url}/messages?from=0&limit=10")
        assert gone.status == 410 and gone.json["first_id"] == first, gone.body
        everything = request("GET", f"{node.url}/messages").json
        assert everything == {"messages": sent[first:], "first_id": first}, name
        page = request("GET", f"{node.url}/messages?from={first}&limit=3").json
        assert page["messages"] == sent[first:first + 3] and page["length"] == total
    # Ids go on; the key outlives its messages.
    assert post_message(cluster[leader].url, "next", w="majority").json["id"] == total
    replay = post_batch(cluster[leader].url, ["k0", "k1"], w="majority", headers={"Idempotency-Key": "early"})
    assert replay.status == 200 and replay.json["first_id"] == 0 and replay.json["duplicate"], replay.body
    clash = post_batch(cluster[leader].url, ["other"], w="majority", headers={"Idempotency-Key": "early"})
    assert clash.status == 409
    # A restart keeps the start.
    wait_until(lambda: len(set(starts(cluster.urls).values())) == 1, 2, what="the nodes to agree")
    first = next(iter(starts(cluster.urls).values()))
    for name in cluster.names:
        cluster.kill(name)
    for name in cluster.names:
        cluster.restart(name)
    cluster.primary()
    assert set(starts(cluster.urls).values()) == {first}


def test_a_node_away_while_the_start_moved_is_sent_the_start_and_its_tail_is_told(make_failover):
    cluster = make_failover(env={"RETENTION_MESSAGES": str(KEPT)})
    leader = cluster.primary()
    away, other = cluster.secondaries(leader)
    fill(cluster[leader].url, 3, prefix="before")
    cluster.isolate(away)  # it keeps serving reads: a tail waits there for what comes next
    position = get_health(cluster[away].url)["length"]
    tail = {}
    waiter = threading.Thread(target=lambda: tail.setdefault(
        "answer", request("GET", f"{cluster[away].url}/messages?from={position}&wait=30", timeout=40)))
    waiter.start()
    sent = fill(cluster[leader].url, 40, prefix="after", timeout=5)
    wait_until(lambda: get_health(cluster[leader].url)["first_id"] > position, 5, what="the start to pass it")
    cluster.heal()
    waiter.join(40)
    answer = tail["answer"]
    first = get_health(cluster[leader].url)["first_id"]
    assert answer.status == 410 and answer.json["first_id"] == first, answer.body
    wait_until(lambda: get_health(cluster[away].url)["first_id"] == first
               and get_health(cluster[away].url)["length"] == get_health(cluster[leader].url)["length"], 10,
               what=f"{away} to take the start and catch up")
    assert get_messages(cluster[away].url) == get_messages(cluster[leader].url)
    assert get_messages(cluster[away].url)[-1] == sent[-1]


def test_the_store_gives_its_space_back_as_the_start_moves(make_failover):
    """About 11 MB appended, about 1 MB kept: without giving pages back the
    database would hold all 11; it holds a small multiple of what is kept
    (its journal is bounded on its own: JOURNAL_BYTES)."""
    cluster = make_failover(env={"RETENTION_MESSAGES": str(KEPT)})
    leader = cluster.primary()
    body = "x" * 1000
    fill(cluster[leader].url, 110, size=100, prefix=body)
    kept = KEPT * 1.1 * 1010

    def sizes() -> list[tuple[int, int]]:
        return [(store_bytes(node.env["DATA_DIR"]), journal_bytes(node.env["DATA_DIR"]))
                for node in cluster.nodes.values()]

    # Deleting the rows and giving their pages back is spread over passes.
    wait_until(lambda: all(db <= 3 * kept and wal <= JOURNAL_BYTES + (1 << 20) for db, wal in sizes()),
               20, what=f"the stores to shrink (database, journal: {sizes()})")


# -- the fixed roles ------------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [True, False], ids=["data-dir", "in-memory"])
def test_the_fixed_roles_move_the_start_together(make_cluster, tmp_path, durable):
    def env(name):
        return data_dir(tmp_path, name) if durable else {}

    cluster = make_cluster({"s1": env("s1"), "s2": env("s2")},
                           primary_env={**FAST_HEARTBEAT_ENV, "RETENTION_MESSAGES": str(KEPT), **env("primary")})
    url = cluster.primary.url
    keyed = post_message(url, "keyed", w=3, headers={"Idempotency-Key": "k"})
    sent = ["keyed"] + fill(url, 30)
    wait_until(lambda: len(set(starts(cluster.urls).values())) == 1 and starts(cluster.urls)["primary"] > 0,
               2, what="every node to move its start")
    first = starts(cluster.urls)["primary"]
    assert KEPT <= len(sent) - first <= KEPT * 1.1 + 100
    for node in cluster.nodes:
        assert request("GET", f"{node.url}/messages?from=0").status == 410
        assert get_messages(node.url) == sent[first:]
    replay = post_message(url, "keyed", w=3, headers={"Idempotency-Key": "k"})
    assert replay.status == 200 and replay.json["id"] == keyed.json["id"] == 0
    assert post_message(url, "next", w=3).json["id"] == len(sent)
