"""Stores as the previous release wrote them in DATA_DIR, for the upgrade's tests.

Self-contained: the previous release's code is not in this checkout, so
these writers do what its store code did, statement for statement: the
same tables (its shared/log/sqlite_store.py: ``entries``, ``meta``,
``keyed``, created by the same SQL), the same WAL journal, one transaction
per commit, and the rows and meta (JSON) its roles wrote:

- ``OldFixedPrimary``: what the fixed primary's DurableLog wrote as its
  replicator drove it: messages at their ids, the appends made under an
  Idempotency-Key, the history id and the segments of its runs;
- ``OldFixedSecondary``: a fixed secondary's: the entries it was put (in
  any order: past a gap too), its incarnation, the history and the
  segments of the run it follows, a truncation where it diverged;
- ``OldFailoverNode``: a failover node's RaftStorage: entries by Raft index
  (a no-op as an empty body; the first message of a keyed append as
  ``@<key> <count> <literal>``), the term, the vote, the caught-up flag
  and the term runs.

tests/unit/test_store_upgrade.py checks them against the previous release's
own classes where its checkout is at hand (OLD_RELEASE).

Thread: the test's.
"""

from __future__ import annotations

import json
import os
import sqlite3
from json.encoder import encode_basestring_ascii
from pathlib import Path

#: Where a checkout of the previous release may be, for the cross-checks (development only).
OLD_RELEASE = Path(os.environ.get("OLD_RELEASE", "/tmp/old"))
#: The store's file name: the same in both releases.
FILE_NAME = "replicated-log.sqlite3"
#: The previous release's tables, as its sqlite_store.py created them.
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keyed (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, count INTEGER NOT NULL);
"""


def literal(message: str) -> bytes:
    """A message's JSON string literal, as both releases encode it."""
    return encode_basestring_ascii(message).encode("ascii")


class OldStore:
    """The previous release's SqliteStore: a connection, and ``commit``."""

    def __init__(self, data_dir: str | os.PathLike, role: str, fsync: bool = True) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, FILE_NAME)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
        self.db.executescript(SCHEMA)
        if self.meta().get("role") is None:
            self.commit(meta={"role": role})

    def meta(self) -> dict:
        return {key: json.loads(value) for key, value in self.db.execute("SELECT key, value FROM meta")}

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM entries").fetchone()[0]

    def commit(self, entries=(), truncate_from: int | None = None, meta: dict | None = None,
               keyed=()) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        if truncate_from is not None:
            db.execute("DELETE FROM entries WHERE seq >= ?", (truncate_from,))
            db.execute("DELETE FROM keyed WHERE seq >= ?", (truncate_from,))
        db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?)", entries)
        db.executemany("INSERT OR REPLACE INTO keyed VALUES (?, ?, ?)", keyed)
        for key, value in (meta or {}).items():
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OldFixedPrimary(OldStore):
    """A fixed primary's store. ``start_run`` as the primary did at each start
    (its first run once it first appended); ``append`` as a request did, then
    the I/O thread's flush."""

    def __init__(self, data_dir, fsync: bool = True) -> None:
        super().__init__(data_dir, "primary", fsync)
        meta = self.meta()
        self.history: str | None = meta.get("history")
        self.segments: list[list] = meta.get("segments", [])
        self.length = self.count()

    def start_run(self, number: int | None = None, token: str | None = None,
                  history: str = "5e1f0c4a9b2d4e6f8a7b6c5d4e3f2a10") -> list:
        """A new run from the log's length (a run that appended nothing leaves no segment)."""
        self.history = self.history or history
        number = number if number is not None else (self.segments[-1][0] + 1 if self.segments else 1)
        token = token or f"{number:08x}"
        self.segments = [s for s in self.segments if s[2] < self.length] + [[number, token, self.length]]
        self.commit(meta={"history": self.history, "segments": self.segments})
        return self.segments

    def append(self, messages: list[str], key: str | None = None) -> int:
        """One append (a batch if several messages) in one commit; its first id."""
        first = self.length
        entries = [(first + i, literal(m)) for i, m in enumerate(messages)]
        self.commit(entries, keyed=[(first, key, len(messages))] if key is not None else [])
        self.length += len(messages)
        return first


class OldFixedSecondary(OldStore):
    """A fixed secondary's store: ``follow`` a run (cutting where it diverged), ``put`` entries."""

    def __init__(self, data_dir, incarnation: str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                 fsync: bool = True) -> None:
        super().__init__(data_dir, "secondary", fsync)
        self.commit(meta={"incarnation": incarnation})

    def follow(self, history: str, segments: list[list], cut: int | None = None) -> None:
        self.commit(truncate_from=cut, meta={"history": history, "segments": segments})

    def put(self, first: int, messages: list[str]) -> None:
        self.commit([(first + i, literal(m)) for i, m in enumerate(messages)])


class OldFailoverNode(OldStore):
    """A failover node's store. Each call is one persist of the node's RaftStorage."""

    def __init__(self, data_dir, fsync: bool = True) -> None:
        super().__init__(data_dir, "failover", fsync)
        meta = self.meta()
        self.terms: list[list[int]] = meta.get("terms", [])
        self.length = self.count()

    def hard_state(self, term: int, voted_for: str | None = None, caught_up: bool = True) -> None:
        self.commit(meta={"term": term, "voted_for": voted_for, "caught_up": caught_up})

    def noop(self, term: int) -> int:
        """The no-op a primary of ``term`` appends first; its index."""
        return self._append(term, [b""], [])

    def append(self, term: int, messages: list[str], key: str | None = None) -> int:
        """One client append of ``term``: a row per message, the first one keyed
        if ``key``; the first row's index."""
        payloads = [literal(m) for m in messages]
        keyed = []
        if key is not None:
            payloads[0] = b"@%s %d %s" % (key.encode("ascii"), len(messages), payloads[0])
            keyed = [(self.length, key, len(messages))]
        return self._append(term, payloads, keyed)

    def truncate(self, index: int) -> None:
        """A primary of a later term does not hold the entries from ``index``."""
        terms = [run for run in self.terms if run[1] < index]
        self.commit(truncate_from=index, meta={"terms": terms} if terms != self.terms else None)
        self.terms, self.length = terms, min(self.length, index)

    def _append(self, term: int, payloads: list[bytes], keyed: list) -> int:
        first = self.length
        terms = [list(run) for run in self.terms]
        if not terms or terms[-1][0] != term:
            terms.append([term, first])
        meta = {"terms": terms} if terms != self.terms else None
        self.commit([(first + i, p) for i, p in enumerate(payloads)], None, meta, keyed)
        self.terms, self.length = terms, first + len(payloads)
        return first


def dump(path: str | os.PathLike) -> dict:
    """Everything a store holds, for comparing two stores: its schema, its
    journal mode, and every table's rows in key order."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
        rows = {name: db.execute(f"SELECT * FROM {name} ORDER BY 1").fetchall()
                for kind, name, _, _ in tables if kind == "table"}
        return {"schema": tables, "journal_mode": db.execute("PRAGMA journal_mode").fetchone()[0],
                "rows": rows}
    finally:
        db.close()
