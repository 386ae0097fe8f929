"""The ordered log with SQLite behind it: what a node with DATA_DIR keeps.

Reads are served from memory exactly as by ``OrderedLog``; the database
is the durable copy and the source at start-up, never read afterwards.

Writes become visible only once ``flush`` has committed them:

- the primary's request threads ``append``; the entry gets its seq at
  once, but no reader and no secondary sees it before it is committed, so
  nothing shown or replicated can vanish in a crash of the primary;
- a secondary's I/O thread ``put``s entries; they are staged, and
  ``flush`` commits and then places them, before the ACK goes out.

``flush`` commits everything written since the last one in one
transaction: group commit, one fsync for as many messages as arrived in
one pass of the I/O thread. When a commit fails (a full disk), nothing
is lost from memory and nothing becomes visible; the next ``flush``
tries again.

Thread: appends from any thread; put, truncate, set_meta and flush from
the I/O thread only (one writer of the database at a time).
"""

from __future__ import annotations

import logging
import time

from shared.log.ordered_log import OrderedLog
from shared.log.sqlite_store import Changes, SqliteStore

#: The name its lines carried before shared/ was grouped by concern: log
#: filters and alerts key on it, so it stays.
log = logging.getLogger("shared.durable_log")


def open_log(data_dir: str, role: str, fsync: bool) -> OrderedLog:
    """The node's log: in memory without a DATA_DIR, else loaded from it.
    Raises StoreError (an OSError) when the store is unusable. Main thread."""
    if not data_dir:
        return OrderedLog()
    started = time.monotonic()
    durable = DurableLog(SqliteStore(data_dir, role, fsync))
    log.info("loaded %d messages (%d more past a gap) from %s in %.2fs",
             len(durable), durable.ahead_count, durable.path, time.monotonic() - started)
    return durable


class DurableLog(OrderedLog):
    durable = True

    def __init__(self, store: SqliteStore) -> None:
        super().__init__()
        self._store = store
        self._written = 0  # prefix entries in the database
        self._staged: dict[int, bytes] = {}  # put, not yet committed
        self._staged_bytes = 0
        #: Keyed appends not yet committed: first seq -> (key, count).
        self._unsaved_keys: dict[int, tuple[str, int]] = {}
        self._staged_meta: dict = {}
        self._truncate_from: int | None = None
        self.meta = store.meta()
        self.load(store.entries())
        self._written = len(self._prefix)

    @property
    def path(self) -> str:
        return self._store.path

    def holds(self, seq: int) -> bool:
        with self._lock:
            return seq < len(self._prefix) or seq in self._ahead or seq in self._staged

    def keyed_appends(self) -> list[tuple[int, str, int]]:
        return self._store.keyed()

    def _keep_key(self, seq: int, key: str, count: int) -> None:
        self._unsaved_keys[seq] = (key, count)  # committed with its entries by flush

    @property
    def ahead_bytes(self) -> int:
        """Bytes held past a gap, counting every entry staged for the next
        commit as such: until then it is held in memory all the same."""
        return self._ahead_bytes + self._staged_bytes

    def put(self, seq: int, entry: bytes) -> bool:
        with self._lock:
            if seq < len(self._prefix) or seq in self._ahead or seq in self._staged:
                return False
            self._staged[seq] = entry
            self._staged_bytes += len(entry)
            return True

    def truncate(self, from_seq: int) -> list[int]:
        with self._lock:
            removed = self._cut(from_seq)
            removed += sorted(seq for seq in self._staged if seq >= from_seq)
            self._staged = {seq: e for seq, e in self._staged.items() if seq < from_seq}
            self._staged_bytes = sum(map(len, self._staged.values()))
            self._unsaved_keys = {seq: k for seq, k in self._unsaved_keys.items() if seq < from_seq}
            self._written = min(self._written, from_seq)
            if self._truncate_from is None or from_seq < self._truncate_from:
                self._truncate_from = from_seq
            return removed

    def set_meta(self, **values) -> None:
        with self._lock:
            self.meta = {**self.meta, **values}
            self._staged_meta.update(values)

    def flush(self) -> None:
        """Commit what was written since the last flush, then show it.
        Raises StoreError if the commit failed; then nothing changed."""
        with self._lock:
            upto = len(self._prefix)
            appended = list(enumerate(self._prefix[self._written : upto], start=self._written))
            keyed = [(seq, *self._unsaved_keys[seq]) for seq in sorted(self._unsaved_keys) if seq < upto]
            staged = sorted(self._staged.items())
            changes = Changes(appended + staged, self._truncate_from, dict(self._staged_meta), keyed)
        if not changes.entries and changes.truncate_from is None and not changes.meta:
            return
        self._store.commit(changes)  # outside the lock: reads and appends go on
        with self._lock:
            appended_meanwhile = len(self._prefix) - upto
            for seq, _, _ in keyed:
                del self._unsaved_keys[seq]
            for seq, entry in staged:
                del self._staged[seq]
                self._staged_bytes -= len(entry)
                self._place(seq, entry)
            self._written = len(self._prefix) - appended_meanwhile
            self._grew.notify_all()
            if self._truncate_from == changes.truncate_from:
                self._truncate_from = None
            for key in changes.meta:
                if self._staged_meta.get(key) == changes.meta[key]:
                    del self._staged_meta[key]

    def close(self) -> None:
        self._store.close()

    def _visible(self) -> int:
        return self._written
