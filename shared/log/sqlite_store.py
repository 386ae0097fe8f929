"""The durable copy of a node's log: one SQLite database in DATA_DIR.

Three tables: ``entries`` (seq, body), where body is the entry's JSON string
literal exactly as it travels; ``keyed`` (seq, key, count): the appends made
under an Idempotency-Key, by their first seq, so the keys survive a restart
and are cut with the entries they name; and ``meta`` (key, value) for the
node's identity: its role, the history id, the segments of the run it
follows, and a secondary's incarnation. The WAL journal keeps a commit to one append to
the journal plus, with FSYNC=always, one fsync; SQLite replays or discards
a torn journal tail by itself on the next open.

Every change goes through ``commit``, one transaction, so what a crash
leaves behind is always a state that some ``commit`` produced.

Thread: one at a time. The main thread opens and loads it before the I/O
thread starts; from then on only the I/O thread calls it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Iterator

#: The database's file name inside DATA_DIR.
FILE_NAME = "replicated-log.sqlite3"
#: Rows fetched per round trip while loading.
LOAD_BATCH = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keyed (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, count INTEGER NOT NULL);
"""


class StoreError(OSError):
    """The store cannot be used, or a write failed. str(error) says why in one line."""


@dataclass(frozen=True)
class Changes:
    """What one commit writes: entries, a truncation, identity values, and
    the keyed appends as (first seq, key, count)."""

    entries: list[tuple[int, bytes]]
    truncate_from: int | None = None
    meta: dict | None = None
    keyed: list[tuple[int, str, int]] = field(default_factory=list)


class SqliteStore:
    def __init__(self, data_dir: str, role: str, fsync: bool) -> None:
        self.path = os.path.join(data_dir, FILE_NAME)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
            self._db.executescript(_SCHEMA)
            stored_role = self.meta().get("role")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path} is not a usable store: {exc}") from None
        if stored_role is None:
            self.commit(Changes([], meta={"role": role}))
        elif stored_role != role:
            raise StoreError(f"{self.path} belongs to a {stored_role}, not a {role}: "
                             "give each node a DATA_DIR of its own")

    def meta(self) -> dict:
        """Identity values as stored, JSON-decoded."""
        try:
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
            return {key: json.loads(value) for key, value in rows}
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"{self.path}: cannot read the node's identity: {exc}") from None

    def entries(self) -> Iterator[tuple[int, bytes]]:
        """Every stored entry, by seq ascending."""
        try:
            cursor = self._db.execute("SELECT seq, body FROM entries ORDER BY seq")
            while rows := cursor.fetchmany(LOAD_BATCH):
                yield from rows
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the log: {exc}") from None

    def keyed(self) -> list[tuple[int, str, int]]:
        """Every stored keyed append as (first seq, key, count), by seq ascending."""
        try:
            return self._db.execute("SELECT seq, key, count FROM keyed ORDER BY seq").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the idempotency keys: {exc}") from None

    def commit(self, changes: Changes) -> None:
        """Write ``changes`` in one transaction; StoreError if it failed (nothing written)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if changes.truncate_from is not None:
                    db.execute("DELETE FROM entries WHERE seq >= ?", (changes.truncate_from,))
                    db.execute("DELETE FROM keyed WHERE seq >= ?", (changes.truncate_from,))
                if changes.entries:
                    db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?)", changes.entries)
                if changes.keyed:
                    db.executemany("INSERT OR REPLACE INTO keyed VALUES (?, ?, ?)", changes.keyed)
                for key, value in (changes.meta or {}).items():
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
                db.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back on some errors (a full disk);
                # a second ROLLBACK would raise and hide the real cause.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()
