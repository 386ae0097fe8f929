"""The previous release's store in DATA_DIR, upgraded in place to schema 2 (shared.log.sqlite_log).

**What the previous release wrote.** One SQLite file, FILE_NAME (the name
schema 2 keeps), made by its shared/log/sqlite_store.py in every role:

- ``entries (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)``;
- ``meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)``, JSON values, no ``schema``;
- ``keyed (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, count INTEGER NOT NULL)``.

Its meta ``role`` says which of two layouts the rows follow:

- **fixed roles** (``primary``, ``secondary``): ``entries`` holds one message
  per row, its JSON string literal, at its id (a secondary may also hold
  rows past a gap: received, never shown). ``meta``: ``history`` (the id
  that names the cluster's log) and ``segments`` ``[[run number, token,
  base], ...]`` (the run that wrote each id, bases ascending from 0), and a
  secondary's ``incarnation``. ``keyed`` (the primary's): an append made
  under an Idempotency-Key, by its first id, with its message count.
- **failover** (``failover``): ``entries`` by Raft index from 0, one message
  per row, or an empty body for a term's no-op. The first message of an
  append made under a key is ``@<key> <count> <literal>`` (a batch is
  ``count`` consecutive rows). ``meta``: ``term``, ``voted_for``,
  ``caught_up`` and ``terms`` ``[[term, first index], ...]``; ``keyed``
  mirrors the keyed payloads, by Raft index.

**How each maps.** Every old row becomes one entry at the same position:
messages keep their ids and order, and the nodes of one cluster, which
convert their copies of the same rows alike, keep logs that agree entry by
entry (same index, term and checksum), so Raft's log matching holds across
the upgrade. Batches were never one row in the old layouts, so merging the
rows of a batch is not done: nodes holding different parts of a batch would
then disagree on the indexes that follow.

- fixed: entry i = message i, of the term = the number of the run that wrote
  id i; the cluster (``hard_state.cluster``) = the history id, so a primary
  and its secondaries, upgraded alike, still agree on the cluster; term =
  the last run's number (the upgraded primary begins the next one). The
  keys stay in the ``keyed`` table only, not in the entries, whose
  checksums must match the secondaries' (which never knew the keys). A
  secondary's rows past a gap are not carried (the primary sends them
  again); nor are the messages of a store with no history (a primary that
  crashed while recovering its log, which it recovers again).
- failover: entry i = row i, with its term from ``terms``; a no-op stays a
  no-op (count 0, empty body); a keyed row's key goes with its entry, as a
  new append's does (every node holds the same rows, so their checksums
  agree; a node that is sent such an entry later learns the key of a batch
  for its first message only, and answers a retry of the whole batch 409,
  never appending it twice). The hard state keeps the term, the vote and
  the caught-up flag (a store with no term is as a new one: not caught up).

A key -> (the index of the last entry of its append, first id, count, the
checksum of the messages joined by commas): what ``keyed`` rows of new
appends hold, so that a retry's messages are compared just the same. An
append whose rows are not all held (cut short) keeps the ones held. The
newest ``key_capacity`` keys are kept. No incarnation is carried: the node
names its state anew. Old rows had no time: every entry is stored at the
upgrade's time (retention by age counts from then).

**Crash safety.** The old file is first made whole on its own (its WAL
checkpointed, journal mode DELETE: no ``-wal`` file is left beside it), the
new store is written to FILE_NAME.upgrading (whose leftovers of a crashed
attempt are dropped) and fsynced; then the old file gets a second name,
FILE_NAME.pre-upgrade (a hard link, or a copy where links are not
supported), and the new file is renamed over FILE_NAME (atomic), the
directory fsynced after each step. So FILE_NAME is at every moment either
the old store, whole, or the new one, whole: a crash before the rename
leaves the old store, which the next start upgrades again, and the old
rows are never changed. Any error leaves the old store as it was (its
journal mode too), with a StoreError that says why; so does an old store
that another process still has open (a node of the previous release still
running), which SQLite will not switch out of WAL.

The conversion streams: rows are read and written BATCH_ROWS at a time,
whatever the log's size.

Thread: main, before the store is opened (shared.log.node_log.open_log).
"""

from __future__ import annotations

import bisect
import filecmp
import json
import logging
import os
import shutil
import sqlite3
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field

from shared.consensus.raft_log import Entry, digest_after
from shared.log.sqlite_log import _ROW, _SCHEMA, FILE_NAME, SCHEMA, StoreError

log = logging.getLogger(__name__)

#: The names beside FILE_NAME: the new store while it is written, and the old one once upgraded.
UPGRADING_SUFFIX = ".upgrading"
KEPT_SUFFIX = ".pre-upgrade"
#: Rows read and written at a time.
BATCH_ROWS = 10_000
#: The previous release's tables, as its sqlite_store.py made them.
_OLD_COLUMNS = {"entries": ["seq", "body"], "meta": ["key", "value"], "keyed": ["seq", "key", "count"]}
_FIXED_ROLES = ("primary", "secondary")
_FAILOVER_ROLE = "failover"
#: The longest cluster name the wire carries (shared.wire.frames).
_MAX_CLUSTER = 64


class _NotWritten(ValueError):
    """The old store holds what the previous release never wrote: damage."""


def upgrade_store(data_dir: str, role: str, key_capacity: int) -> bool:
    """If DATA_DIR holds a store of the previous release, make it a schema-2
    store (see the module's docstring); True if it did. Anything else is left
    for SqliteLog to open or refuse. Raises StoreError when the old store
    cannot be upgraded (it is then left as it was)."""
    path = os.path.join(data_dir, FILE_NAME)
    if not os.path.isfile(path):
        return False
    meta = _old_meta(path)
    if meta is None:
        return False
    stored_role = meta.get("role", role)  # the old store wrote its role after its tables
    if stored_role != role:
        raise StoreError(f"{path} belongs to a {stored_role}, not a {role}: give each node a DATA_DIR "
                         "of its own")
    if role not in (*_FIXED_ROLES, _FAILOVER_ROLE):
        raise StoreError(f"{path}: a store of the previous release, of an unknown role {role!r}")
    kept, upgrading = path + KEPT_SUFFIX, path + UPGRADING_SUFFIX
    if os.path.lexists(kept) and not _same_file(kept, path):
        raise StoreError(f"{path} is a store of the previous release, to be upgraded, but {kept} is "
                         "in the way (another file): move it elsewhere, then start again")
    kind = "failover" if role == _FAILOVER_ROLE else "fixed-role"
    layout = f"the previous release's {kind} layout ({role})"
    started = time.monotonic()
    try:
        _remove(upgrading)  # what a crashed attempt left
        report = _convert(path, upgrading, role, key_capacity)
        _fsync_file(upgrading)
        _no_journal_beside(path)
        if not os.path.lexists(kept):
            _keep(path, kept)
        _fsync_dir(data_dir)
        os.replace(upgrading, path)  # the one step that switches: atomic
    except BaseException as exc:
        try:
            _remove(upgrading)
        except OSError:
            pass
        if isinstance(exc, StoreError):
            raise
        if isinstance(exc, (sqlite3.Error, OSError, ValueError, TypeError, KeyError, IndexError)):
            raise StoreError(f"{path} is a store of the previous release that cannot be upgraded: {exc}; "
                             f"it is left as it was") from None
        raise
    _fsync_dir(data_dir)
    for warning in report.warnings:
        log.warning("upgrading the store in %s: %s", data_dir, warning)
    log.info("upgraded the store in %s from %s to schema %d: %d messages in %.2f s; the old file is "
             "kept as %s", data_dir, layout, SCHEMA, report.messages, time.monotonic() - started, kept)
    return True


# -- recognising the old layout ------------------------------------------------------------


def _old_meta(path: str) -> dict | None:
    """The old store's meta if ``path`` is in the previous release's layout; None
    if it is not (schema 2, or something SqliteLog will refuse). Read-only."""
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        try:
            names = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if names != set(_OLD_COLUMNS):
                return None
            tables = {name: [column[1] for column in db.execute(f"PRAGMA table_info({name})")]
                      for name in names}
        except sqlite3.Error:
            return None
        if tables != _OLD_COLUMNS:
            return None
        try:
            meta = {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM meta")}
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise StoreError(f"{path}: a store of the previous release whose state cannot be read: {exc}; "
                             "it is left as it was") from None
        return None if "schema" in meta else meta
    finally:
        db.close()


# -- converting ------------------------------------------------------------------------------


@dataclass
class _Report:
    messages: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class _KeyedAppend:
    """An append made under a key, its rows being read: what its keyed row becomes."""

    key: str
    first_id: int
    count: int  # the messages the append made
    term: int
    held: int = 0
    last_index: int = -1
    digest: int = 0  # of the literals held, joined by commas

    def add(self, index: int, literal: bytes) -> None:
        if self.held:
            self.digest = zlib.crc32(b",", self.digest)
        self.digest = zlib.crc32(literal, self.digest)
        self.held += 1
        self.last_index = index

    @property
    def whole(self) -> bool:
        return self.held >= self.count


class _NewStore:
    """The schema-2 store being written, a batch of rows at a time."""

    def __init__(self, path: str, role: str, now: float) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # as SqliteLog makes a new store
        # A file no one uses before it is whole and fsynced: no journal is needed.
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        self._role, self._now = role, now
        self.length = self.next_id = 0
        self._offset = self._digest = 0
        self._last_term: int | None = None
        self._rows: list[tuple] = []
        self._runs: list[tuple[int, int]] = []
        self._keyed: list[tuple] = []
        self.partial_keys = 0

    def add(self, entry: Entry) -> int:
        """Append ``entry``; its index."""
        index = self.length
        self._digest = digest_after(self._digest, entry)
        self._rows.append((index, entry.term, self.next_id, entry.count, self._offset, self._digest,
                           self._now, entry.key, entry.body))
        if entry.term != self._last_term:
            self._runs.append((index, entry.term))
            self._last_term = entry.term
        self.length += 1
        self.next_id += entry.count
        self._offset += len(entry.body)
        if len(self._rows) >= BATCH_ROWS:
            self.flush()
        return index

    def keyed(self, append: _KeyedAppend | None) -> None:
        """Record a keyed append once its rows are read (those held, if cut short)."""
        if append is None or not append.held:
            return
        if not append.whole:
            self.partial_keys += 1
        self._keyed.append((append.last_index, append.key, append.first_id, append.held, append.digest))

    def flush(self) -> None:
        """Write the rows gathered so far."""
        db = self._db
        db.execute("BEGIN")
        db.executemany(f"INSERT INTO entries ({_ROW}) VALUES (?,?,?,?,?,?,?,?,?)", self._rows)
        db.executemany("INSERT INTO terms VALUES (?, ?)", self._runs)
        db.executemany("INSERT OR REPLACE INTO keyed VALUES (?, ?, ?, ?, ?)", self._keyed)
        db.execute("COMMIT")
        self._rows, self._runs, self._keyed = [], [], []

    def finish(self, hard_state: list | None, key_capacity: int) -> None:
        """The last rows, the newest ``key_capacity`` keys, and meta; then close."""
        self.flush()
        db = self._db
        db.execute("DELETE FROM keyed WHERE idx < (SELECT idx FROM keyed ORDER BY idx DESC LIMIT 1 "
                   "OFFSET ?)", (max(key_capacity, 1) - 1,))
        meta = {"role": self._role, "schema": SCHEMA}
        if hard_state is not None:
            meta["hard_state"] = hard_state
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                       [(key, json.dumps(value)) for key, value in meta.items()])
        db.close()

    def close(self) -> None:
        self._db.close()


def _convert(path: str, upgrading: str, role: str, key_capacity: int) -> _Report:
    old = sqlite3.connect(path, isolation_level=None)
    try:
        # The old file whole on its own: its WAL checkpointed into it and gone.
        # Refused while another process has it open (a node still running).
        journal = old.execute("PRAGMA journal_mode").fetchone()[0]
        try:
            mode = old.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            mode = exc
        if str(mode).lower() != "delete":
            raise StoreError(f"{path} is in use by another process ({mode}): stop every node that uses "
                             "this DATA_DIR, then start again")
        try:
            meta = {key: json.loads(value) for key, value in old.execute("SELECT key, value FROM meta")}
            new = _NewStore(upgrading, role, time.time())
            try:
                if role == _FAILOVER_ROLE:
                    report, hard_state = _convert_failover(old, meta, new)
                else:
                    report, hard_state = _convert_fixed(old, meta, new)
                new.finish(hard_state, key_capacity)
            except BaseException:
                new.close()
                raise
        except BaseException:
            try:
                old.execute(f"PRAGMA journal_mode={journal}")  # as the previous release left it
            except sqlite3.Error:
                pass
            raise
    finally:
        old.close()
    if new.partial_keys:
        report.warnings.append(f"{new.partial_keys} append(s) made under an Idempotency-Key were cut "
                               "short in this log: their keys name the messages it holds")
    report.messages = new.next_id
    return report


def _batches(db: sqlite3.Connection, query: str, parameters: tuple = ()):
    cursor = db.execute(query, parameters)
    while rows := cursor.fetchmany(BATCH_ROWS):
        yield from rows


def _convert_fixed(old: sqlite3.Connection, meta: dict, new: _NewStore) -> tuple[_Report, list | None]:
    report = _Report()
    history = meta.get("history")
    total = old.execute("SELECT count(*) FROM entries").fetchone()[0]
    if history is None:
        if total:
            report.warnings.append(f"{total} message(s) held without a history id (a primary that was "
                                   "recovering its log) are not carried over: the primary recovers them "
                                   "from its secondaries again")
        return report, None
    if not isinstance(history, str) or not 0 < len(history) <= _MAX_CLUSTER:
        raise _NotWritten(f"its history id {history!r} is not one this program wrote")
    segments = _segments(meta.get("segments"))
    bases = [base for _, base in segments]
    keyed = _batches(old, "SELECT seq, key, count FROM keyed ORDER BY seq")
    next_keyed = next(keyed, None)
    append: _KeyedAppend | None = None
    for seq, body in _batches(old, "SELECT seq, body FROM entries ORDER BY seq"):
        if seq != new.length:
            break  # past a gap: what a secondary held, never shown
        literal = _literal(body, seq)
        while next_keyed is not None and next_keyed[0] < seq:
            next_keyed = next(keyed, None)  # a key with no message of its own: nothing to keep
        term = segments[bisect.bisect_right(bases, seq) - 1][0]
        if next_keyed is not None and next_keyed[0] == seq:
            new.keyed(append)
            _, key, count = next_keyed
            append = _KeyedAppend(_key(key, seq), seq, _count(count, seq), term)
            next_keyed = next(keyed, None)
        index = new.add(Entry(term, literal, 1))
        if append is not None:
            append.add(index, literal)
            if append.whole:
                new.keyed(append)
                append = None
    new.keyed(append)
    if total > new.length:
        report.warnings.append(f"{total - new.length} message(s) held past a gap at id {new.length} are "
                               "not carried over (never shown; the primary sends them again)")
    return report, [segments[-1][0], None, True, 0, history]


def _convert_failover(old: sqlite3.Connection, meta: dict, new: _NewStore) -> tuple[_Report, list | None]:
    runs = _term_runs(meta.get("terms", []))
    firsts = [first for _, first in runs]
    append: _KeyedAppend | None = None
    for index, body in _batches(old, "SELECT seq, body FROM entries ORDER BY seq"):
        if index != new.length:
            raise _NotWritten(f"the log has a gap at index {new.length}")
        position = bisect.bisect_right(firsts, index) - 1
        if position < 0:
            raise _NotWritten(f"no term is recorded for index {index}")
        term = runs[position][0]
        body = _bytes(body)
        if not body:
            new.keyed(append)
            append = None
            new.add(Entry(term))  # a no-op
            continue
        key = None
        if body.startswith(b"@"):  # the first message of an append made under a key
            new.keyed(append)
            try:
                raw_key, raw_count, body = body[1:].split(b" ", 2)
                key, count = raw_key.decode("ascii"), int(raw_count)
            except ValueError:
                raise _NotWritten(f"entry {index} is not one this program wrote") from None
            append = _KeyedAppend(_key(key, index), new.next_id, _count(count, index), term)
        elif append is not None and append.term != term:
            new.keyed(append)  # cut short: a later term's entry follows
            append = None
        literal = _literal(body, index)
        new.add(Entry(term, literal, 1, key))
        if append is not None:
            append.add(index, literal)
            if append.whole:
                new.keyed(append)
                append = None
    new.keyed(append)
    if "term" not in meta:
        return _Report(), None  # as a new store: it never took part (not caught up)
    term, voted_for, caught_up = meta["term"], meta.get("voted_for"), meta.get("caught_up", True)
    if type(term) is not int or term < 0 or not isinstance(caught_up, bool) or not (
            voted_for is None or isinstance(voted_for, str)):
        raise _NotWritten(f"its term and vote ({term!r}, {voted_for!r}, {caught_up!r}) are not what "
                         "this program wrote")
    if runs and runs[-1][0] > term:
        raise _NotWritten(f"it holds entries of term {runs[-1][0]}, past its term {term}")
    return _Report(), [term, voted_for, caught_up, 0, None]


def _segments(value) -> list[tuple[int, int]]:
    """(run number, base) of each segment; StoreError unless as the old code wrote them."""
    if not isinstance(value, list) or not value:
        raise _NotWritten(f"its segments {value!r} are not what this program wrote")
    segments = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3 and type(item[0]) is int and type(item[2]) is int
                and 0 < item[0] < 2**53 and 0 <= item[2]):
            raise _NotWritten(f"its segment {item!r} is not [run number, token, base]")
        segments.append((item[0], item[2]))
    bases, numbers = [s[1] for s in segments], [s[0] for s in segments]
    if bases[0] != 0 or bases != sorted(set(bases)) or numbers != sorted(set(numbers)):
        raise _NotWritten("its segments do not start at id 0 with bases and run numbers ascending")
    return segments


def _term_runs(value) -> list[tuple[int, int]]:
    """(term, first index) of each run; StoreError unless as the old code wrote them."""
    if not isinstance(value, list):
        raise _NotWritten(f"its terms {value!r} are not what this program wrote")
    runs = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(type(x) is int for x in item)
                and 0 < item[0] < 2**53 and item[1] >= 0):
            raise _NotWritten(f"its term run {item!r} is not [term, first index]")
        runs.append((item[0], item[1]))
    if [r[1] for r in runs] != sorted(set(r[1] for r in runs)) or [r[0] for r in runs] != sorted(
            set(r[0] for r in runs)):
        raise _NotWritten("its term runs are not ascending")
    return runs


def _bytes(body) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def _literal(body, position: int) -> bytes:
    literal = _bytes(body)
    if len(literal) < 2 or literal[:1] != b'"' or literal[-1:] != b'"':
        raise _NotWritten(f"entry {position} is not a message this program wrote")
    return literal


def _key(key, position: int) -> str:
    if not isinstance(key, str) or not key:
        raise _NotWritten(f"the Idempotency-Key at {position} is not one this program wrote")
    return key


def _count(count, position: int) -> int:
    if type(count) is not int or count < 1:
        raise _NotWritten(f"the message count of the append at {position} is not one this program wrote")
    return count


# -- files ----------------------------------------------------------------------------------


def _no_journal_beside(path: str) -> None:
    """No WAL of the old file may be left under the name the new store takes:
    SQLite would play it into the new one."""
    journal = path + "-wal"
    if os.path.exists(journal):
        if os.path.getsize(journal):
            raise StoreError(f"{journal} still holds writes of the old store: stop every node that uses "
                             "this DATA_DIR, then start again")
        os.remove(journal)
    if os.path.exists(path + "-shm"):
        os.remove(path + "-shm")  # an index of no journal: no one has the old file open


def _keep(path: str, kept: str) -> None:
    """Give the old file its second name: a hard link (no copy), else a copy."""
    try:
        os.link(path, kept)
        return
    except OSError:
        pass  # a file system without hard links
    copying = kept + UPGRADING_SUFFIX
    shutil.copyfile(path, copying)
    _fsync_file(copying)
    os.replace(copying, kept)


def _same_file(kept: str, path: str) -> bool:
    """Whether ``kept`` is the old store already (an attempt that crashed after keeping it)."""
    try:
        return os.path.samefile(kept, path) or filecmp.cmp(kept, path, shallow=False)
    except OSError:
        return False


def _remove(path: str) -> None:
    for name in (path, path + "-journal", path + "-wal", path + "-shm"):
        if os.path.lexists(name):
            os.remove(name)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # a platform that cannot open a directory
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
