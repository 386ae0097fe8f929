"""A node's log: what the Raft core reads and writes, and what readers see.

One object serves three kinds of callers:

- the core (through the shell's I/O thread) reads it as its LogStorage
  (shared.consensus.raft_log): terms, checksums and entries by index;
- the shell's I/O thread ``stage``s every Ready's changes the moment the
  core returns it (so the core reads back what it wrote), then ``persist``s
  what a pass staged in one commit (fsynced under FSYNC) before it sends
  anything that depends on it; it looks up Idempotency-Keys and the ids the
  messages get;
- readers (Waitress workers) read messages by id: pages, the whole
  retained log, tails that wait; they see only what is durable, or only
  what is committed too.

**What lives where.** With DATA_DIR the entries are on disk
(shared.log.sqlite_log) and memory holds a window of the last ones
(shared.log.window: what is not yet written, and what catch-up and tails
ask for), the term runs, and the Idempotency-Keys in force: nothing that
grows with the log. A restart reads just those. Without DATA_DIR the
window keeps every entry: the log lives in memory, and retention is what
bounds it.

**Ids.** Every message has an id: its place among all messages ever
appended (0, 1, 2, ...). An entry holds a whole append (``count``
messages, or none for a new term's no-op), and knows the id of its first
message, so a message's id never changes, and ids go on past what
retention dropped. A read below the retained start is told so (``Gone``).

Thread: ``stage``, ``persist``, the LogStorage methods, ``lookup``,
``retention_start`` and ``close`` on the I/O thread only (``open_log`` on
the main thread before it starts); the reads from any thread.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import uuid
from collections import OrderedDict
from itertools import repeat
from operator import itemgetter
from typing import Iterator

from shared.consensus.raft import Ready
from shared.consensus.raft_log import (
    Compacted, Entry, HardState, KeyRecord, LogStart, Snapshot, Unsaved, body_digest, cut_to_size, make_entry,
)
from shared.log.documents import Page, page_document, whole_document
from shared.log.sqlite_log import Changes, Loaded, SqliteLog, StoreError, search, too_many_keyed
from shared.log.upgrade import upgrade_store
from shared.log.window import Window

log = logging.getLogger(__name__)

#: A store row's (term, body, count, key): an Entry's fields (sqlite_log's row order).
_ENTRY_FIELDS = itemgetter(1, 8, 3, 7)

#: The window's size with DATA_DIR: entries, and bytes of messages.
WINDOW_ENTRIES = 50_000
WINDOW_BYTES = 32 << 20
#: A read from disk of at most this many messages is read whole before it is
#: sent (its size known); a larger one is streamed as it is read.
PAGE_READ_AT_ONCE = 10_000
#: Entries read from disk per query while streaming.
DISK_READ_BATCH = 1_000


class Gone(LookupError):
    """The messages asked for are before the retained start: ``first_id`` is the first kept."""

    def __init__(self, first_id: int) -> None:
        super().__init__(f"messages before id {first_id} were dropped by retention")
        self.first_id = first_id


class NodeLog:
    def __init__(self, store: SqliteLog | None, key_capacity: int, keep_incarnation: bool = False) -> None:
        """``store``: the database with DATA_DIR, or None for a log in memory.
        ``keep_incarnation``: the log survives the process whole (FSYNC=always),
        so it keeps the name of its state. Use ``open_log``."""
        self._store = store
        self._key_capacity = key_capacity
        self._lock = threading.Lock()
        #: Notified, under the lock, when what readers see grows, or readers are released.
        self._changed = threading.Condition(self._lock)
        self._readers_released = False
        loaded = store.load(WINDOW_ENTRIES, WINDOW_BYTES) if store else _empty()
        self.hard_state = loaded.hard_state
        self.fresh = loaded.fresh
        self._start = loaded.start
        self._runs = loaded.runs
        first = loaded.tail[0] if loaded.tail else None
        self._window = Window(*(first[0], first[2], first[4]) if first else
                              (loaded.start.index, loaded.start.first_id, loaded.start.offset))
        self._window.extend(_entries_of(loaded.tail),
                            [row[5] for row in loaded.tail], [row[6] for row in loaded.tail])
        if self._window.hi != loaded.length:
            raise StoreError(f"the log's tail does not reach its end ({self._window.hi} of {loaded.length})")
        self._keys: OrderedDict[str, KeyRecord] = OrderedDict()
        for record in loaded.keys:
            self._remember(record)
        #: Without DATA_DIR, what the store's ``keyed`` table holds: the newest
        #: keyed appends, from which a truncation finds the keys in force again.
        self._keyed: list[KeyRecord] = []
        # What readers may see: the entries written, and those known committed
        # (never lowered), each with the id after its last message, worked out
        # on the I/O thread so that readers never touch its connection.
        self._durable = loaded.length
        self._durable_id = self._window.next_id
        self._committed = loaded.start.index
        self._committed_id = loaded.start.first_id
        self._pending = Changes()
        #: Names this node's state: kept with it only where everything it
        #: acknowledged is sure to have survived; new otherwise.
        self.incarnation = loaded.incarnation if keep_incarnation and loaded.incarnation else uuid.uuid4().hex
        if self.incarnation != loaded.incarnation:
            self._pending.incarnation = self.incarnation

    @property
    def durable(self) -> bool:
        """Whether what it persists survives the process."""
        return self._store is not None

    @property
    def durable_length(self) -> int:
        """Entries written: readers see these."""
        return self._durable

    @property
    def path(self) -> str | None:
        return self._store.path if self._store else None

    # -- the core's LogStorage (I/O thread) ----------------------------------------------

    def start(self) -> LogStart:
        return self._start

    def length(self) -> int:
        return self._window.hi

    def term_at(self, length: int) -> int:
        self._check(length)
        if length == self._start.index:
            return self._start.term
        position = bisect.bisect_right(self._runs, (length - 1, float("inf"))) - 1
        return self._runs[position][1]

    def digest_at(self, length: int) -> int:
        self._check(length)
        if length == self._start.index:
            return self._start.digest
        if self._window.holds(length - 1):
            return self._window.digest(length - 1)
        return self._store.value("digest", length - 1)

    def run_start(self, index: int) -> int:
        self._check(index)
        position = bisect.bisect_right(self._runs, (index, float("inf"))) - 1
        return max(self._runs[position][0], self._start.index)

    def entries(self, start: int, stop: int, max_bytes: int) -> list[Entry]:
        self._check(start)
        stop = min(stop, self._window.hi)
        window = self._window
        if start >= window.lo:
            return cut_to_size(window.entries(start, stop), max_bytes)
        found = _entries_of(self._store.rows(start, min(stop, window.lo), max_bytes))
        if start + len(found) == window.lo and stop > window.lo:
            found += window.entries(window.lo, min(stop, window.lo + 64))
        return cut_to_size(found, max_bytes)

    def snapshot(self) -> Snapshot:
        start = self._start
        return Snapshot(start, tuple(k for k in self._keys.values() if k.index < start.index))

    # -- the I/O thread: writing ----------------------------------------------------------

    def stage(self, ready: Ready) -> None:
        """Take a Ready's changes: readable at once by the core, written by ``persist``."""
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
            self._pending.hard_state = ready.hard_state
        if ready.log:
            with self._lock:
                self._stage_log(ready.log)

    def persist(self) -> None:
        """Write what was staged, in one commit, then show it to readers.
        Raises StoreError if the write failed (then nothing is written)."""
        pending = self._pending
        if self._store is not None and (pending or self._store.dropping):
            self._store.commit(pending)
        self._pending = Changes()
        with self._lock:
            if self._durable != self._window.hi or pending.truncate_from is not None:
                self._durable, self._durable_id = self._window.hi, self._window.next_id
                self._changed.notify_all()
            if self._store is not None:
                self._trim_window()

    def set_committed(self, length: int) -> None:
        """The first ``length`` entries are committed (never lowered); wakes tails."""
        if length <= self._committed:
            return
        committed_id = self._value("first_id", length)
        with self._lock:
            self._committed, self._committed_id = length, committed_id
            self._changed.notify_all()

    def lookup(self, key: str) -> KeyRecord | None:
        """The append ``key`` made, if it is among the keys in force."""
        return self._keys.get(key)

    @property
    def next_id(self) -> int:
        """The id the next message appended gets (staged entries included)."""
        return self._window.next_id

    def first_id_at(self, index: int) -> int:
        """The id of entry ``index``'s first message (the next id, at the log's end)."""
        with self._lock:
            return self._value("first_id", index) if index < self._window.hi else self._window.next_id

    def retention_start(self, commit_length: int, now: float, messages: int, size: int,
                        seconds: float) -> int | None:
        """Where retention moves the start, if a bound (0: none) is passed by more
        than a tenth: the first committed entry that keeps what the bounds ask."""
        start = self._start
        end_id, end_offset = self.first_id_at(commit_length), self._value("offset", commit_length)
        targets = []
        if messages and end_id - start.first_id > messages * 1.1:
            targets.append(self._search("first_id", end_id - messages, commit_length))
        if size and end_offset - start.offset > size * 1.1:
            targets.append(self._search("offset", end_offset - size, commit_length))
        if seconds and commit_length > start.index and now - self._value("at", start.index) > seconds * 1.1:
            targets.append(self._search("at", now - seconds, commit_length) + 1)
        target = min(max(targets, default=0), commit_length)
        return target if target > start.index else None

    def close(self) -> None:
        self.release_readers()
        if self._store is not None:
            self._store.close()

    # -- reading (any thread) ----------------------------------------------------------------

    def shown(self, committed: bool = False) -> int:
        """The id after the last message a reader sees: of those written, or only
        of the committed ones. (Messages before ``first_id()`` were dropped.)"""
        with self._lock:
            return self._shown_id(committed)

    def first_id(self) -> int:
        """The id of the first message kept: retention dropped those before."""
        return self._start.first_id

    def page_document(self, first: int, limit: int | None, committed: bool = False
                      ) -> tuple[int | None, Iterator[bytes]]:
        """Messages from id ``first`` on, at most ``limit`` (all when None), as
        ``{"messages": [...], "from": first, "next": ..., "length": ...}``, and
        its size when known. Raises Gone below the start. A page costs the same
        at any offset: it is found by index, never by a scan."""
        return page_document(self._page(first, limit, committed))

    def messages_document(self, committed: bool = False) -> tuple[int | None, Iterator[bytes]]:
        """Every retained message a reader sees, as ``{"messages": [...], "first_id": F}``."""
        return whole_document(self._page(None, None, committed))

    def wait_for(self, first: int, timeout: float, committed: bool = False) -> None:
        """Block until a message with id ``first`` is shown, ``timeout`` passes,
        or readers are released (shutdown). Raises Gone if the start passes it meanwhile."""
        with self._lock:
            self._changed.wait_for(lambda: self._shown_id(committed) > first or self._readers_released
                                   or first < self._start.first_id, timeout)
            if first < self._start.first_id:
                raise Gone(self._start.first_id)

    def release_readers(self) -> None:
        """Answer every waiting reader now, and any later one at once (shutdown)."""
        with self._lock:
            self._readers_released = True
            self._changed.notify_all()

    # -- its own: staging (I/O thread, under the lock) -------------------------------------------

    def _stage_log(self, changes: Unsaved) -> None:
        if changes.install is not None:
            self._install(changes.install)  # a new Changes: the old staged nothing that survives it
        if changes.truncate_from is not None:
            self._truncate(changes.truncate_from)
        pending, window = self._pending, self._window
        entries = changes.entries
        if entries:
            start = window.hi
            window.extend(entries, changes.digests, repeat(time.time(), len(entries)))
            self._stage_runs(start, entries)
            if self._store is not None:
                pending.rows.extend(window.rows(start, window.hi))
            for offset in [offset for offset, entry in enumerate(entries) if entry.key is not None]:
                entry, index = entries[offset], start + offset
                record = KeyRecord(entry.key, index, window.first_id(index), entry.count,
                                   body_digest(entry.body))
                self._remember(record)
                pending.keyed.append(record)
                if self._store is None:
                    self._keep_keyed(record)
        if changes.compact is not None:
            self._compact(changes.compact)

    def _stage_runs(self, start: int, entries: list[Entry]) -> None:
        """Note where a term's run begins among ``entries``, staged from ``start``.
        Terms never fall along a log: if the last is the current run's, so are all."""
        if self._runs and self._runs[-1][1] == entries[-1].term:
            return
        for offset, entry in enumerate(entries):
            if not self._runs or self._runs[-1][1] != entry.term:
                self._runs.append((start + offset, entry.term))
                self._pending.runs.append((start + offset, entry.term))

    def _install(self, snapshot: Snapshot) -> None:
        start = snapshot.start
        self._start = start
        self._runs = [(start.index, start.term)] if start.index else []
        self._window.reset(start.index, start.first_id, start.offset)
        self._keys = OrderedDict()
        for record in snapshot.keys:
            self._remember(record)
        self._keyed = [] if self._store is not None else list(snapshot.keys)
        # Nothing staged before the install survives it but the hard state and
        # the incarnation; the start's term begins a run (entries of that term
        # that follow add none, and a restart must still know it).
        self._pending = Changes(install=start, install_keys=list(snapshot.keys), start=start,
                                runs=list(self._runs), hard_state=self._pending.hard_state,
                                incarnation=self._pending.incarnation)
        self._durable, self._durable_id = start.index, start.first_id
        self._committed, self._committed_id = start.index, start.first_id
        self._changed.notify_all()

    def _truncate(self, index: int) -> None:
        pending, window = self._pending, self._window
        next_id = window.next_id
        if index < window.lo:
            # An uncommitted tail longer than the window (a primary cut off under a
            # flood of w=1 appends): the window starts again, empty, at the cut; the
            # entries before it are on disk (the window lets go of written ones only).
            window.reset(index, self._value("first_id", index), self._value("offset", index))
        removed = (window.first_id(index), next_id)
        window.truncate(index)
        if removed[1] > removed[0]:
            count = removed[1] - removed[0]
            ids = f"{removed[0]}..{removed[1] - 1}" if count > 1 else str(removed[0])
            log.warning("truncated %d message(s), ids %s: the primary of term %d does not hold them "
                        "(they were never committed)", count, ids, self.hard_state.term)
        while self._runs and self._runs[-1][0] >= index:
            self._runs.pop()
        pending.truncate_from = index if pending.truncate_from is None else min(pending.truncate_from, index)
        pending.rows = [row for row in pending.rows if row[0] < index]
        pending.runs = [run for run in pending.runs if run[0] < index]
        pending.keyed = [record for record in pending.keyed if record.index < index]
        if self._store is not None and self._runs and self._runs[-1][0] < self._start.index:
            # The log now ends in a run that began before its start: retention may
            # have dropped that run's row on disk (it keeps the row of the run the
            # start is in), and this truncation the row of the run after it. Noted
            # again at the start, so that a reopen finds the terms there.
            pending.runs.append((self._start.index, self._runs[-1][1]))
        if self._durable > index:
            self._durable, self._durable_id = index, self._window.next_id
        if self._committed > index:  # a fixed secondary whose primary lost its log: see the core
            self._committed, self._committed_id = index, self._window.next_id
        self._rebuild_keys(index)

    def _compact(self, length: int) -> None:
        """Retention: entries before ``length`` go; their keys stay in force."""
        first_id, offset = self._value("first_id", length), self._value("offset", length)
        self._start = LogStart(length, self.term_at(length), self.digest_at(length), first_id, offset)
        self._pending.start = self._start
        if self._store is None or length > self._window.lo:
            self._window.drop_before(length)
        self._changed.notify_all()  # tails below the start are answered 410

    def _rebuild_keys(self, below: int) -> None:
        """After a truncation at ``below``: the keys in force are the newest of the
        appends still in the log (and of those retention dropped)."""
        pending = self._pending
        if self._store is not None:
            # What the store will hold once the pass is written, not what it holds
            # now: an install staged in this pass replaces its keys, and the lowest
            # truncation staged in it (this one, or an earlier one) removes some.
            if pending.install is not None:
                stored = [record for record in pending.install_keys if record.index < below]
            else:
                stored = self._store.keys_before(pending.truncate_from)
            records = stored + pending.keyed
        else:
            self._keyed = [record for record in self._keyed if record.index < below]
            records = self._keyed[-self._key_capacity:]
        self._keys = OrderedDict()
        for record in records:
            self._remember(record)

    def _keep_keyed(self, record: KeyRecord) -> None:
        """In memory, as the store's table does: the newest keyed appends."""
        self._keyed.append(record)
        if too_many_keyed(len(self._keyed), self._key_capacity):
            del self._keyed[:-self._key_capacity]

    def _remember(self, record: KeyRecord) -> None:
        self._keys.pop(record.key, None)
        self._keys[record.key] = record
        while len(self._keys) > self._key_capacity:
            self._keys.popitem(last=False)

    def _trim_window(self) -> None:
        """With DATA_DIR, let go of old written entries past the window's size."""
        window = self._window
        if len(window) <= WINDOW_ENTRIES and window.bytes <= WINDOW_BYTES:
            return
        keep_from = max(window.hi - WINDOW_ENTRIES * 3 // 4, window.lo)
        while window.bytes > WINDOW_BYTES * 3 // 4 and keep_from < self._durable - 1:
            keep_from += max(1, (self._durable - keep_from) // 4)
            if sum(len(window.body(i)) for i in range(keep_from, window.hi)) <= WINDOW_BYTES * 3 // 4:
                break
        window.drop_before(min(keep_from, self._durable))

    # -- its own: reading ----------------------------------------------------------------------

    def _check(self, length: int) -> None:
        if length < self._start.index:
            raise Compacted(f"entries before {self._start.index} were dropped (asked for {length})")

    def _value(self, column: str, index: int):
        """``first_id``, ``offset`` or ``at`` of entry ``index`` (the next ones at the
        end; the start's at or before the start, whose entries are gone)."""
        start = self._start
        if index <= start.index and column != "at":
            return start.first_id if column == "first_id" else start.offset
        window = self._window
        if index >= window.lo:
            if column == "first_id":
                return window.first_id(index)
            if column == "offset":
                return window.offset(index)
            return window.stored_at(index)
        return self._store.value(column, index)

    def _search(self, column: str, value: float, hi: int) -> int:
        """The last entry in [start, hi) whose ``column`` is at most ``value``."""
        return search(lambda index: self._value(column, index), self._start.index, hi, value)

    def _shown_index(self, committed: bool) -> int:
        return min(self._durable, self._committed) if committed else self._durable

    def _shown_id(self, committed: bool) -> int:
        if committed and self._committed < self._durable:
            return self._committed_id
        return self._durable_id

    def _page(self, first: int | None, limit: int | None, committed: bool) -> Page:
        """The entries that hold messages [first, first + limit) of what readers see."""
        with self._lock:
            start, window = self._start, self._window
            end_index, end_id = self._shown_index(committed), self._shown_id(committed)
            from_id = start.first_id if first is None else first
            if from_id < start.first_id:
                raise Gone(start.first_id)
            stop_id = end_id if limit is None else min(end_id, from_id + limit)
            if from_id >= stop_id:
                return Page(from_id, from_id, end_id, start.first_id, [])
            if self._store is None or from_id >= window.first_id(window.lo):
                begin, stop = window.index_of_id(from_id), window.index_of_id(stop_id - 1) + 1
                return Page(from_id, stop_id, end_id, start.first_id, window.parts(begin, stop))
        small = stop_id - from_id <= PAGE_READ_AT_ONCE
        parts = self._parts_on_disk(start.index, end_index, from_id, stop_id)
        return Page(from_id, stop_id, end_id, start.first_id, list(parts) if small else parts,
                    size_known=small)

    def _parts_on_disk(self, lo: int, end_index: int, from_id: int, stop_id: int
                       ) -> Iterator[tuple[int, int, bytes]]:
        """The entries from the one holding ``from_id`` up to ``stop_id``, read in one
        read transaction (one committed state), a few at a time. Retention may
        have moved the start since the caller looked: Gone if it passed ``from_id``
        (a page read at once is then a 410; a streamed one is cut short)."""
        with self._store.reader() as reader:
            kept = reader.start()
            if from_id < kept.first_id:
                raise Gone(kept.first_id)
            index = search(lambda i: reader.value("first_id", i), max(lo, kept.index), end_index, from_id)
            reached = from_id
            while index < end_index:
                # Every entry but a no-op holds a message: a small page reads few rows.
                wanted = min(DISK_READ_BATCH, stop_id - reached + 1)
                batch = list(reader.bodies(index, min(index + wanted, end_index)))
                if not batch:
                    return
                yield from batch
                reached = batch[-1][0] + batch[-1][1]
                if reached >= stop_id:
                    return
                index += len(batch)


def _empty() -> Loaded:
    return Loaded(HardState(caught_up=False), True, LogStart(), 0, [], [], [], 0)


def open_log(data_dir: str, role: str, fsync: bool, key_capacity: int) -> NodeLog:
    """The node's log: in memory without a DATA_DIR, else loaded from it.
    Raises StoreError (an OSError) when the store is unusable. Main thread."""
    if not data_dir:
        return NodeLog(None, key_capacity)
    upgrade_store(data_dir, role, key_capacity)  # a previous release's store becomes schema 2 first
    started = time.monotonic()
    node_log = NodeLog(SqliteLog(data_dir, role, fsync, key_capacity), key_capacity, keep_incarnation=fsync)
    log.info("loaded %d messages from %s in %.2fs",
             node_log.shown() - node_log.first_id(), node_log.path, time.monotonic() - started)
    return node_log


def _entries_of(rows: list[tuple]) -> list[Entry]:
    """The entries of store rows (each made in C: a restart loads thousands)."""
    return list(map(make_entry, map(_ENTRY_FIELDS, rows)))
