"""A node's log on disk: one SQLite database in DATA_DIR.

Tables:

- ``entries``: one row per Raft entry (``idx``, its index), with its term,
  the id of its first message and its message count, the bytes of messages
  before it, the checksum of the log up to it, when this node stored it,
  its Idempotency-Key and its messages' JSON literals joined by commas. The
  no-op of a new term is a row with no messages.
- ``terms``: where each term's run of entries begins: what a restart needs
  to know every entry's term without reading the entries.
- ``keyed``: the appends made under an Idempotency-Key, by index, with
  their first id, count and a checksum of their messages. Rows outlive the
  entries they name (retention): a retry still finds its key. The newest
  IDEMPOTENCY_KEYS are kept.
- ``meta``: the role, the schema, the hard state (term, vote, caught up,
  vote floor, cluster), and the log's start (what the dropped entries
  left: shared.consensus.raft_log.LogStart).

Every change goes through ``commit``, one transaction (WAL journal;
fsynced under FSYNC=always, and always when it changes the term or the
vote), so what a crash leaves is always a state some commit produced.
Dropping the entries before the start is spread over commits, some
thousands of rows at a time, each followed by an incremental vacuum, so
that the file shrinks with the retained log and no commit takes long.

Reads never scan: every lookup goes by index, and finding a message id or
a byte offset is a binary search over indexes (the columns only grow).

Thread: the node's I/O thread owns the writing connection (``commit`` and
the reads the core makes); the main thread opens and loads the store
before that thread starts. ``reader()`` gives each other thread (Waitress
workers) a read-only connection of its own, whose reads see one committed
state from start to end.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from shared.consensus.raft_log import HardState, KeyRecord, LogStart

log = logging.getLogger(__name__)

#: The database's file name inside DATA_DIR.
FILE_NAME = "replicated-log.sqlite3"
#: This layout's number; an older store is refused with a clear error.
SCHEMA = 2
#: Rows below the start deleted per commit at most, and free pages given back
#: per commit at most: each about 5 ms of the I/O thread's pass (rows of 500
#: bytes), so that retention never stalls appends.
DROP_PER_COMMIT = 4_000
VACUUM_PAGES = 500
#: The page cache of each reading thread's connection, in KiB.
READER_CACHE_KIB = 256
#: The WAL journal's size at most between bursts.
JOURNAL_BYTES = 4 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, first_id INTEGER NOT NULL,
    count INTEGER NOT NULL, offset INTEGER NOT NULL, digest INTEGER NOT NULL, at REAL NOT NULL,
    key TEXT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS terms (first_idx INTEGER PRIMARY KEY, term INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keyed (
    idx INTEGER PRIMARY KEY, key TEXT NOT NULL, first_id INTEGER NOT NULL, count INTEGER NOT NULL,
    digest INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_ROW = "idx, term, first_id, count, offset, digest, at, key, body"


class StoreError(OSError):
    """The store cannot be used, or a write failed. str(error) says why in one line."""


Row = tuple  # (idx, term, first_id, count, offset, digest, at, key, body): an entries row


@dataclass
class Loaded:
    """What a start reads: nothing that grows with the log but the tail asked for."""

    hard_state: HardState
    fresh: bool  # the store was just created
    start: LogStart
    length: int
    runs: list[tuple[int, int]]  # (first index, term), ascending
    tail: list[Row]  # the last entries, ascending
    keys: list[KeyRecord]  # the keys in force, oldest first
    keyed_rows: int
    incarnation: str | None = None  # what names this node's state, if it was kept


@dataclass
class Changes:
    """What one commit writes, in this order."""

    install: LogStart | None = None  # the whole log replaced by this start
    truncate_from: int | None = None
    rows: list[Row] = field(default_factory=list)
    runs: list[tuple[int, int]] = field(default_factory=list)  # new (first index, term)
    keyed: list[KeyRecord] = field(default_factory=list)
    install_keys: list[KeyRecord] = field(default_factory=list)  # with install: the keys in force
    start: LogStart | None = None  # a new start (compaction, or install)
    hard_state: HardState | None = None
    incarnation: str | None = None

    def __bool__(self) -> bool:
        return bool(self.install or self.truncate_from is not None or self.rows or self.start
                    or self.hard_state or self.incarnation)


class SqliteLog:
    def __init__(self, data_dir: str, role: str, fsync: bool, key_capacity: int) -> None:
        self.path = os.path.join(data_dir, FILE_NAME)
        self._fsync = fsync
        self._key_capacity = key_capacity
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            new = not self._tables()
            if new:
                # Before the first table: a file that gives pages back as rows go.
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            # After each checkpoint the journal is cut back to this: the store's
            # size follows the retained log, not the largest burst of writes.
            self._db.execute(f"PRAGMA journal_size_limit={JOURNAL_BYTES}")
            self._set_sync(fsync)
            meta = self._meta() if not new else {}
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path} is not a usable store: {exc}") from None
        if not new and meta.get("schema") != SCHEMA:
            raise StoreError(f"{self.path} is not a store this program knows (its layout is not "
                             f"schema {SCHEMA}, nor one shared.log.upgrade converts): give the node "
                             "its own DATA_DIR (README: Upgrading)")
        if not new and meta.get("role") != role:
            raise StoreError(f"{self.path} belongs to a {meta.get('role')}, not a {role}: "
                             "give each node a DATA_DIR of its own")
        if new:
            try:
                self._db.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path} is not a usable store: {exc}") from None
            self._write_meta({"role": role, "schema": SCHEMA})
        self._dropped_below = 0  # rows below this are deleted already
        self._target_start = 0  # and rows below this are to be
        self._vacuum_due = False
        self._keyed_rows = 0
        self.fresh = new

    # -- the main thread, at start ------------------------------------------------------

    def load(self, tail_entries: int, tail_bytes: int) -> Loaded:
        """The hard state, the start, the term runs, the length, the last entries
        (at most ``tail_entries``, about ``tail_bytes``) and the keys in force."""
        try:
            meta = self._meta()
            start = LogStart(*meta["start"]) if "start" in meta else LogStart()
            state = meta.get("hard_state")
            hard_state = HardState(*state) if state else HardState(caught_up=False)
            runs = self._db.execute("SELECT first_idx, term FROM terms ORDER BY first_idx").fetchall()
            last = self._db.execute("SELECT max(idx) FROM entries").fetchone()[0]
            length = start.index if last is None or last < start.index else last + 1
            tail, size = [], 0
            cursor = self._db.execute(f"SELECT {_ROW} FROM entries WHERE idx >= ? ORDER BY idx DESC",
                                      (start.index,))
            for row in cursor:
                if len(tail) >= tail_entries or (tail and size > tail_bytes):
                    break
                tail.append(row)
                size += len(row[8])
            cursor.close()
            tail.reverse()
            if tail and (tail[-1][0] != length - 1 or tail[0][0] + len(tail) != length):
                raise StoreError(f"{self.path}: the log has a gap before index {length}")
            keys = [KeyRecord(key, idx, first_id, count, digest) for idx, key, first_id, count, digest in
                    reversed(self._db.execute("SELECT idx, key, first_id, count, digest FROM keyed "
                                              "ORDER BY idx DESC LIMIT ?", (self._key_capacity,)).fetchall())]
            self._keyed_rows = self._db.execute("SELECT count(*) FROM keyed").fetchone()[0]
            first_row = self._db.execute("SELECT min(idx) FROM entries").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the log: {exc}") from None
        self._dropped_below = start.index if first_row is None else min(first_row, start.index)
        self._target_start = start.index
        return Loaded(hard_state, self.fresh, start, length, runs, tail, keys, self._keyed_rows,
                      meta.get("incarnation"))

    # -- the I/O thread: writing ---------------------------------------------------------------

    def commit(self, changes: Changes) -> None:
        """Write ``changes`` in one transaction; StoreError if it failed (nothing written)."""
        db = self._db
        if changes.hard_state is not None and not self._fsync:
            self._set_sync(True)  # a term or a vote is always fsynced: once per election
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._write(changes)
                db.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back on some errors (a full disk);
                # a second ROLLBACK would raise and hide the real cause.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from None
        finally:
            if changes.hard_state is not None and not self._fsync:
                self._set_sync(False)
        if changes.install is not None:
            self._dropped_below = changes.install.index
        self._vacuum_if_dropped()

    def _write(self, changes: Changes) -> None:
        db = self._db
        if changes.install is not None:
            for table, column in (("entries", "idx"), ("terms", "first_idx")):
                db.execute(f"DELETE FROM {table} WHERE {column} >= 0")
            self._replace_keys(changes.install_keys)
        if changes.truncate_from is not None:
            db.execute("DELETE FROM entries WHERE idx >= ?", (changes.truncate_from,))
            db.execute("DELETE FROM terms WHERE first_idx >= ?", (changes.truncate_from,))
            removed = db.execute("DELETE FROM keyed WHERE idx >= ?", (changes.truncate_from,)).rowcount
            self._keyed_rows -= removed
        if changes.rows:
            db.executemany(f"INSERT OR REPLACE INTO entries ({_ROW}) VALUES (?,?,?,?,?,?,?,?,?)",
                           changes.rows)
        if changes.runs:
            db.executemany("INSERT OR REPLACE INTO terms VALUES (?, ?)", changes.runs)
        if changes.keyed:
            db.executemany("INSERT OR REPLACE INTO keyed VALUES (?, ?, ?, ?, ?)",
                           [(k.index, k.key, k.first_id, k.count, k.digest) for k in changes.keyed])
            self._keyed_rows += len(changes.keyed)
        meta = {}
        if changes.start is not None:
            meta["start"] = _start_fields(changes.start)
        if changes.hard_state is not None:
            meta["hard_state"] = _hard_state_fields(changes.hard_state)
        if changes.incarnation is not None:
            meta["incarnation"] = changes.incarnation
        if meta:
            self._write_meta(meta)
        self._drop_rows_before(changes.start.index if changes.start is not None else None)
        if too_many_keyed(self._keyed_rows, self._key_capacity):
            self._prune_keys()

    def _drop_rows_before(self, start: int | None) -> None:
        """Delete some of the rows before the start (see the module's docstring)."""
        if start is not None:
            self._target_start = start
        target = self._target_start
        if self._dropped_below >= target:
            return
        upto = min(target, self._dropped_below + DROP_PER_COMMIT)
        self._db.execute("DELETE FROM entries WHERE idx < ?", (upto,))
        # The term of the entry the start follows is in meta: runs before it can go.
        self._db.execute("DELETE FROM terms WHERE first_idx < (SELECT max(first_idx) FROM terms "
                         "WHERE first_idx <= ?)", (upto,))
        self._dropped_below = upto
        self._vacuum_due = True

    def _vacuum_if_dropped(self) -> None:
        """Give back up to VACUUM_PAGES of the pages deleted rows freed; the
        next commits go on while free pages remain."""
        if not self._vacuum_due:
            return
        try:
            # executescript steps the pragma to its end: execute() would step it
            # once, and each step frees one page.
            self._db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
            self._vacuum_due = self._db.execute("PRAGMA freelist_count").fetchone()[0] > 0
        except sqlite3.Error as exc:
            self._vacuum_due = False  # tried again after the next drop
            log.warning("cannot give the space of dropped entries back to the file system: %s", exc)

    @property
    def dropping(self) -> bool:
        """Whether rows before the start remain to be deleted, or their space to
        be given back (the I/O thread calls ``commit`` with no changes to go on)."""
        return self._dropped_below < self._target_start or self._vacuum_due

    def _replace_keys(self, keys: list[KeyRecord]) -> None:
        self._db.execute("DELETE FROM keyed WHERE idx >= 0")
        self._db.executemany("INSERT OR REPLACE INTO keyed VALUES (?, ?, ?, ?, ?)",
                             [(k.index, k.key, k.first_id, k.count, k.digest) for k in keys])
        self._keyed_rows = len(keys)

    def _prune_keys(self) -> None:
        self._db.execute("DELETE FROM keyed WHERE idx < (SELECT idx FROM keyed ORDER BY idx DESC "
                         "LIMIT 1 OFFSET ?)", (self._key_capacity - 1,))
        self._keyed_rows = self._key_capacity

    # -- the I/O thread: reading -----------------------------------------------------------

    def rows(self, start: int, stop: int, max_bytes: int) -> list[Row]:
        """Rows [start, stop), cut short once past ``max_bytes`` (at least one)."""
        return _rows(self._db, start, stop, max_bytes)

    def value(self, column: str, index: int):
        return _value(self._db, column, index)

    def keys_before(self, index: int) -> list[KeyRecord]:
        """The newest keyed appends before ``index``, oldest first (a truncation
        rebuilds the key table from them)."""
        rows = self._db.execute("SELECT idx, key, first_id, count, digest FROM keyed WHERE idx < ? "
                                "ORDER BY idx DESC LIMIT ?", (index, self._key_capacity)).fetchall()
        return [KeyRecord(key, idx, first_id, count, digest) for idx, key, first_id, count, digest
                in reversed(rows)]

    def close(self) -> None:
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers = []
        self._db.close()

    # -- any other thread: reading ---------------------------------------------------------

    @contextmanager
    def reader(self) -> Iterator["Reader"]:
        """A read transaction on this thread's own connection: one committed state."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{urllib.parse.quote(self.path)}?mode=ro", uri=True,
                                         isolation_level=None, check_same_thread=False)
            # A page reads a few rows by index: a small cache each (the OS caches
            # the file), so that HTTP_THREADS readers do not hold 2 MiB apiece.
            connection.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
            self._local.connection = connection
            with self._readers_lock:
                self._readers.append(connection)
        connection.execute("BEGIN")
        try:
            yield Reader(connection)
        finally:
            connection.execute("COMMIT")

    # -- its own ---------------------------------------------------------------------------

    def _tables(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")]

    def _meta(self) -> dict:
        try:
            return {key: json.loads(value) for key, value in self._db.execute("SELECT key, value FROM meta")}
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"{self.path}: cannot read the node's state: {exc}") from None

    def _write_meta(self, values: dict) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [(key, json.dumps(value)) for key, value in values.items()])

    def _set_sync(self, full: bool) -> None:
        # NORMAL, not OFF, without FSYNC: in WAL mode it fsyncs only at
        # checkpoints, and a power loss then costs the last commits, never the file.
        self._db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")


class Reader:
    """Reads within one read transaction (``SqliteLog.reader``)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def rows(self, start: int, stop: int, max_bytes: int) -> list[Row]:
        return _rows(self._db, start, stop, max_bytes)

    def value(self, column: str, index: int):
        return _value(self._db, column, index)

    def start(self) -> LogStart:
        """The log's start as this read transaction sees it: rows from there on are all here."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'start'").fetchone()
        return LogStart(*json.loads(row[0])) if row else LogStart()

    def bodies(self, start: int, stop: int) -> Iterator[tuple[int, int, bytes]]:
        """(first id, count, body) of entries [start, stop), in order."""
        yield from self._db.execute("SELECT first_id, count, body FROM entries WHERE idx >= ? AND "
                                    "idx < ? ORDER BY idx", (start, stop))


def too_many_keyed(rows: int, capacity: int) -> bool:
    """Whether the keyed appends kept are due to be pruned back to ``capacity``:
    once a tenth (and 100) over it, so that pruning is rare."""
    return rows > capacity * 1.1 + 100


def search(value_at, lo: int, hi: int, value: float) -> int:
    """The first index in [lo, hi) whose column value (``value_at(index)``, which
    only grows along the log) is above ``value``, minus one: the last index whose
    value is at most ``value``; ``lo - 1`` if none. About log2(hi - lo) lookups."""
    while lo < hi:
        middle = (lo + hi) // 2
        if value_at(middle) <= value:
            lo = middle + 1
        else:
            hi = middle
    return lo - 1


def _rows(db: sqlite3.Connection, start: int, stop: int, max_bytes: int) -> list[Row]:
    rows, size = [], 0
    for row in db.execute(f"SELECT {_ROW} FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                          (start, stop)):
        size += len(row[8])
        if rows and size > max_bytes:
            break
        rows.append(row)
    return rows


def _value(db: sqlite3.Connection, column: str, index: int):
    row = db.execute(f"SELECT {column} FROM entries WHERE idx = ?", (index,)).fetchone()
    if row is None:
        raise StoreError(f"entry {index} is missing from the log")
    return row[0]


def _start_fields(start: LogStart) -> list:
    return [start.index, start.term, start.digest, start.first_id, start.offset]


def _hard_state_fields(state: HardState) -> list:
    return [state.term, state.voted_for, state.caught_up, state.vote_floor, state.cluster]
