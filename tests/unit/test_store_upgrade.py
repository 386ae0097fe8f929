"""shared.log.upgrade: a previous release's store in DATA_DIR becomes a schema-2 store at open.

The old stores are made by tests/support/old_stores.py, which writes what
the previous release's store code wrote (checked against that code itself
where its checkout is at hand: ``test_the_writers_match_the_previous_release``).
Each kind is opened with ``open_log``, as a node opens its DATA_DIR, and
checked message by message, key by key, term by term; a second open
does not upgrade again. A crash in the middle of an upgrade leaves the old
store, which a later start upgrades; a damaged old store is refused, and
left as it was.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import tracemalloc
from contextlib import closing
from pathlib import Path

import pytest

from shared.consensus.raft import Mode, RaftNode, Ready
from shared.consensus.raft_log import Entry, KeyRecord, body_digest, digest_after
from shared.log import upgrade
from shared.log.node_log import NodeLog, open_log
from shared.log.sqlite_log import FILE_NAME, SCHEMA, SqliteLog, StoreError
from tests.support.old_stores import (
    OLD_RELEASE, OldFailoverNode, OldFixedPrimary, OldFixedSecondary, OldStore, dump, literal,
)

REPO = Path(__file__).resolve().parents[2]
HISTORY = "5e1f0c4a9b2d4e6f8a7b6c5d4e3f2a10"
KEPT = FILE_NAME + ".pre-upgrade"
UPGRADING = FILE_NAME + ".upgrading"


@pytest.fixture
def opened():
    """Open NodeLogs with ``open_log`` (FSYNC on, as a node that keeps its state); closed after the test."""
    logs: list[NodeLog] = []

    def open_(directory, role: str, key_capacity: int = 100, fsync: bool = True) -> NodeLog:
        logs.append(open_log(str(directory), role, fsync, key_capacity))
        return logs[-1]

    yield open_
    for each in logs:
        each.close()


def messages(node_log: NodeLog) -> list[str]:
    size, chunks = node_log.messages_document()
    return json.loads(b"".join(chunks))["messages"]


def entries(node_log: NodeLog) -> list[Entry]:
    return node_log.entries(node_log.start().index, node_log.length(), 1 << 30)


def first_ids(node_log: NodeLog) -> list[int]:
    return [node_log.first_id_at(index) for index in range(node_log.length())]


def terms(node_log: NodeLog) -> list[int]:
    """The term of each entry."""
    return [node_log.term_at(length) for length in range(1, node_log.length() + 1)]


def key_record(key: str, index: int, first_id: int, texts: list[str]) -> KeyRecord:
    return KeyRecord(key, index, first_id, len(texts), body_digest(b",".join(literal(t) for t in texts)))


def upgrades_logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "shared.log.upgrade" and record.levelno == logging.INFO]


# -- stores the previous release left ------------------------------------------------------


def fixed_primary(directory) -> Path:
    """Two runs of a fixed primary: single appends, batches, Idempotency-Keys."""
    with OldFixedPrimary(directory) as primary:
        primary.start_run(history=HISTORY)
        primary.append(["a"])
        primary.append(["b", "c"], key="batch-1")
        primary.append(["d"], key="one-1")
    with OldFixedPrimary(directory) as primary:  # a restart: its second run, from id 4
        primary.start_run()
        primary.append(["e", "f", "g"], key="batch-2")
        primary.append(["h"])
        primary.append(["\u00e9t\u00e9 \"quoted\" \\ \ud800"], key="odd-1")
    return Path(directory)


def fixed_secondary(directory, upto: int = 9) -> Path:
    """A secondary of that primary that followed both runs, with ids past a gap."""
    texts = ["a", "b", "c", "d", "e", "f", "g", "h", "\u00e9t\u00e9 \"quoted\" \\ \ud800"]
    with OldFixedSecondary(directory) as secondary:
        secondary.follow(HISTORY, [[1, "00000001", 0]])
        secondary.put(0, texts[:4])
        secondary.put(6, ["stale"])  # of run 1, past a gap: never shown, cut at the next run
        secondary.follow(HISTORY, [[1, "00000001", 0], [2, "00000002", 4]], cut=4)
        secondary.put(4, texts[4:upto])
        secondary.put(12, ["ahead"])  # past a gap: held, never shown
    return Path(directory)


def failover_node(directory) -> Path:
    """A failover node: three terms, votes, no-ops, keyed appends, a truncated
    tail, and an uncommitted tail of the last term it holds entries of."""
    with OldFailoverNode(directory) as node:
        node.hard_state(1, "n1")
        node.noop(1)                                    # index 0
        node.append(1, ["a"], key="one-1")              # 1: id 0
        node.append(1, ["b", "c", "d"], key="batch-1")  # 2, 3, 4: ids 1..3
        node.hard_state(2, "n2")
        node.noop(2)                                    # 5
        node.append(2, ["lost"], key="lost-1")          # 6: rolled back below
        node.hard_state(3, "n3")
        node.truncate(6)
        node.noop(3)                                    # 6
        node.append(3, ["e"])                           # 7: id 4
        node.append(3, ["f", "g"], key="batch-2")       # 8, 9: ids 5, 6 (the tail)
        node.hard_state(4, "n1")                        # voted in a term with no entry yet
    return Path(directory)


# -- the writers against the previous release's own code (a development check) -------------

OLD_CODE = r'''
import sys
from shared.consensus.raft import Ready
from shared.consensus.raft_log import Entry, HardState
from shared.failover.storage import RaftStorage
from shared.log.durable_log import open_log
from shared.wire.protocol import encode_entry
from shared.wire.raft_frames import encode_payload

out, H, U = sys.argv[1], "5e1f0c4a9b2d4e6f8a7b6c5d4e3f2a10", "\u00e9t\u00e9 \"quoted\" \\ \ud800"
e = encode_entry

log = open_log(out + "/primary", "primary", True)
log.set_meta(history=H, segments=[[1, "00000001", 0]])
log.append(e("a")); log.append_many([e("b"), e("c")], key="batch-1"); log.append(e("d"), key="one-1")
log.flush(); log.close()
log = open_log(out + "/primary", "primary", True)
log.set_meta(history=H, segments=[[1, "00000001", 0], [2, "00000002", 4]])
log.append_many([e("e"), e("f"), e("g")], key="batch-2"); log.flush()
log.append(e("h")); log.append(e(U), key="odd-1"); log.flush(); log.close()

log = open_log(out + "/secondary", "secondary", True)
log.set_meta(incarnation="0f1e2d3c4b5a69788796a5b4c3d2e1f0"); log.flush()
log.set_meta(history=H, segments=[[1, "00000001", 0]])
for seq, text in enumerate("abcd"):
    log.put(seq, e(text))
log.put(6, e("stale")); log.flush()
log.truncate(4); log.set_meta(history=H, segments=[[1, "00000001", 0], [2, "00000002", 4]])
for seq, text in enumerate(["e", "f", "g", "h", U], 4):
    log.put(seq, e(text))
log.put(12, e("ahead")); log.flush(); log.close()

s = RaftStorage(out + "/failover", True, 100)
s.load()
def persist(state=None, cut=None, *entries):
    s.stage(Ready(state, cut, tuple(entries), 0, ())); s.persist()
persist(HardState(1, "n1"), None, Entry(1, None))
persist(None, None, Entry(1, encode_payload(e("a"), "one-1", 1)))
persist(None, None, Entry(1, encode_payload(e("b"), "batch-1", 3)), Entry(1, e("c")), Entry(1, e("d")))
persist(HardState(2, "n2"), None, Entry(2, None), Entry(2, encode_payload(e("lost"), "lost-1", 1)))
persist(HardState(3, "n3"), 6, Entry(3, None), Entry(3, e("e")))
persist(None, None, Entry(3, encode_payload(e("f"), "batch-2", 2)), Entry(3, e("g")))
persist(HardState(4, "n1"))
s.close()
'''


@pytest.mark.skipif(not (OLD_RELEASE / "shared" / "log" / "sqlite_store.py").exists(),
                    reason=f"no checkout of the previous release at {OLD_RELEASE} (OLD_RELEASE): this "
                           "development cross-check of tests/support/old_stores.py needs one")
def test_the_writers_match_the_previous_release(tmp_path):
    """The tables, journal mode and every row the old code writes for the same history."""
    real, written = tmp_path / "real", tmp_path / "written"
    for role in ("primary", "secondary", "failover"):
        (real / role).mkdir(parents=True)
    subprocess.run([sys.executable, "-c", OLD_CODE, str(real)], cwd=OLD_RELEASE, check=True,
                   env={**os.environ, "PYTHONPATH": str(OLD_RELEASE), "PYTHONDONTWRITEBYTECODE": "1"})
    fixed_primary(written / "primary")
    fixed_secondary(written / "secondary")
    failover_node(written / "failover")
    for role in ("primary", "secondary", "failover"):
        assert dump(written / role / FILE_NAME) == dump(real / role / FILE_NAME), role
    # And the previous release reads the writers' stores back as its own.
    check = subprocess.run([sys.executable, "-c", textwrap.dedent(r'''
        import sys
        from shared.failover.storage import RaftStorage
        from shared.log.durable_log import open_log
        out = sys.argv[1]
        for role in ("primary", "secondary"):
            log = open_log(out + "/" + role, role, True)
            print(role, len(log), log.meta["segments"], log.keyed_appends()); log.close()
        s = RaftStorage(out + "/failover", True, 100)
        state = s.load()
        print("failover", state.term, state.voted_for, len(state.entries), len(s.messages)); s.close()
        '''), str(written)], cwd=OLD_RELEASE, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(OLD_RELEASE), "PYTHONDONTWRITEBYTECODE": "1"})
    assert check.stdout.splitlines() == [
        "primary 9 [[1, '00000001', 0], [2, '00000002', 4]] "
        "[(1, 'batch-1', 2), (3, 'one-1', 1), (4, 'batch-2', 3), (8, 'odd-1', 1)]",
        "secondary 9 [[1, '00000001', 0], [2, '00000002', 4]] []",
        "failover 4 n1 10 7",
    ]


# -- fixed roles -------------------------------------------------------------------------------


ALL = ["a", "b", "c", "d", "e", "f", "g", "h", "\u00e9t\u00e9 \"quoted\" \\ \ud800"]


def test_a_fixed_primary_with_two_runs_keeps_every_message_at_its_id_and_every_key(tmp_path, opened, caplog):
    directory = fixed_primary(tmp_path / "p")
    before = dump(directory / FILE_NAME)
    caplog.set_level(logging.INFO)
    log = opened(directory, "primary")
    assert messages(log) == ALL
    assert first_ids(log) == list(range(9)) and log.next_id == 9  # a message per entry: ids are indexes
    assert terms(log) == [1, 1, 1, 1, 2, 2, 2, 2, 2]  # each run a term, by its number
    assert log.run_start(5) == 4
    hard = log.hard_state
    assert (hard.term, hard.voted_for, hard.caught_up, hard.vote_floor) == (2, None, True, 0)
    assert hard.cluster == HISTORY
    assert log.lookup("batch-1") == key_record("batch-1", 2, 1, ["b", "c"])
    assert log.lookup("one-1") == key_record("one-1", 3, 3, ["d"])
    assert log.lookup("batch-2") == key_record("batch-2", 6, 4, ["e", "f", "g"])
    assert log.lookup("odd-1") == key_record("odd-1", 8, 8, [ALL[8]])
    # The keys live in the keyed table only: the entries are as the secondaries' are.
    assert all(entry.key is None and entry.count == 1 for entry in entries(log))
    assert [log.digest_at(n) for n in range(10)] == chained(entries(log))
    (line,) = upgrades_logged(caplog)
    assert line == (f"upgraded the store in {directory} from the previous release's fixed-role layout "
                    f"(primary) to schema {SCHEMA}: 9 messages in {line.split(' in ')[2].split(';')[0]}; "
                    f"the old file is kept as {directory / KEPT}")
    # The old file, whole, beside it; no journal or half-written file is left.
    assert dump(directory / KEPT)["rows"] == before["rows"]
    assert sorted(os.listdir(directory)) == sorted([FILE_NAME, KEPT, FILE_NAME + "-wal", FILE_NAME + "-shm"])
    log.close()
    caplog.clear()
    again = opened(directory, "primary")  # no second upgrade
    assert upgrades_logged(caplog) == [] and messages(again) == ALL
    assert again.lookup("batch-2") == key_record("batch-2", 6, 4, ["e", "f", "g"])
    assert dump(directory / KEPT)["rows"] == before["rows"]


def chained(entries_: list[Entry]) -> list[int]:
    digests = [0]
    for entry in entries_:
        digests.append(digest_after(digests[-1], entry))
    return digests


def test_an_upgraded_fixed_primary_begins_the_next_run_as_its_next_term_and_ids_go_on(tmp_path, opened):
    log = opened(fixed_primary(tmp_path / "p"), "primary")
    node = RaftNode("p", ("p",), random.Random(0), storage=log, hard_state=log.hard_state,
                    election_timeout=1.0, heartbeat_interval=0.1, mode=Mode.FIXED_PRIMARY,
                    incarnation=log.incarnation)

    def take(ready: Ready) -> None:
        log.stage(ready)
        log.persist()
        log.set_committed(node.commit_length)

    take(node.tick(0.0))
    assert (node.term, node.cluster) == (3, HISTORY)  # the old primary would have begun run 3
    take(node.propose([Entry(0, literal("i"), 1)], 0.0))
    assert messages(log) == [*ALL, "i"] and log.first_id_at(log.length() - 1) == 9
    assert log.shown(committed=True) == 10


def test_a_fixed_secondary_keeps_its_shown_log_and_agrees_entry_by_entry_with_its_primary(tmp_path, opened,
                                                                                          caplog):
    caplog.set_level(logging.INFO)
    secondary = opened(fixed_secondary(tmp_path / "s"), "secondary")
    assert messages(secondary) == ALL  # "ahead", past a gap, was never shown: not carried
    assert terms(secondary) == [1, 1, 1, 1, 2, 2, 2, 2, 2]
    hard = secondary.hard_state
    assert (hard.term, hard.voted_for, hard.caught_up, hard.cluster) == (2, None, True, HISTORY)
    assert secondary.lookup("batch-1") is None  # a secondary never knew the keys
    assert secondary.incarnation != "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # it names its state anew
    assert any("1 message(s) held past a gap at id 9 are not carried over" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    primary = opened(fixed_primary(tmp_path / "p"), "primary")
    # The same entries, terms and checksums at every length: log matching holds across the upgrade.
    assert entries(secondary) == entries(primary)
    assert [secondary.digest_at(n) for n in range(10)] == [primary.digest_at(n) for n in range(10)]


def test_a_secondary_behind_its_primary_holds_a_prefix_of_the_primary_log(tmp_path, opened):
    secondary = opened(fixed_secondary(tmp_path / "s", upto=6), "secondary")
    primary = opened(fixed_primary(tmp_path / "p"), "primary")
    assert messages(secondary) == ALL[:6]
    assert [secondary.digest_at(n) for n in range(7)] == [primary.digest_at(n) for n in range(7)]
    assert secondary.hard_state.term == 2


def test_a_primary_that_crashed_while_recovering_its_log_recovers_it_again(tmp_path, opened, caplog):
    """No history yet: the messages it had fetched were never its own log."""
    with OldFixedPrimary(tmp_path / "p") as primary:
        primary.commit([(0, literal("fetched"))])
    caplog.set_level(logging.INFO)
    log = opened(tmp_path / "p", "primary")
    hard = log.hard_state
    assert (log.length(), hard.term, hard.caught_up, hard.cluster) == (0, 0, False, None)
    assert any("1 message(s) held without a history id" in r.getMessage() for r in caplog.records)


def test_an_empty_store_of_the_previous_release_becomes_an_empty_one(tmp_path, opened):
    OldStore(tmp_path / "s", "secondary").close()
    log = opened(tmp_path / "s", "secondary")
    assert (log.length(), log.next_id, log.hard_state.term, log.hard_state.caught_up) == (0, 0, 0, False)


def test_only_the_newest_keys_are_kept(tmp_path, opened):
    with OldFixedPrimary(tmp_path / "p") as primary:
        primary.start_run(history=HISTORY)
        for i in range(30):
            primary.append([f"m{i}"], key=f"k{i}")
    log = opened(tmp_path / "p", "primary", key_capacity=10)
    assert [log.lookup(f"k{i}") is not None for i in range(30)] == [False] * 20 + [True] * 10
    with closing(sqlite3.connect(tmp_path / "p" / FILE_NAME)) as raw:
        assert raw.execute("SELECT count(*), min(idx) FROM keyed").fetchone() == (10, 20)


# -- failover --------------------------------------------------------------------------------


def test_a_failover_node_keeps_its_terms_vote_no_ops_keys_and_uncommitted_tail(tmp_path, opened, caplog):
    caplog.set_level(logging.INFO)
    log = opened(failover_node(tmp_path / "n1"), "failover")
    assert messages(log) == ["a", "b", "c", "d", "e", "f", "g"]
    assert terms(log) == [1, 1, 1, 1, 1, 2, 3, 3, 3, 3]  # every entry at its index, of its term
    assert [entry.count for entry in entries(log)] == [0, 1, 1, 1, 1, 0, 0, 1, 1, 1]  # no-ops stay no-ops
    assert first_ids(log) == [0, 0, 1, 2, 3, 4, 4, 4, 5, 6]
    hard = log.hard_state
    assert (hard.term, hard.voted_for, hard.caught_up, hard.vote_floor) == (4, "n1", True, 0)
    assert hard.cluster is None
    assert log.lookup("one-1") == key_record("one-1", 1, 0, ["a"])
    # A batch was a row per message: its key names them all, by the index of the last.
    assert log.lookup("batch-1") == key_record("batch-1", 4, 1, ["b", "c", "d"])
    assert log.lookup("batch-2") == key_record("batch-2", 9, 5, ["f", "g"])
    assert log.lookup("lost-1") is None  # truncated with its entry
    # The key goes with the entry that carried it, as a new append's does.
    assert [entry.key for entry in entries(log)] == [None, "one-1", "batch-1", None, None, None, None, None,
                                                      "batch-2", None]
    assert [log.digest_at(n) for n in range(11)] == chained(entries(log))
    (line,) = upgrades_logged(caplog)
    assert "from the previous release's failover layout (failover) to schema 2: 7 messages in" in line
    log.close()
    caplog.clear()
    again = opened(tmp_path / "n1", "failover")
    assert upgrades_logged(caplog) == [] and terms(again) == terms(log) and again.hard_state == hard


def test_two_failover_nodes_with_the_same_entries_keep_the_same_log(tmp_path, opened):
    one, two = (opened(failover_node(tmp_path / name), "failover") for name in ("n1", "n2"))
    assert entries(one) == entries(two)
    assert [one.digest_at(n) for n in range(11)] == [two.digest_at(n) for n in range(11)]


@pytest.mark.parametrize("caught_up", [True, False])
def test_the_caught_up_flag_is_kept(tmp_path, opened, caught_up):
    with OldFailoverNode(tmp_path / "n") as node:
        node.hard_state(5, "n2", caught_up)
        node.noop(5)
    log = opened(tmp_path / "n", "failover")
    assert (log.hard_state.term, log.hard_state.voted_for, log.hard_state.caught_up) == (5, "n2", caught_up)


def test_a_failover_store_without_a_term_is_not_caught_up(tmp_path, opened):
    OldFailoverNode(tmp_path / "n").close()
    log = opened(tmp_path / "n", "failover")
    assert (log.length(), log.hard_state.term, log.hard_state.caught_up) == (0, 0, False)


def test_a_keyed_append_cut_short_keeps_its_key_for_the_messages_held(tmp_path, opened, caplog):
    """A secondary held only part of a batch (frames cut it) when a later term
    began: the key names what it holds, so a retry is told apart, not appended twice."""
    with OldFailoverNode(tmp_path / "n") as node:
        node.hard_state(1, "n1")
        node.noop(1)
        node.append(1, ["a", "b", "c"], key="cut")
        node.truncate(3)  # only "a" and "b"
        node.hard_state(2, "n2")
        node.noop(2)
    caplog.set_level(logging.INFO)
    log = opened(tmp_path / "n", "failover")
    assert messages(log) == ["a", "b"]
    assert log.lookup("cut") == key_record("cut", 2, 0, ["a", "b"])
    assert any("1 append(s) made under an Idempotency-Key were cut short" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


# -- refusals ----------------------------------------------------------------------------------


def test_a_store_of_another_role_is_refused_and_left_as_it_was(tmp_path, opened):
    directory = fixed_primary(tmp_path / "p")
    before = (directory / FILE_NAME).read_bytes()
    for role in ("secondary", "failover"):
        with pytest.raises(StoreError, match=f"belongs to a primary, not a {role}"):
            opened(directory, role)
    assert (directory / FILE_NAME).read_bytes() == before and not (directory / KEPT).exists()


def stored(path: Path):
    """What a store holds, or why it cannot be read (damaged)."""
    try:
        return dump(path)
    except sqlite3.Error as exc:
        return (str(exc), path.stat().st_size)


def damage_gap(path: Path) -> None:
    with closing(sqlite3.connect(path)) as raw, raw:
        raw.execute("DELETE FROM entries WHERE seq = 3")


def damage_meta(path: Path) -> None:
    with closing(sqlite3.connect(path)) as raw, raw:
        raw.execute("UPDATE meta SET value = '[1, 2' WHERE key = 'terms'")


def damage_terms(path: Path) -> None:
    with closing(sqlite3.connect(path)) as raw, raw:
        raw.execute("UPDATE meta SET value = '[[1, 2]]' WHERE key = 'terms'")


def damage_body(path: Path) -> None:
    with closing(sqlite3.connect(path)) as raw, raw:
        raw.execute("UPDATE entries SET body = X'00ff' WHERE seq = 7")


def damage_page(path: Path) -> None:
    with closing(sqlite3.connect(path)) as raw:
        raw.execute("PRAGMA journal_mode=DELETE")
        raw.executemany("INSERT INTO entries VALUES (?, ?)",
                        [(seq, literal("x" * 300)) for seq in range(10, 2000)])
        raw.commit()
    size = path.stat().st_size
    with open(path, "r+b") as torn:
        torn.seek(size // 2 // 4096 * 4096)
        torn.write(b"\xff" * 4096)


@pytest.mark.parametrize("damage, why", [
    (damage_gap, "the log has a gap at index 3"),
    (damage_meta, "whose state cannot be read"),
    (damage_terms, "no term is recorded for index 0"),
    (damage_body, "entry 7 is not a message this program wrote"),
    (damage_page, "malformed|not a database|cannot be upgraded"),
])
def test_a_damaged_old_store_is_refused_clearly_and_left_as_it_was(tmp_path, opened, damage, why):
    directory = failover_node(tmp_path / "n")
    damage(directory / FILE_NAME)
    before = stored(directory / FILE_NAME)
    with pytest.raises(StoreError, match=why) as refused:
        opened(directory, "failover")
    assert str(refused.value).startswith(str(directory / FILE_NAME))
    assert stored(directory / FILE_NAME) == before
    assert not (directory / UPGRADING).exists() and not (directory / KEPT).exists()


@pytest.mark.parametrize("layout", ["schema 1", "unknown tables"])
def test_a_store_of_no_known_layout_is_still_refused(tmp_path, opened, layout):
    directory = tmp_path / "s"
    directory.mkdir()
    if layout == "schema 1":
        SqliteLog(str(directory), "primary", True, 10).close()
        with closing(sqlite3.connect(directory / FILE_NAME)) as raw, raw:
            raw.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    else:
        with closing(sqlite3.connect(directory / FILE_NAME)) as raw, raw:
            raw.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
    with pytest.raises(StoreError, match="not a store this program knows|cannot read the node.s state"):
        opened(directory, "primary")
    assert not (directory / KEPT).exists()


def test_an_old_store_still_in_use_is_refused(tmp_path, opened):
    directory = fixed_primary(tmp_path / "p")
    with closing(sqlite3.connect(directory / FILE_NAME, timeout=0)) as running:  # an old node, still up
        running.execute("SELECT count(*) FROM entries").fetchone()
        with pytest.raises(StoreError, match="in use by another process"):
            opened(directory, "primary")
    assert opened(directory, "primary").next_id == 9


def test_another_file_in_the_way_of_the_kept_name_is_refused(tmp_path, opened):
    directory = fixed_primary(tmp_path / "p")
    (directory / KEPT).write_bytes(b"an earlier upgrade's, perhaps")
    with pytest.raises(StoreError, match="is in the way"):
        opened(directory, "primary")
    assert (directory / KEPT).read_bytes() == b"an earlier upgrade's, perhaps"


# -- crashes ---------------------------------------------------------------------------------

CRASH = r'''
import os, sys
from shared.log import upgrade
from shared.log.node_log import open_log
where, directory = sys.argv[1], sys.argv[2]
upgrade.BATCH_ROWS = 3
if where == "writing":
    flush, calls = upgrade._NewStore.flush, []
    def crashing(self):
        calls.append(1)
        if len(calls) == 3:
            os._exit(9)  # a kill: nothing cleans up
        flush(self)
    upgrade._NewStore.flush = crashing
else:
    os.replace = lambda *args: os._exit(9)  # just before the new file takes the name
open_log(directory, "failover", True, 100)
'''


@pytest.mark.parametrize("where", ["writing", "switching"])
def test_a_crash_in_the_middle_of_an_upgrade_leaves_the_old_store_which_a_later_start_upgrades(
        tmp_path, opened, where):
    directory = failover_node(tmp_path / "n")
    before = dump(directory / FILE_NAME)["rows"]
    crashed = subprocess.run([sys.executable, "-c", CRASH, where, str(directory)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert crashed.returncode == 9
    assert (directory / UPGRADING).exists()  # what it was writing
    assert (directory / KEPT).exists() == (where == "switching")
    assert dump(directory / FILE_NAME)["rows"] == before  # the old store, whole, where it was
    log = opened(directory, "failover")
    assert messages(log) == ["a", "b", "c", "d", "e", "f", "g"] and log.hard_state.term == 4
    assert not (directory / UPGRADING).exists()
    assert dump(directory / KEPT)["rows"] == before


def test_a_write_that_fails_in_the_middle_leaves_the_old_store(tmp_path, opened, monkeypatch):
    directory = failover_node(tmp_path / "n")
    before = dump(directory / FILE_NAME)
    monkeypatch.setattr(upgrade, "BATCH_ROWS", 3)
    flush, calls = upgrade._NewStore.flush, []

    def failing(self):
        calls.append(1)
        if len(calls) == 2:
            raise sqlite3.OperationalError("database or disk is full")
        flush(self)

    monkeypatch.setattr(upgrade._NewStore, "flush", failing)
    with pytest.raises(StoreError, match="cannot be upgraded: database or disk is full; it is left as"):
        opened(directory, "failover")
    assert sorted(os.listdir(directory)) == [FILE_NAME]
    assert dump(directory / FILE_NAME) == before  # its rows, and its journal mode too
    monkeypatch.setattr(upgrade._NewStore, "flush", flush)
    assert messages(opened(directory, "failover")) == ["a", "b", "c", "d", "e", "f", "g"]


# -- size ----------------------------------------------------------------------------------------


def test_the_upgrade_streams_in_bounded_memory(tmp_path, opened):
    """Python's allocations stay about a batch's, whatever the log's size (SQLite's
    own page cache is bounded apart): four times the messages, the same peak."""
    text = "x" * 200

    def peak_upgrading(count: int) -> int:
        directory = tmp_path / str(count)
        with OldFixedPrimary(directory) as primary:
            primary.start_run(history=HISTORY)
            for first in range(0, count, 25_000):
                primary.append([f"{text}{i}" for i in range(first, first + 25_000)], key=f"k{first}")
        tracemalloc.start()
        try:
            assert upgrade.upgrade_store(str(directory), "primary", 100)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak_upgrading(25_000), peak_upgrading(100_000)  # 5 MB, then 20 MB of messages
    assert large < small + (1 << 20) and large < 10 << 20, (small, large)
    log = opened(tmp_path / "100000", "primary")
    assert log.next_id == 100_000 and log.lookup("k75000") == KeyRecord(
        "k75000", 99_999, 75_000, 25_000,
        body_digest(b",".join(literal(f"{text}{i}") for i in range(75_000, 100_000))))
