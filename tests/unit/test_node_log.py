"""shared.log.node_log: a node's log, driven as node-io drives it, read as HTTP workers read it.

A ``Shell`` plays node-io for a fixed primary alone in its cluster (a real
RaftNode, which commits at once): it stages every Ready the moment the core
returns it, persists, then tells readers what is committed. ``follow``
stages what a secondary's core would return (truncations, snapshots, a
commit length that lags), which no single node can produce.

Most tests run three times: in memory (no DATA_DIR), on disk, and on disk
with a window of four entries, so that most reads go below the window to
the database, are streamed, and must give the same answers.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sqlite3
import threading
import time
from collections import Counter
from contextlib import closing
from dataclasses import replace
from types import SimpleNamespace

import pytest

from shared.consensus.raft import Mode, RaftNode, Ready
from shared.consensus.raft_log import (
    Compacted, Entry, HardState, KeyRecord, LogStart, Snapshot, Unsaved, body_digest, digest_after,
)
from shared.log import node_log as node_log_module
from shared.log.node_log import Gone, NodeLog, open_log
from shared.wire.frames import encode_entry
from tests.support.mirrored_log import MirroredCluster
from tests.support.raft_sim import COMPACTING, CRASHY, LOST_DISKS, PRIMARY_HUNTER
from tests.support.waiting import wait_until

BIG = 1 << 30  # a byte budget that cuts nothing
KINDS = ["memory", "disk", "small window"]


def entry_of(messages, key: str | None = None) -> Entry:
    """The entry one append makes (its term is the primary's, set by propose)."""
    return Entry(0, b",".join(encode_entry(m) for m in messages), len(messages), key)


class Shell:
    """Plays node-io for a fixed primary alone in its cluster: a new run (term,
    no-op) at its first tick, and every Ready staged, persisted, then committed."""

    def __init__(self, node_log: NodeLog) -> None:
        self.log = node_log
        self.node = RaftNode("p", ("p",), random.Random(0), storage=node_log, hard_state=node_log.hard_state,
                             election_timeout=1.0, heartbeat_interval=0.1, mode=Mode.FIXED_PRIMARY,
                             incarnation=node_log.incarnation)
        self.take(self.node.tick(0.0))

    def take(self, ready: Ready) -> Ready:
        self.log.stage(ready)
        self.log.persist()
        self.log.set_committed(self.node.commit_length)
        return ready

    def append(self, *messages: str, key: str | None = None) -> range:
        """One append of ``messages`` (one entry); the ids they got."""
        first = self.log.next_id
        self.take(self.node.propose([entry_of(messages, key)], 0.0))
        return range(first, self.log.next_id)

    def append_all(self, appends: list[list[str]], keys=None) -> None:
        """Many appends in one Ready (one commit), as a busy primary's pass makes them."""
        keys = keys or [None] * len(appends)
        self.take(self.node.propose([entry_of(m, k) for m, k in zip(appends, keys)], 0.0))

    def compact(self, length: int) -> None:
        self.take(self.node.compact(length))


def follow(node_log: NodeLog, entries=(), *, truncate_from=None, term=None, install=None,
           persist=True) -> None:
    """Stage the Ready a secondary's core returns for what its primary sent:
    maybe a new term, a snapshot, a truncation, then entries; then persist."""
    if install is not None:
        digest = install.start.digest
    else:
        digest = node_log.digest_at(node_log.length() if truncate_from is None else truncate_from)
    digests = []
    for entry in entries:
        digest = digest_after(digest, entry)
        digests.append(digest)
    hard_state = HardState(term, None) if term is not None else None
    node_log.stage(Ready(hard_state, Unsaved(install, truncate_from, list(entries), digests), 0, ()))
    if persist:
        node_log.persist()


def message(text: str, term: int = 1, key: str | None = None) -> Entry:
    return Entry(term, encode_entry(text), 1, key)


def sent(document) -> bytes:
    """A document's bytes; its chunks must add up to the size it announced."""
    size, chunks = document
    data = b"".join(chunks)
    assert size is None or size == len(data), f"announced {size} bytes, sent {len(data)}"
    return data


def read(document) -> dict:
    return json.loads(sent(document))


def messages(node_log: NodeLog, committed: bool = False) -> list[str]:
    return read(node_log.messages_document(committed))["messages"]


def asleep_in_wait_for(node_log: NodeLog) -> int:
    """Readers asleep in wait_for. A test wakes a tail only once it sleeps, so that
    it tests the waking (threading.Condition keeps its sleepers in _waiters)."""
    return len(node_log._changed._waiters)


class Tail:
    """A reader thread in wait_for; ``outcome`` is what it saw when it returned
    (``shown`` then), or the Gone it raised."""

    def __init__(self, node_log: NodeLog, first: int, committed: bool = False, timeout: float = 60.0):
        self.outcome = None
        self._log, self._first, self._committed, self._timeout = node_log, first, committed, timeout
        self._thread = threading.Thread(target=self._run, name="tail", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._log.wait_for(self._first, self._timeout, self._committed)
            self.outcome = self._log.shown(self._committed)
        except Gone as gone:
            self.outcome = gone

    def asleep(self) -> "Tail":
        """Wait until it sleeps in wait_for (again, after a wake-up that was not for it)."""
        wait_until(lambda: asleep_in_wait_for(self._log) or not self._thread.is_alive(), 10,
                   what="the tail to wait")
        assert self._thread.is_alive(), f"the tail returned: {self.outcome!r}"
        return self

    def result(self):
        self._thread.join(10)
        assert not self._thread.is_alive(), "the tail was not answered"
        return self.outcome


@pytest.fixture(params=KINDS)
def kind(request, monkeypatch):
    if request.param == "small window":
        monkeypatch.setattr(node_log_module, "WINDOW_ENTRIES", 4)
        monkeypatch.setattr(node_log_module, "PAGE_READ_AT_ONCE", 3)
        monkeypatch.setattr(node_log_module, "DISK_READ_BATCH", 2)
    return request.param


@pytest.fixture
def open_node_log(kind, tmp_path):
    """Open (or reopen) the test's NodeLog, of the kind the test runs with; all are
    closed after the test. FSYNC off unless asked: durability is not what most test."""
    opened: list[NodeLog] = []

    def open_(role="primary", fsync=False, key_capacity=100) -> NodeLog:
        opened.append(open_log("" if kind == "memory" else str(tmp_path), role, fsync, key_capacity))
        return opened[-1]

    yield open_
    for each in opened:
        each.close()


#: For what only a log on disk does: come back after a reopen.
on_disk = pytest.mark.parametrize("kind", KINDS[1:], indirect=True)


# -- ids and documents ------------------------------------------------------------------


def test_messages_get_consecutive_ids_across_entries_and_no_ops_take_none(open_node_log):
    shell = Shell(open_node_log())
    assert shell.append("a") == range(0, 1)
    assert shell.append("b", "c", "d") == range(1, 4)
    shell = Shell(shell.log)  # a new run: a new term and its no-op
    assert shell.append("e") == range(4, 5)
    log = shell.log
    assert (log.shown(), log.shown(committed=True), log.first_id(), log.next_id) == (5, 5, 0, 5)
    assert [log.first_id_at(index) for index in range(log.length() + 1)] == [0, 0, 1, 4, 4, 5]
    assert [log.term_at(length) for length in range(6)] == [0, 1, 1, 1, 2, 2]
    assert log.run_start(4) == 3 and log.run_start(2) == 0
    assert sent(log.messages_document()) == b'{"messages":["a","b","c","d","e"],"first_id":0}'


def test_a_page_is_exact_and_cuts_batch_entries_at_its_ends(open_node_log):
    shell = Shell(open_node_log())
    appends = [["m0", "m1", "m2"], ["m3"], ["m4", "m5", "m6", "m7"], ["m8"], ["m9", "m10", "m11"],
               ["m12"]]
    for batch in appends[:3]:
        shell.append(*batch)
    shell = Shell(shell.log)  # a no-op inside the pages
    for batch in appends[3:]:
        shell.append(*batch)
    every = [m for batch in appends for m in batch]
    assert sent(shell.log.page_document(2, 4)) == (
        b'{"messages":["m2","m3","m4","m5"],"from":2,"next":6,"length":13}')
    for first in range(15):
        for limit in (None, 0, 1, 2, 3, 5, 20):
            stop = max(first, len(every) if limit is None else min(len(every), first + limit))
            expected = {"messages": every[first:stop], "from": first, "next": stop, "length": 13}
            assert read(shell.log.page_document(first, limit)) == expected, (first, limit)


def test_readers_see_what_is_persisted_and_committed_readers_what_is_committed(open_node_log):
    log = open_node_log(role="secondary")
    follow(log, [Entry(1), message("a"), message("b")], term=1, persist=False)
    assert log.length() == 3  # the core reads what it staged at once
    assert (log.shown(), messages(log)) == (0, [])
    log.persist()
    assert (log.shown(), log.shown(committed=True)) == (2, 0)
    assert messages(log) == ["a", "b"] and messages(log, committed=True) == []
    assert sent(log.page_document(0, None, committed=True)) == (
        b'{"messages":[],"from":0,"next":0,"length":0}')
    log.set_committed(2)
    assert messages(log, committed=True) == ["a"]
    assert sent(log.page_document(0, 5, committed=True)) == (
        b'{"messages":["a"],"from":0,"next":1,"length":1}')
    log.set_committed(1)  # never lowered
    assert log.shown(committed=True) == 1
    log.set_committed(3)
    assert messages(log, committed=True) == ["a", "b"]


def test_readers_in_other_threads_always_see_a_gap_free_prefix(open_node_log):
    shell = Shell(open_node_log())
    appended = [f"m{i}" for i in range(120)]
    done, seen, errors = threading.Event(), [], []

    def reader():
        try:
            while not done.wait(0.001):  # a read a millisecond, leaving the writer the GIL
                whole = messages(shell.log)
                assert whole == appended[:len(whole)]
                page = read(shell.log.page_document(len(whole) // 2, 7))
                assert page["messages"] == appended[page["from"]:page["next"]]
                seen.append(len(whole))
        except Exception as exc:  # collected: a failure in a thread must fail the test
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    at = 0
    for n in range(60):
        batch = appended[at:at + 1 + n % 3]
        shell.append(*batch)
        at += len(batch)
        if n % 5 == 0:  # let the reader read while the log grows
            reads = len(seen)
            wait_until(lambda: errors or len(seen) > reads, 10, 0.001, what="a read")
    assert at == len(appended)
    wait_until(lambda: errors or seen[-1] == len(appended), 10, what="a read of everything")
    done.set()
    thread.join(10)
    assert errors == [] and len(set(seen)) > 5


def test_reads_below_the_window_come_from_disk_streamed_with_the_same_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(node_log_module, "WINDOW_ENTRIES", 8)
    monkeypatch.setattr(node_log_module, "PAGE_READ_AT_ONCE", 5)
    monkeypatch.setattr(node_log_module, "DISK_READ_BATCH", 3)
    memory, disk = open_log("", "primary", False, 100), open_log(str(tmp_path), "primary", False, 100)
    try:
        for log in (memory, disk):
            shell = Shell(log)
            for n in range(30):
                shell.append(*[f"{n}.{i}" for i in range(n % 4)], key=f"k{n}" if n % 5 == 0 else None)
        total, length = memory.shown(), memory.length()
        for first in range(total + 1):
            for limit in (None, 1, 4, 5, 6, 40):
                assert sent(disk.page_document(first, limit)) == sent(memory.page_document(first, limit))
        assert sent(disk.messages_document()) == sent(memory.messages_document())
        # What is below the window and larger than PAGE_READ_AT_ONCE is streamed;
        # pages within the window, or small, are sent with their size.
        assert disk.page_document(0, 6)[0] is None and memory.page_document(0, 6)[0] is not None
        assert disk.page_document(0, 5)[0] is not None
        assert disk.page_document(total - 6, 6)[0] is not None
        for start in range(length):
            for max_bytes in (1, 40, BIG):
                assert disk.entries(start, length, max_bytes) == memory.entries(start, length, max_bytes)
        for n in range(length + 1):
            assert (disk.term_at(n), disk.digest_at(n)) == (memory.term_at(n), memory.digest_at(n))
        keys = [f"k{n}" for n in range(0, 30, 5)]
        assert [disk.lookup(key) for key in keys] == [memory.lookup(key) for key in keys]
    finally:
        disk.close()


# -- tails ----------------------------------------------------------------------------------


def test_a_tail_wakes_when_its_message_is_shown(open_node_log):
    shell = Shell(open_node_log())
    shell.append("a")
    tail = Tail(shell.log, first=1).asleep()
    shell.append("b")
    assert tail.result() == 2


def test_a_committed_tail_waits_for_the_commit_not_the_write(open_node_log):
    log = open_node_log(role="secondary")
    tail = Tail(log, first=0, committed=True).asleep()
    follow(log, [Entry(1), message("a")], term=1)
    assert log.shown() == 1
    tail.asleep()  # woken by the write, it sleeps again
    log.set_committed(2)
    assert tail.result() == 1


def test_released_readers_are_answered_at_once_now_and_later(open_node_log):
    log = open_node_log()
    tail = Tail(log, first=0).asleep()
    log.release_readers()
    assert tail.result() == 0
    assert Tail(log, first=0).result() == 0  # a later one returns without waiting its minute


def test_closing_the_log_answers_its_tails(open_node_log):
    log = open_node_log()
    tail = Tail(log, first=0).asleep()
    log.close()
    assert tail.result() == 0


def test_a_tail_is_told_gone_when_the_start_passes_it(open_node_log):
    log = open_node_log(role="secondary")
    follow(log, [Entry(1), message("a")], term=1)
    tail = Tail(log, first=5).asleep()
    start = LogStart(10, 3, 1234, first_id=20, offset=400)
    follow(log, install=Snapshot(start))
    gone = tail.result()
    assert isinstance(gone, Gone) and gone.first_id == 20
    with pytest.raises(Gone) as later:
        log.wait_for(19, 60)
    assert later.value.first_id == 20


# -- Idempotency-Keys and truncation ------------------------------------------------------


def test_a_key_is_found_with_its_entry_ids_count_and_digest(open_node_log):
    shell = Shell(open_node_log(key_capacity=3))
    shell.append("zero", key="k0")
    ids = shell.append("b", "c", "d", key="k1")
    shell.append("unkeyed")
    shell.append("two", key="k2")
    shell.append("three", key="k3")
    record = shell.log.lookup("k1")
    (entry,) = shell.log.entries(record.index, record.index + 1, BIG)
    assert record == KeyRecord("k1", record.index, ids.start, 3, body_digest(entry.body))
    assert entry.key == "k1" and entry.body == b'"b","c","d"'
    assert shell.log.lookup("k0") is None  # past the capacity: the oldest goes
    assert shell.log.lookup("nobody") is None
    assert [shell.log.lookup(k).first_id for k in ("k2", "k3")] == [5, 6]


def test_a_truncation_warns_once_naming_the_ids_and_forgets_their_keys(open_node_log, caplog):
    log = open_node_log(role="secondary")
    follow(log, [Entry(1), message("a", key="ka"), Entry(1, b'"b","c","d"', 3, "kb")], term=1)
    log.set_committed(2)
    with caplog.at_level(logging.WARNING, logger="shared.log.node_log"):
        follow(log, [Entry(2), message("new", 2)], truncate_from=2, term=2)
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.getMessage().startswith("truncated 3 message(s), ids 1..3: the primary of term 2 ")
    assert messages(log) == ["a", "new"] and log.shown() == 2
    assert log.lookup("kb") is None and log.lookup("ka").first_id == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shared.log.node_log"):
        follow(log, [Entry(3), message("newer", 3)], term=3)
        follow(log, [Entry(4)], truncate_from=5, term=4)
        follow(log, [Entry(5)], truncate_from=5, term=5)  # only a no-op: no message lost
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["truncated 1 message(s), ids 2"]


@on_disk
def test_a_truncation_survives_a_reopen(open_node_log):
    log = open_node_log(role="secondary", fsync=True)
    follow(log, [Entry(1), message("a", key="ka"), message("b", key="kb")], term=1)
    follow(log, [Entry(2), message("c", 2)], truncate_from=2, term=2)
    log.close()
    again = open_node_log(role="secondary", fsync=True)
    assert (messages(again), again.length(), again.term_at(4), again.run_start(3)) == (["a", "c"], 4, 2, 2)
    assert again.lookup("kb") is None and again.lookup("ka").first_id == 0


@pytest.mark.parametrize("kind", ["small window"], indirect=True)
def test_a_truncation_below_the_window_cuts_on_disk_and_survives_a_reopen(open_node_log, caplog):
    """An uncommitted tail longer than the window (a primary cut off under a
    flood of w=1 appends, coming back as a secondary) is cut where the core
    says, the entries before the cut read back from disk."""
    log = open_node_log(role="secondary", fsync=True)
    follow(log, [Entry(1)] + [message(str(n), key=f"k{n}") for n in range(10)], term=1)
    log.set_committed(3)
    with caplog.at_level(logging.WARNING, logger="shared.log.node_log"):
        follow(log, [Entry(2), message("new", 2)], truncate_from=3, term=2)
    warnings = [r.getMessage().split(":")[0] for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["truncated 8 message(s), ids 2..9"]
    expected = ["0", "1", "new"]
    assert (messages(log), log.length(), log.next_id, log.term_at(3), log.term_at(5)) == (expected, 5, 3, 1, 2)
    assert log.lookup("k1").first_id == 1 and log.lookup("k2") is None
    follow(log, [message("more", 2)])
    digest = log.digest_at(6)
    log.close()
    again = open_node_log(role="secondary", fsync=True)
    assert messages(again) == expected + ["more"] and again.digest_at(6) == digest


def test_a_truncation_brings_back_the_older_keys_the_capacity_had_pushed_out(open_node_log):
    log = open_node_log(role="secondary", key_capacity=2)
    follow(log, [Entry(1)] + [message(str(n), key=f"k{n}") for n in range(4)], term=1)
    assert [log.lookup(f"k{n}") is not None for n in range(4)] == [False, False, True, True]
    follow(log, [message("other", 2)], truncate_from=4, term=2)
    # As a restart would see it: the last two keyed appends still in the log.
    assert [log.lookup(f"k{n}") is not None for n in range(4)] == [False, True, True, False]
    assert log.lookup("k1").first_id == 1


# -- retention -------------------------------------------------------------------------


@on_disk
def test_a_page_read_while_retention_drops_its_rows_is_gone_not_an_error(open_node_log, monkeypatch):
    """The page decides to read from disk under the lock and reads outside it:
    the I/O thread may move the start and drop the rows in between."""
    monkeypatch.setattr(node_log_module, "WINDOW_ENTRIES", 8)
    shell = Shell(open_node_log())
    for n in range(100):
        shell.append(f"m{n}")
    store = shell.log._store
    reader = store.reader

    def reader_after_retention():
        shell.compact(90)  # what the I/O thread may do meanwhile
        return reader()

    monkeypatch.setattr(store, "reader", reader_after_retention)
    with pytest.raises(Gone) as gone:
        shell.log.page_document(10, 3)
    assert gone.value.first_id == shell.log.first_id()


@on_disk
def test_a_compaction_gives_the_dropped_pages_back_to_the_file_system(open_node_log):
    shell = Shell(open_node_log())
    for _ in range(20):
        shell.append_all([["x" * 500]] * 1000)
    path = shell.log.path
    shell.log.close()
    full = os.path.getsize(path)  # closing checkpoints the journal into the file
    shell = Shell(open_node_log())
    shell.compact(shell.log.length() - 200)
    while shell.log._store.dropping:  # spread over commits, a bounded amount each
        shell.log.persist()
    shell.log.close()
    assert os.path.getsize(path) < full / 10, (full, os.path.getsize(path))


def test_after_compaction_reads_below_the_start_are_gone_and_ids_and_keys_go_on(open_node_log):
    shell = Shell(open_node_log())
    for n in range(10):
        shell.append(f"m{n}a", f"m{n}b", key=f"k{n}")
    dropped = shell.log.lookup("k3")
    shell.compact(dropped.index + 1)
    log = shell.log
    assert (log.first_id(), log.start().index, log.start().first_id) == (8, 5, 8)
    for first in (0, 7):
        with pytest.raises(Gone) as gone:
            log.page_document(first, 3)
        assert gone.value.first_id == 8
    with pytest.raises(Gone):
        log.wait_for(7, 60)
    with pytest.raises(Compacted):
        log.entries(2, 6, BIG)
    assert sent(log.page_document(8, 3)) == b'{"messages":["m4a","m4b","m5a"],"from":8,"next":11,"length":20}'
    assert read(log.messages_document())["first_id"] == 8 and len(messages(log)) == 12
    assert log.lookup("k3") == dropped and dropped in log.snapshot().keys
    assert log.snapshot().start == log.start()
    assert shell.append("next") == range(20, 21)


def retain(shell: Shell, now: float = 0.0, messages: int = 0, size: int = 0, seconds: float = 0
           ) -> int | None:
    """Move the start where retention_start says, as a primary's node-io does;
    the new start, if it moved."""
    target = shell.log.retention_start(shell.node.commit_length, now, messages, size, seconds)
    if target is not None:
        shell.compact(target)
    return target


def test_retention_by_messages_keeps_the_bound_and_at_most_a_tenth_more(open_node_log):
    shell = Shell(open_node_log())
    log, moves = shell.log, 0
    for n in range(120):
        shell.append(*[f"{n}.{i}" for i in range(1 + n % 3)])
        moved = retain(shell, messages=20)
        assert min(log.shown(), 20) <= log.shown() - log.first_id() <= 22
        if moved is not None:
            # To the last entry boundary that keeps 20: one entry later would not.
            assert log.shown() - log.first_id_at(moved + 1) < 20
            moves += 1
    assert moves > 10


def test_retention_by_size_keeps_the_bound_and_at_most_a_tenth_more(open_node_log):
    shell = Shell(open_node_log())
    sizes, moves = {}, 0  # bytes of messages of each entry, by index
    for n in range(150):
        batch = ["x" * (n % 7)] * (1 + n % 2)
        shell.append(*batch)
        sizes[shell.log.length() - 1] = len(entry_of(batch).body)
        moved = retain(shell, size=200)
        kept = sum(size for index, size in sizes.items() if index >= shell.log.start().index)
        assert min(200, sum(sizes.values())) <= kept <= 220
        if moved is not None:
            assert sum(size for index, size in sizes.items() if index > moved) < 200
            moves += 1
    assert moves > 10


def test_retention_by_age_keeps_the_last_seconds_and_never_passes_the_commit_length(open_node_log,
                                                                                    monkeypatch):
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(node_log_module, "time", SimpleNamespace(time=lambda: clock.now,
                                                                 monotonic=time.monotonic))
    shell = Shell(open_node_log())
    stored_at = {0: 0.0}  # the no-op's
    for second in range(1, 101):
        clock.now = float(second)
        shell.append(f"at {second}")
        stored_at[shell.log.length() - 1] = clock.now
        retain(shell, clock.now, seconds=20)
        start = shell.log.start().index
        assert clock.now - stored_at[start] <= 22  # at most a tenth more than asked
        assert start == 0 or clock.now - stored_at[start - 1] >= 20  # nothing younger dropped
    assert shell.log.start().index > 70
    # Everything is older than asked: retention stops at the commit length it is given.
    assert shell.log.retention_start(95, 1000.0, 0, 0, 20) == 95


def test_retention_does_nothing_within_a_tenth_of_a_bound(open_node_log):
    shell = Shell(open_node_log())
    for n in range(22):
        shell.append(str(n))
    log = shell.log
    assert log.retention_start(shell.node.commit_length, 0.0, 20, 0, 0) is None  # 22 of 20
    shell.append("22")
    assert log.retention_start(shell.node.commit_length, 0.0, 20, 0, 0) == 4  # keeps 20 of 23
    assert log.retention_start(shell.node.commit_length, 0.0, 0, 0, 0) is None


# -- across a reopen --------------------------------------------------------------------


def observed(log: NodeLog, keys: list[str]) -> dict:
    """What a reopen must give back."""
    return {"hard state": log.hard_state, "start": log.start(), "length": log.length(),
            "shown": log.shown(), "first id": log.first_id(), "incarnation": log.incarnation,
            "document": sent(log.messages_document()), "snapshot": log.snapshot(),
            "keys": [log.lookup(key) for key in keys],
            "terms and checksums": [(log.term_at(n), log.digest_at(n))
                                    for n in range(log.start().index, log.length() + 1)]}


@on_disk
def test_an_installed_start_and_the_entries_of_its_term_keep_their_terms_after_a_reopen(open_node_log):
    """The entries after a snapshot are usually of the snapshot's own term, so
    they begin no run: the install itself must leave that run on disk."""
    log = open_node_log(role="secondary", fsync=True)
    incarnation = log.incarnation
    follow(log, install=Snapshot(LogStart(10, 3, 1234, 20, 400)), term=3)  # before any other persist
    follow(log, [message("after", 3), message("more", 3)])
    assert [log.term_at(n) for n in (10, 11, 12)] == [3, 3, 3]
    log.close()
    again = open_node_log(role="secondary", fsync=True)
    assert [again.term_at(n) for n in (10, 11, 12)] == [3, 3, 3]
    assert again.run_start(11) == 10
    # Nothing it held was lost, so it is the same node's state.
    assert again.incarnation == incarnation


@on_disk
def test_a_start_and_the_entries_after_it_staged_in_one_ready_are_written_together(open_node_log):
    """A recovering primary may install a start and append what follows it in one step."""
    log = open_node_log(role="primary", fsync=True)
    follow(log, [message("after", 3), message("more", 3)], install=Snapshot(LogStart(10, 3, 1234, 20, 400)),
           term=3)
    assert messages(log) == ["after", "more"]
    log.close()
    again = open_node_log(role="primary", fsync=True)
    assert (again.length(), messages(again)) == (12, ["after", "more"])


@on_disk
@pytest.mark.parametrize("tail, terms", [([1, 3], [1, 1, 3]), ([1], [1, 1])])
def test_a_truncation_at_the_start_leaves_the_terms_after_it_on_disk(open_node_log, tail, terms):
    """Retention keeps on disk only the row of the term run the start is in. A
    truncation at the start (a primary deposed just after it compacted to its
    commit length) removed that row, and entries appended there in the run
    before the start had none: a reopen read a later run's term for them, or
    none at all (the node could not tick). The differential fuzz of the
    eighth session found it."""
    log = open_node_log(role="secondary", fsync=True)
    follow(log, [message("a", 1), message("b", 2)], term=2)
    log.stage(Ready(None, Unsaved(compact=1), 0, ()))
    log.persist()
    follow(log, [message(f"t{n}", term) for n, term in enumerate(tail)], truncate_from=1, term=3)
    assert [log.term_at(n) for n in range(1, len(terms) + 1)] == terms
    log.close()
    again = open_node_log(role="secondary", fsync=True)
    assert [again.term_at(n) for n in range(1, len(terms) + 1)] == terms


@on_disk
def test_a_second_truncation_in_one_pass_does_not_bring_back_the_keys_of_the_first(open_node_log):
    """The keys in force after a truncation are rebuilt from the store as the
    pass will leave it: a lower truncation staged earlier in the pass removes
    keys the store still holds until the pass is written."""
    log = open_node_log(role="secondary")
    follow(log, [message("a"), message("b"), message("c", key="A"), message("d")], term=1)
    follow(log, [message(x, 2) for x in "efg"], truncate_from=1, term=2, persist=False)
    follow(log, [message("h", 3)], truncate_from=3, term=3, persist=False)
    assert log.lookup("A") is None, "a retry of A would be told it is entry 2, now another's"
    log.persist()
    assert log.lookup("A") is None


@on_disk
def test_a_truncation_in_the_pass_of_an_install_keeps_the_snapshot_s_keys(open_node_log):
    """An install staged earlier in the pass replaces the store's keys: the keys in
    force after a truncation are the snapshot's, not those the store held."""
    log = open_node_log(role="secondary")
    follow(log, [message("a"), message("b", key="OLD"), message("c")], term=1)
    snapshot = Snapshot(LogStart(10, 2, 12345, 10, 50), (KeyRecord("SNAP", 4, 4, 1, 99),))
    follow(log, [message(x, 2) for x in "xyz"], install=snapshot, term=2, persist=False)
    follow(log, [message("w", 3)], truncate_from=11, term=3, persist=False)
    assert (log.lookup("SNAP"), log.lookup("OLD")) == (KeyRecord("SNAP", 4, 4, 1, 99), None)
    log.persist()
    assert (log.lookup("SNAP"), log.lookup("OLD")) == (KeyRecord("SNAP", 4, 4, 1, 99), None)


#: Seeded runs that truncate, compact, install snapshots and restart often, with
#: keys: (profile, its faults, the cluster's options, seeds). The primary
#: hunter's seeds 7 and 11 found the term runs a truncation at the start lost.
MIRRORED_RUNS = [
    ("primary hunter", replace(PRIMARY_HUNTER, compact=0.03, keyed=0.3), {}, [7, 11]),
    ("compacting", replace(COMPACTING, keyed=0.6, compact=0.1), {}, [0]),
    ("lost disks", replace(LOST_DISKS, compact=0.05, keyed=0.3), {}, [0]),
    ("fixed, primary in memory", replace(CRASHY, compact=0.03, keyed=0.3),
     {"fixed": True, "primary_in_memory": True}, [0]),
]


@pytest.mark.parametrize("faults, options, seed", [
    pytest.param(faults, options, seed, id=f"{name}-{seed}")
    for name, faults, options, seeds in MIRRORED_RUNS for seed in seeds])
def test_the_log_on_disk_answers_as_the_simulation_s_storage_through_a_seeded_run(faults, options, seed,
                                                                                   monkeypatch):
    """Every Ready of a simulated cluster staged into a NodeLog on SQLite too,
    reopened at each restart, and compared after every call with the
    simulation's reference storage (tests/support/mirrored_log.py)."""
    monkeypatch.setattr(node_log_module, "WINDOW_ENTRIES", 4)  # most reads go to SQLite
    cluster = MirroredCluster(seed, 3, faults, connections=True, **options)
    try:
        cluster.run(1500)
    finally:
        cluster.close()
    assert cluster.differences == []

@on_disk
def test_everything_comes_back_after_a_reopen(open_node_log):
    shell = Shell(open_node_log(fsync=True, key_capacity=5))
    for n in range(12):
        shell.append(f"m{n}", *(["extra"] if n % 2 else []), key=f"k{n}" if n % 3 == 0 else None)
    shell = Shell(shell.log)  # a second term
    shell.append("last", key="k-last")
    shell.compact(shell.log.lookup("k3").index + 1)
    keys = ["k0", "k3", "k6", "k9", "k-last"]
    before = observed(shell.log, keys)
    assert before["keys"][1] in before["snapshot"].keys  # a key of a dropped entry, still in force
    shell.log.close()
    again = open_node_log(fsync=True, key_capacity=5)
    assert observed(again, keys) == before and not again.fresh
    assert again.shown(committed=True) == again.first_id()  # a restarted node learns the commit again
    assert Shell(again).append("again") == range(before["shown"], before["shown"] + 1)


@on_disk
def test_what_was_staged_but_not_persisted_is_not_back_after_a_reopen(open_node_log):
    log = open_node_log(role="secondary", fsync=True)
    follow(log, [Entry(1), message("kept")], term=1)
    follow(log, [message("lost", key="lost")], term=2, persist=False)
    log.close()
    again = open_node_log(role="secondary", fsync=True)
    assert (again.hard_state.term, again.length(), messages(again)) == (1, 2, ["kept"])
    assert again.lookup("lost") is None


@on_disk
def test_readies_staged_together_are_written_as_one_with_the_last_hard_state(open_node_log):
    log = open_node_log(role="secondary", fsync=True)
    follow(log, [Entry(1), message("x")], term=1, persist=False)
    follow(log, [message("y")], truncate_from=1, persist=False)
    follow(log, [Entry(2), message("z", 2)], term=2, persist=False)
    with closing(sqlite3.connect(log.path)) as other:  # nothing is written before persist
        assert other.execute("SELECT count(*) FROM entries").fetchone() == (0,)
    log.persist()
    log.close()
    again = open_node_log(role="secondary", fsync=True)
    assert (again.hard_state.term, again.length(), messages(again)) == (2, 4, ["y", "z"])


@pytest.mark.parametrize("data_dir, fsync, kept", [(False, True, False), (True, False, False),
                                                    (True, True, True)])
def test_the_incarnation_is_kept_only_where_all_that_was_acknowledged_survived(tmp_path, data_dir, fsync,
                                                                                kept):
    directory = str(tmp_path) if data_dir else ""
    first = open_log(directory, "primary", fsync, 10)
    Shell(first).append("a", key="k")
    first.close()
    second = open_log(directory, "primary", fsync, 10)
    assert (second.incarnation == first.incarnation) == kept
    # Without DATA_DIR nothing outlives the process, not even a key.
    assert second.fresh != data_dir and (second.lookup("k") is not None) == data_dir
    second.close()


# -- the cost of an append and of a restart -----------------------------------------------


class CountingConnection(sqlite3.Connection):
    """A connection that counts the work its statements do: statements, rows
    returned, rows changed, and steps of SQLite's virtual machine (a scan is a
    step per row even where it returns one row; only count(*) of a whole
    table is a single step, which is why the statements are kept too)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.work = Counter()
        self.statements: list[tuple[str, tuple]] = []
        self._changes_at_close: int | None = None
        self.set_progress_handler(self._step, 1)

    def _step(self) -> int:
        self.work["steps"] += 1
        return 0  # go on

    def execute(self, sql, parameters=()):
        self.work["statements"] += 1
        self.statements.append((sql, parameters))
        return CountedRows(super().execute(sql, parameters), self.work)

    def close(self) -> None:
        if self._changes_at_close is None:
            self._changes_at_close = self.total_changes
        super().close()

    def counted(self) -> Counter:
        changes = self.total_changes if self._changes_at_close is None else self._changes_at_close
        return self.work + Counter({"rows changed": changes})


class CountedRows:
    """A cursor that counts the rows it returns."""

    def __init__(self, cursor: sqlite3.Cursor, work: Counter) -> None:
        self._cursor, self._work = cursor, work

    def __iter__(self):
        for row in self._cursor:
            self._work["rows returned"] += 1
            yield row

    def fetchone(self):
        row = self._cursor.fetchone()
        self._work["rows returned"] += row is not None
        return row

    def fetchall(self):
        rows = self._cursor.fetchall()
        self._work["rows returned"] += len(rows)
        return rows

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class Meter:
    """Makes every SQLite connection opened from now on count its work."""

    def __init__(self, monkeypatch) -> None:
        self._connections: list[CountingConnection] = []
        self._connect = sqlite3.connect
        monkeypatch.setattr(sqlite3, "connect", self._counting_connect)

    def _counting_connect(self, *args, **kwargs) -> CountingConnection:
        self._connections.append(self._connect(*args, factory=CountingConnection, **kwargs))
        return self._connections[-1]

    def measure(self, action):
        """``action()``'s result, the work it did, and the statements it ran."""
        work, statements = self._work(), len(self._statements())
        result = action()
        return result, self._work() - work, self._statements()[statements:]

    def whole_scans_of_entries(self, path: str, statements: list[tuple[str, tuple]]) -> list[str]:
        """Those of ``statements`` that SQLite runs by reading every entry."""
        explainer = self._connect(path)
        try:
            return [sql for sql, parameters in statements
                    if sql.lstrip().upper().startswith(("SELECT", "DELETE"))
                    and any(step[3] == "SCAN entries"
                            for step in explainer.execute("EXPLAIN QUERY PLAN " + sql, parameters))]
        finally:
            explainer.close()

    def _work(self) -> Counter:
        return sum((connection.counted() for connection in self._connections), Counter())

    def _statements(self) -> list[tuple[str, tuple]]:
        return [statement for connection in self._connections for statement in connection.statements]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Logs of 50 and of 50,000 messages, then three runs of 100 keyed appends
    each (so that both have the same keys in force and term runs), closed."""
    built = {}
    for size in (50, 50_000):
        directory = tmp_path_factory.mktemp(f"log-of-{size}")
        shell = Shell(open_log(str(directory), "primary", False, 100))
        shell.append_all([[f"message {n}"] for n in range(size)])
        for run in range(3):
            shell = Shell(shell.log)
            shell.append_all([[f"keyed {run}.{n}"] for n in range(100)], [f"k{run}.{n}" for n in range(100)])
        shell.log.close()
        built[size] = directory
    return built


def copy_of(store, tmp_path, name: str) -> str:
    directory = tmp_path / name
    shutil.copytree(store, directory)
    return str(directory)


def test_an_append_costs_the_same_on_a_log_of_50_or_50000_messages(stores, tmp_path, monkeypatch):
    monkeypatch.setattr(node_log_module, "WINDOW_ENTRIES", 1000)  # the large log is mostly on disk
    meter = Meter(monkeypatch)
    costs = {}
    for size, store in stores.items():
        shell = Shell(open_log(copy_of(store, tmp_path, str(size)), "primary", True, 100))
        shell.append("warming up", key="first")  # past the run's first commit (its incarnation)
        ids, costs[size], statements = meter.measure(lambda: shell.append("measured", "append", key="k"))
        assert ids == range(size + 301, size + 303)
        assert meter.whole_scans_of_entries(shell.log.path, statements) == []
        shell.log.close()
    assert costs[50] == costs[50_000]
    assert costs[50]["rows returned"] == 0 and costs[50]["rows changed"] == 2  # its entry, its key


def test_a_restart_reads_its_window_keys_and_term_runs_not_the_log(stores, tmp_path, monkeypatch):
    monkeypatch.setattr(node_log_module, "WINDOW_ENTRIES", 20)  # both logs are longer than the window
    meter = Meter(monkeypatch)
    costs = {}
    for size, store in stores.items():
        directory = copy_of(store, tmp_path, str(size))
        log, costs[size], statements = meter.measure(lambda: open_log(directory, "primary", True, 100))
        assert meter.whole_scans_of_entries(log.path, statements) == []
        assert log.shown() == size + 300 and log.lookup("k2.99") is not None
        log.close()
    assert costs[50] == costs[50_000]
    # The window's tail (read one row past it), the keys in force, the term runs,
    # and the store's own few rows (its tables, its meta read twice, three aggregates).
    assert costs[50_000]["rows returned"] <= (20 + 1) + 100 + 4 + 20
