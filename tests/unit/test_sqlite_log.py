"""shared.log.sqlite_log: a node's log in one SQLite database.

What a commit writes comes back at load, whole or not at all (also after a
crash in the middle of one); a file that is not this node's store is
refused with a StoreError that says why; reads go by index; dropping the
rows before the start is spread over commits. Each test drives a SqliteLog
with the Changes a NodeLog would hand it (shared.log.node_log).
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import threading
from contextlib import closing

import pytest

from shared.consensus.raft_log import Entry, HardState, KeyRecord, LogStart, body_digest, digest_after
from shared.log import sqlite_log
from shared.log.sqlite_log import FILE_NAME, Changes, Loaded, SqliteLog, StoreError, search
from shared.wire.frames import encode_entry

BIG = 1 << 30  # a byte budget that cuts nothing


@pytest.fixture
def open_store(tmp_path):
    """Open SqliteLogs (in tmp_path unless told otherwise); all are closed after the test."""
    opened: list[SqliteLog] = []

    def open_(directory=tmp_path, role="primary", fsync=True, key_capacity=10) -> SqliteLog:
        opened.append(SqliteLog(str(directory), role, fsync, key_capacity))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


def message(text: str, term: int = 1, key: str | None = None) -> Entry:
    return Entry(term, encode_entry(text), 1, key)


def rows_of(entries: list[Entry], start: LogStart = LogStart(), at: float = 1000.0) -> list[tuple]:
    """The rows ``entries`` become when they follow ``start``, as NodeLog stages them."""
    rows, first_id, offset, digest = [], start.first_id, start.offset, start.digest
    for index, entry in enumerate(entries, start.index):
        digest = digest_after(digest, entry)
        rows.append((index, entry.term, first_id, entry.count, offset, digest, at, entry.key, entry.body))
        first_id, offset = first_id + entry.count, offset + len(entry.body)
    return rows


def keyed(rows: list[tuple]) -> list[KeyRecord]:
    return [KeyRecord(row[7], row[0], row[2], row[3], body_digest(row[8])) for row in rows if row[7]]


def written(store: SqliteLog, entries: list[Entry], at: int = 0, **changes) -> list[tuple]:
    """Commit ``entries`` at index ``at`` (after as many messages: one an entry),
    one term run each time the term changes, with ``changes``."""
    rows = rows_of(entries, LogStart(at, first_id=at))
    runs = [(row[0], row[1]) for i, row in enumerate(rows) if i == 0 or rows[i - 1][1] != row[1]]
    store.commit(Changes(rows=rows, runs=runs, keyed=keyed(rows), **changes))
    return rows


def entry_count(store: SqliteLog) -> tuple[int, int | None]:
    """Rows in the entries table and the first one's index, from a connection of its own."""
    with closing(sqlite3.connect(store.path)) as other:
        return other.execute("SELECT count(*), min(idx) FROM entries").fetchone()


def test_a_new_store_is_fresh_empty_and_not_caught_up(open_store):
    loaded = open_store().load(100, BIG)
    assert loaded == Loaded(HardState(caught_up=False), True, LogStart(), 0, [], [], [], 0, None)


def test_what_a_commit_wrote_comes_back_at_load(open_store, tmp_path):
    store = open_store()
    entries = [Entry(1), message("a", key="ka"), Entry(2), Entry(2, b'"b","c"', 2, "kbc")]
    rows = rows_of(entries)
    state = HardState(2, "p", True, 1, "cluster-1")
    store.commit(Changes(rows=rows, runs=[(0, 1), (2, 2)], keyed=keyed(rows), hard_state=state,
                         incarnation="life-1"))
    store.close()
    loaded = open_store().load(100, BIG)
    assert loaded == Loaded(state, False, LogStart(), 4, [(0, 1), (2, 2)], rows, keyed(rows), 2, "life-1")
    assert [record.first_id for record in loaded.keys] == [0, 1]


def test_a_commit_that_fails_writes_nothing_of_itself(open_store):
    store = open_store()
    written(store, [message("a"), message("b")], hard_state=HardState(1, "p"))
    good, bad = rows_of([message("c"), message("d")], LogStart(2, first_id=2))
    with pytest.raises(StoreError, match="cannot write to"):
        store.commit(Changes(rows=[good, bad[:8] + (None,)], hard_state=HardState(9, "p")))
    loaded = store.load(100, BIG)
    assert (loaded.length, loaded.hard_state.term) == (2, 1)
    written(store, [message("c")], at=2)  # the connection is usable again
    assert store.load(100, BIG).length == 3


def test_a_crash_in_the_middle_of_a_commit_leaves_the_state_before_it(open_store, tmp_path):
    (tmp_path / "live").mkdir()
    store = open_store(tmp_path / "live")
    first = written(store, [message(f"m{i}") for i in range(5)], hard_state=HardState(1, "p"))
    written(store, [message("x" * 5000)] * 3, at=5, hard_state=HardState(2, "p"))
    # The files as a crash leaves them: the journal's last frame, which marks
    # the second commit done, only half written.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy(store.path, crashed / FILE_NAME)
    journal = (tmp_path / "live" / (FILE_NAME + "-wal")).read_bytes()
    (crashed / (FILE_NAME + "-wal")).write_bytes(journal[:-2000])
    loaded = open_store(crashed).load(100, BIG)
    assert (loaded.length, loaded.tail, loaded.hard_state.term) == (5, first, 1)


def test_a_store_of_another_role_is_refused(open_store):
    open_store(role="primary").close()
    with pytest.raises(StoreError, match="belongs to a primary, not a secondary"):
        open_store(role="secondary")


def test_a_store_of_an_earlier_layout_is_refused(open_store):
    path = open_store().path
    with closing(sqlite3.connect(path)) as raw, raw:
        raw.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="not a store this program knows"):
        open_store()


def test_a_file_that_is_no_database_is_refused_and_left_as_it_was(open_store, tmp_path):
    garbage = b"this is no database" * 100
    (tmp_path / FILE_NAME).write_bytes(garbage)
    with pytest.raises(StoreError, match="is not a usable store"):
        open_store()
    assert (tmp_path / FILE_NAME).read_bytes() == garbage


@pytest.mark.parametrize("torn_page", ["first", "last"])
def test_a_torn_page_that_a_start_reads_is_refused(open_store, tmp_path, torn_page):
    """The header and the log's tail are read at every start (the pages in
    between only when something asks for them: a start reads no more)."""
    store = open_store()
    written(store, [message("x" * 200)] * 2000)
    store.close()
    size = os.path.getsize(store.path)
    with open(store.path, "r+b") as torn:  # a crash in the middle of a page write, long ago
        torn.seek(0 if torn_page == "first" else size - 4096)
        torn.write(b"\xff" * 4096)
    with pytest.raises(StoreError, match="not a usable store|cannot read"):
        open_store().load(100, BIG)


def test_load_reads_the_last_entries_up_to_a_count_or_about_a_size(open_store):
    store = open_store()
    rows = written(store, [message(f"{i:03d}") for i in range(300)])
    assert store.load(10, BIG).tail == rows[-10:]
    assert store.load(1000, BIG).tail == rows
    # Entries until their bodies pass the size: 5-byte bodies, 12 bytes -> 3.
    assert store.load(1000, 12).tail == rows[-3:]
    assert store.load(1000, BIG).length == 300


def test_load_refuses_a_log_with_a_hole_in_its_tail(open_store):
    store = open_store()
    written(store, [message(str(i)) for i in range(10)])
    store.close()
    with closing(sqlite3.connect(store.path)) as raw, raw:
        raw.execute("DELETE FROM entries WHERE idx = 6")
    with pytest.raises(StoreError, match="gap before index 10"):
        open_store().load(100, BIG)


def test_rows_are_read_by_index_and_cut_past_a_size_but_never_empty(open_store):
    store = open_store()
    rows = written(store, [message("x" * 10)] * 6)
    assert store.rows(2, 5, BIG) == rows[2:5]
    assert store.rows(2, 5, 1) == rows[2:3]
    assert store.rows(0, 6, 2 * len(rows[0][8])) == rows[:2]
    assert store.value("offset", 4) == 4 * 12 and store.value("first_id", 5) == 5


def test_reading_a_missing_entry_is_a_store_error(open_store):
    store = open_store()
    written(store, [message("a")])
    with pytest.raises(StoreError, match="entry 7 is missing"):
        store.value("first_id", 7)


def test_search_finds_the_last_index_whose_value_is_at_most_the_one_asked_in_log_time():
    values = [0, 0, 3, 3, 3, 7, 8, 8, 20] * 1 + [30 + i for i in range(1000)]
    looked_up = []

    def value_at(index):
        looked_up.append(index)
        return values[index]

    for wanted in [-1, 0, 2, 3, 5, 7, 8, 19, 20, 29, 30, 500, 1029, 5000]:
        expected = max((i for i, v in enumerate(values) if v <= wanted), default=-1)
        looked_up.clear()
        assert search(value_at, 0, len(values), wanted) == expected, wanted
        assert len(looked_up) <= math.ceil(math.log2(len(values))) + 1
    assert search(value_at, 5, 9, 3) == 4  # below everything in [lo, hi): lo - 1


def test_a_reader_sees_one_committed_state_until_its_transaction_ends(open_store):
    store = open_store()
    written(store, [message("a"), message("b")])
    with store.reader() as reader:
        before = list(reader.bodies(0, 10))
        written(store, [message("c")], at=2)  # the I/O thread commits meanwhile
        assert list(reader.bodies(0, 10)) == before == [(0, 1, b'"a"'), (1, 1, b'"b"')]
        with pytest.raises(StoreError):
            reader.value("first_id", 2)
    with store.reader() as reader:
        assert reader.value("first_id", 2) == 2 and reader.rows(2, 3, BIG)[0][8] == b'"c"'


def test_each_reading_thread_has_its_own_connection(open_store):
    store = open_store()
    written(store, [message("a")])
    seen, errors = [], []

    def read():
        try:
            with store.reader() as reader:
                seen.append(list(reader.bodies(0, 1)))
        except Exception as exc:  # collected: a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == [] and seen == [[(0, 1, b'"a"')]] * 4


def test_readers_open_a_data_dir_whose_name_uri_syntax_would_cut_short(open_store, tmp_path):
    """Readers open the file by URI (read-only): '#', '?' and '%' in DATA_DIR are quoted."""
    directory = tmp_path / "data #1?%20"
    directory.mkdir()
    store = open_store(directory)
    written(store, [message("a")])
    with store.reader() as reader:
        assert list(reader.bodies(0, 1)) == [(0, 1, b'"a"')]


def test_a_truncation_deletes_the_entries_runs_and_keys_from_its_index(open_store):
    store = open_store()
    rows = written(store, [Entry(1), message("a", key="k1"), Entry(2), message("b", 2, "k3"),
                           message("c", 2, "k4")])
    store.commit(Changes(truncate_from=2, hard_state=HardState(3, "p")))
    assert store.keys_before(10) == keyed(rows[:2])
    store.close()
    loaded = open_store().load(100, BIG)
    assert (loaded.length, loaded.runs, loaded.tail, loaded.keys) == (2, [(0, 1)], rows[:2], keyed(rows[:2]))


def test_an_installed_start_replaces_the_whole_log_and_its_keys(open_store):
    store = open_store()
    written(store, [message("old", key="old")] * 3)
    start = LogStart(100, 4, 1234, 250, 9000)
    keys = [KeyRecord("kept", 90, 240, 2, 77)]
    store.commit(Changes(install=start, install_keys=keys, start=start, runs=[(100, 4)]))
    store.close()
    loaded = open_store().load(100, BIG)
    assert (loaded.start, loaded.length, loaded.tail, loaded.keys) == (start, 100, [], keys)


def test_only_the_newest_keys_are_kept(open_store):
    store = open_store(key_capacity=10)
    rows = written(store, [message(str(i), key=f"k{i}") for i in range(150)])
    assert store.keys_before(1000) == keyed(rows)[-10:]
    store.close()
    loaded = open_store(key_capacity=10).load(0, 0)
    assert loaded.keys == keyed(rows)[-10:] and loaded.keyed_rows == 10


def test_the_rows_before_the_start_are_deleted_a_bounded_number_per_commit(open_store, monkeypatch):
    monkeypatch.setattr(sqlite_log, "DROP_PER_COMMIT", 1000)
    store = open_store()
    rows = written(store, [message(str(i), term=1 + i // 1000) for i in range(4500)])
    start = LogStart(4200, 5, rows[4199][5], 4200, rows[4200][4])
    store.commit(Changes(start=start))
    assert entry_count(store) == (3500, 1000) and store.dropping
    store.commit(Changes())
    assert entry_count(store) == (2500, 2000) and store.dropping
    store.close()  # a restart goes on where the last commit stopped
    store = open_store()
    assert store.load(100, BIG).start == start and store.dropping
    while store.dropping:
        store.commit(Changes())
    assert entry_count(store) == (300, 4200)
    loaded = store.load(100, BIG)
    assert (loaded.length, loaded.runs, loaded.tail) == (4500, [(4000, 5)], rows[4400:])


def test_a_term_or_a_vote_is_synced_to_disk_even_when_fsync_is_off(open_store, monkeypatch):
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(statements.append)
        return connection

    monkeypatch.setattr(sqlite3, "connect", traced)
    store = open_store(fsync=False)
    written(store, [message("a")])
    assert "PRAGMA synchronous=FULL" not in statements
    del statements[:]
    store.commit(Changes(hard_state=HardState(2, "p")))
    full, begin, commit, normal = (statements.index(s) for s in (
        "PRAGMA synchronous=FULL", "BEGIN IMMEDIATE", "COMMIT", "PRAGMA synchronous=NORMAL"))
    assert full < begin < commit < normal


def test_the_journal_is_cut_back_after_a_burst_of_writes(open_store):
    store = open_store(fsync=False)
    written(store, [message("x" * 500)] * 12_000)  # about 6 MB in one commit
    journal = store.path + "-wal"
    assert os.path.getsize(journal) > sqlite_log.JOURNAL_BYTES
    for n in range(2):  # the burst is checkpointed, then the journal starts over, cut back
        written(store, [message("small")], at=12_000 + n)
    assert os.path.getsize(journal) <= sqlite_log.JOURNAL_BYTES
