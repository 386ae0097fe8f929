"""The log's storage contract, run against both implementations: the
in-memory OrderedLog and the SQLite-backed DurableLog. What is written
becomes visible on ``flush`` (at once, in memory); the durable one must
also give it back after a reopen, and refuse a corrupt or foreign file."""

from __future__ import annotations

import os
import threading

import pytest

from shared.log.durable_log import DurableLog, open_log
from shared.log.ordered_log import CHUNK_BYTES, OrderedLog
from shared.log.sqlite_store import FILE_NAME, SqliteStore, StoreError
from shared.wire.protocol import encode_entry
from tests.support.documents import messages_of

rendered = messages_of


@pytest.fixture(params=["memory", "sqlite"])
def make_log(request, tmp_path):
    opened = []

    def make() -> OrderedLog:
        if request.param == "memory":
            log = OrderedLog()
        else:
            log = DurableLog(SqliteStore(str(tmp_path), "secondary", fsync=True))
        opened.append(log)
        return log

    yield make
    for log in opened:
        if log.durable:
            log.close()


@pytest.fixture
def log(make_log):
    return make_log()


def reopen(log: DurableLog, tmp_path) -> DurableLog:
    log.close()
    return DurableLog(SqliteStore(str(tmp_path), "secondary", fsync=True))


def test_append_assigns_consecutive_seqs(log):
    assert [log.append(encode_entry(m)) for m in "abc"] == [0, 1, 2]
    log.flush()
    assert rendered(log) == ["a", "b", "c"] and len(log) == 3


def test_concurrent_appends_get_unique_gap_free_seqs(log):
    seqs: list[int] = []
    lock = threading.Lock()

    def writer(n):
        mine = [log.append(encode_entry(f"{n}-{i}")) for i in range(500)]
        with lock:
            seqs.extend(mine)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.flush()
    assert sorted(seqs) == list(range(4000)) and len(log) == 4000


def test_put_ignores_duplicates(log):
    assert log.put(0, encode_entry("a")) is True
    assert log.put(0, encode_entry("changed")) is False
    log.flush()
    assert log.put(0, encode_entry("changed")) is False
    assert rendered(log) == ["a"]


def test_out_of_order_entries_stay_hidden_until_the_gap_fills(log):
    assert log.put(2, encode_entry("c"))
    assert log.put(1, encode_entry("b"))
    log.flush()
    assert rendered(log) == [] and len(log) == 0
    assert log.holds(2) and log.holds(1) and not log.holds(0)
    assert log.put(2, encode_entry("c")) is False  # dedup also ahead of the gap
    assert log.put(0, encode_entry("a"))
    log.flush()
    assert rendered(log) == ["a", "b", "c"] and len(log) == 3


def test_the_bytes_held_past_a_gap_are_counted_until_it_fills_or_they_are_cut(log):
    log.put(3, encode_entry("dddd"))  # 6 bytes as a literal
    log.put(5, encode_entry("ff"))  # 4
    log.flush()
    assert log.ahead_bytes == 10
    log.truncate(5)
    log.flush()
    assert log.ahead_bytes == 6
    for seq in range(3):
        log.put(seq, encode_entry("x"))
    log.flush()
    assert len(log) == 4 and log.ahead_bytes == 0


def test_entries_and_entry_read_the_visible_prefix_only(log):
    log.put(0, encode_entry("a"))
    log.put(5, encode_entry("f"))
    log.flush()
    assert log.entries(0, 10) == [encode_entry("a")]
    assert log.run_from(5, 10, 1 << 20) == [encode_entry("f")]
    assert log.run_from(1, 10, 1 << 20) == []


def test_render_survives_awkward_strings(log):
    awkward = ["", "quote\"", "back\\slash", "nul\x00", "line\nbreak", "emoji 😀", "\ud800"]
    for message in awkward:
        log.append(encode_entry(message))
    log.flush()
    assert rendered(log) == awkward


def test_truncate_removes_the_prefix_tail_and_entries_past_a_gap(log):
    for seq, message in [(0, "a"), (1, "b"), (2, "c"), (5, "f")]:
        log.put(seq, encode_entry(message))
    log.flush()
    assert log.truncate(2) == [2, 5]
    log.flush()
    assert rendered(log) == ["a", "b"] and not log.holds(5)
    assert log.put(2, encode_entry("C"))
    log.flush()
    assert rendered(log) == ["a", "b", "C"]


def test_the_document_streams_in_chunks_of_the_announced_size(log):
    messages = [f"m{i}" for i in range(10_000)] + ["x" * 10_000] * 200 + ["big" * 400_000]
    for message in messages:
        log.append(encode_entry(message))
    log.flush()
    size, chunks = log.messages_document()
    chunks = list(chunks)
    assert len(chunks) > 8 and sum(map(len, chunks)) == size
    # A byte budget per chunk, whatever the number or size of the messages.
    assert max(map(len, chunks[:-2])) <= CHUNK_BYTES + 10_003
    assert rendered(log) == messages
    empty_size, empty = OrderedLog().messages_document()
    assert b"".join(empty) == b'{"messages":[]}' and empty_size == 15


def test_appends_are_hidden_until_flushed_when_durable(log):
    log.append(encode_entry("a"))
    assert len(log) == (0 if log.durable else 1)
    assert log.entry(0) == encode_entry("a")  # the primary's replay check sees it at once
    log.flush()
    assert len(log) == 1


def test_an_in_memory_log_keeps_no_key_past_the_process():
    log = OrderedLog()
    log.append(encode_entry("a"), "key-a")
    assert log.keyed_appends() == []


# -- the durable implementation only ------------------------------------------------


def durable(tmp_path, role="secondary") -> DurableLog:
    return DurableLog(SqliteStore(str(tmp_path), role, fsync=True))


def test_what_was_flushed_comes_back_after_a_reopen_and_what_was_not_does_not(tmp_path):
    log = durable(tmp_path)
    for seq, message in [(0, "a"), (1, "b"), (4, "e")]:
        log.put(seq, encode_entry(message))
    log.set_meta(history="h1", segments=[[1, "t", 0]])
    log.flush()
    log.put(2, encode_entry("never flushed"))
    log = reopen(log, tmp_path)
    assert rendered(log) == ["a", "b"] and log.holds(4) and not log.holds(2)
    assert log.meta["history"] == "h1" and log.meta["segments"] == [[1, "t", 0]]
    log.put(2, encode_entry("c"))
    log.put(3, encode_entry("d"))
    log.flush()
    assert rendered(reopen(log, tmp_path)) == ["a", "b", "c", "d", "e"]


def test_a_truncation_survives_a_reopen(tmp_path):
    log = durable(tmp_path)
    for seq in range(5):
        log.put(seq, encode_entry(str(seq)))
    log.flush()
    log.truncate(2)
    log.flush()
    assert rendered(reopen(log, tmp_path)) == ["0", "1"]


def test_a_primarys_appends_reload_at_their_ids(tmp_path):
    log = durable(tmp_path, role="primary")
    for message in "abc":
        log.append(encode_entry(message))
    log.flush()
    log.close()
    again = DurableLog(SqliteStore(str(tmp_path), "primary", fsync=False))
    assert rendered(again) == ["a", "b", "c"] and again.append(encode_entry("d")) == 3
    again.close()


def test_a_store_of_the_other_role_is_refused(tmp_path):
    durable(tmp_path, role="primary").close()
    with pytest.raises(StoreError, match="belongs to a primary, not a secondary"):
        durable(tmp_path, role="secondary")


def test_a_corrupt_file_is_refused_never_started_empty_over(tmp_path):
    (tmp_path / FILE_NAME).write_bytes(b"this is no database" * 100)
    with pytest.raises(StoreError, match="not a usable store"):
        open_log(str(tmp_path), "secondary", fsync=True)


def test_a_torn_database_file_is_refused(tmp_path):
    log = durable(tmp_path)
    for seq in range(2000):
        log.put(seq, encode_entry("x" * 200))
    log.flush()
    log.close()
    path = tmp_path / FILE_NAME
    for name in (FILE_NAME + "-wal", FILE_NAME + "-shm"):
        if (tmp_path / name).exists():
            os.remove(tmp_path / name)
    size = path.stat().st_size
    with open(path, "r+b") as torn:  # a crash in the middle of a page write, long ago
        torn.seek(size // 2)
        torn.write(b"\xff" * 4096)
    with pytest.raises(StoreError):
        open_log(str(tmp_path), "secondary", fsync=True)


def test_a_torn_journal_tail_loses_only_the_uncommitted_end(tmp_path):
    log = durable(tmp_path)
    log.put(0, encode_entry("kept"))
    log.flush()
    log.close()
    wal = tmp_path / (FILE_NAME + "-wal")
    if wal.exists():  # a half-written frame at the end of the journal
        with open(wal, "ab") as journal:
            journal.write(b"\x00\x01" * 300)
    assert rendered(open_log(str(tmp_path), "secondary", fsync=True)) == ["kept"]


def test_the_keyed_appends_survive_a_reopen_only_once_flushed_and_not_past_a_truncation(tmp_path):
    log = durable(tmp_path, role="primary")
    log.append(encode_entry("a"), "key-a")
    log.append_many([encode_entry("b"), encode_entry("c")], "key-bc")
    log.flush()
    log.append(encode_entry("d"), "never flushed")
    log.close()
    log = durable(tmp_path, role="primary")
    assert log.keyed_appends() == [(0, "key-a", 1), (1, "key-bc", 2)]
    log.append(encode_entry("e"), "cut before its commit")
    log.truncate(1)
    log.flush()
    log.close()
    assert durable(tmp_path, role="primary").keyed_appends() == [(0, "key-a", 1)]
