"""A Raft node's log as the core sees it, the storage behind it, and the values it persists.

Indexes are 0-based positions: entry i is the i-th of the log, and a
*length* counts entries, so "the first n entries" and "entries 0..n-1" say
the same. The **commit length** is how many leading entries the node knows
to be committed; it is not persisted (a restarted node learns it again).

**The log's start** (Raft §7, compaction). Entries below ``start.index``
are gone: retention dropped them, on every node alike. What they leave
behind is a ``LogStart``: the term and checksum of the last dropped entry
(so that log matching still works at the start), the number of messages
and bytes before it (so that message ids go on where they were), and the
Idempotency-Keys still in force. Everything before the start was committed.

**Storage.** The core keeps in memory only what it appended since the
shell last took a Ready (``RaftLog``'s unstable tail); everything else it
reads through the ``LogStorage`` protocol, which the shell implements (on
SQLite, or in memory) and keeps current by staging every Ready before the
core is called again. ``MemoryStorage`` is the reference implementation,
used by the simulation and the unit tests (etcd's raft package has the
same split: ``Storage``, ``MemoryStorage``, ``unstable``).

The log refuses to drop a committed entry: that raises SafetyViolation, and
the shell stops the process rather than lose a write that was acknowledged.

Thread: the owner's I/O thread only; values are immutable. A MemoryStorage
is the caller's to guard.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import zlib
from dataclasses import dataclass, field
from operator import add, attrgetter
from typing import Iterable, NamedTuple, Protocol, Sequence


class SafetyViolation(Exception):
    """A rule that Raft's safety rests on would break in this node's own state: it must stop."""


class Compacted(LookupError):
    """The entries asked for lie before the log's start: retention dropped them."""


#: What an entry costs beside its body and key (Entry.size, cut_to_size).
ENTRY_OVERHEAD = 16


class Entry(NamedTuple):
    """One log entry: the term of the primary that appended it, and the append
    it holds: ``count`` messages, their JSON string literals joined by commas
    (``body``), made under ``key`` (an Idempotency-Key) if any. The no-op a
    new primary appends holds nothing (count 0, empty body).

    A batch append is one entry, so it is replicated, committed and
    truncated whole: its messages land at consecutive ids on every node, or
    on none.

    A named tuple rather than a frozen dataclass: every append, page and
    recovered log makes one per entry, and a tuple is made in a quarter of
    the time (a frozen dataclass sets each field through object.__setattr__)."""

    term: int
    body: bytes = b""
    count: int = 0
    key: str | None = None

    @property
    def size(self) -> int:
        """Bytes it costs to send and store, roughly: what batches are cut by."""
        return len(self.body) + (len(self.key) if self.key else 0) + ENTRY_OVERHEAD


#: Makes an Entry of a (term, body, count, key) tuple, in C: a named tuple's own
#: constructor is a Python function, and pages, frames and recovered logs make
#: entries by the thousand (``list(map(make_entry, zip(...)))``).
make_entry = functools.partial(tuple.__new__, Entry)
#: An Entry's fields, each as a function: for ``map`` over a page, in C.
ENTRY_TERM = attrgetter("term")
ENTRY_BODY = attrgetter("body")
ENTRY_COUNT = attrgetter("count")
ENTRY_KEY = attrgetter("key")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An append made under an Idempotency-Key: the key, the Raft index of its
    entry, its first message id and message count, and a checksum of its
    messages, so that a retry can be told from a reuse of the key for other
    messages even after retention dropped the messages (thesis §6.3)."""

    key: str
    index: int
    first_id: int
    count: int
    digest: int


@dataclass(frozen=True, slots=True)
class LogStart:
    """What the entries before the log's start leave behind."""

    index: int = 0  # entries before it are gone
    term: int = 0  # the term of entry index - 1 (0 when index is 0)
    digest: int = 0  # the checksum of the first ``index`` entries
    first_id: int = 0  # messages before it: the id of its first message
    offset: int = 0  # bytes of messages before it


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A log's start and the Idempotency-Keys in force there: what a node
    whose log ends before another's start takes instead of the missing
    entries (Raft §7's InstallSnapshot; for a log, nothing else is state)."""

    start: LogStart = LogStart()
    keys: tuple[KeyRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent.

    ``caught_up`` is False for a node started from an empty data directory,
    until a primary has caught it up and it has heard from every other node
    (docs/architecture.md, "A node that lost its disk"); ``vote_floor`` is
    then the highest term it heard of: it votes only in later terms.
    ``cluster`` names the log a fixed-role cluster keeps (None in failover mode)."""

    term: int = 0
    voted_for: str | None = None
    caught_up: bool = True
    vote_floor: int = 0
    cluster: str | None = None


def digest_after(digest: int, entry: Entry) -> int:
    """The checksum of a log once ``entry`` follows a prefix whose checksum is
    ``digest``: a CRC-32 chain over every entry's term, key and messages.
    It catches accidents (a bit flip, a bug that wrote another entry), about
    all but one in 2**32; CRC-32 is linear, so a forger can build a collision
    at will: CURVE, not this, is what stops forgeries."""
    return zlib.crc32(entry.body, zlib.crc32(_digest_head(entry), digest))


def digests_after(digest: int, entries: Iterable[Entry]) -> list[int]:
    """The checksum after each of ``entries`` in turn, the first following a
    prefix whose checksum is ``digest``: ``digest_after`` along a run, each
    head written once for the entries that share it (a term's plain appends)."""
    heads: dict[tuple[int, int, str | None], bytes] = {}
    digests = []
    crc32 = zlib.crc32
    for entry in entries:
        shape = (entry.term, entry.count, entry.key)
        head = heads.get(shape)
        if head is None:
            head = heads[shape] = _digest_head(entry)
        digest = crc32(entry.body, crc32(head, digest))
        digests.append(digest)
    return digests


def _digest_head(entry: Entry) -> bytes:
    return b"%d:%d:%s:" % (entry.term, entry.count, (entry.key or "").encode())


def body_digest(body: bytes) -> int:
    """The checksum of an append's messages alone (KeyRecord.digest)."""
    return zlib.crc32(body)


class LogStorage(Protocol):
    """What the core reads of the log it handed to the shell.

    Lengths run from ``start().index`` to ``length()``; asking below the
    start raises Compacted. Every Ready the core returns must be staged
    before the core is called again, so that what it reads is what it wrote."""

    def start(self) -> LogStart: ...

    def length(self) -> int: ...

    def term_at(self, length: int) -> int:
        """The term of the last of the first ``length`` entries (the start's term at the start)."""

    def digest_at(self, length: int) -> int:
        """The checksum of the first ``length`` entries."""

    def run_start(self, index: int) -> int:
        """The first index of the run of entries of entry ``index``'s term (at least the start)."""

    def entries(self, start: int, stop: int, max_bytes: int) -> list[Entry]:
        """Entries [start, stop), cut short once past ``max_bytes`` (at least one)."""

    def snapshot(self) -> Snapshot:
        """The start and the Idempotency-Keys in force there."""


class MemoryStorage:
    """A LogStorage that keeps everything in lists, applying Readies as they
    come: the reference implementation (the simulation's disks, the unit
    tests), and what the product's in-memory log builds on. It keeps the
    last ``key_capacity`` Idempotency-Keys of the entries it dropped."""

    def __init__(self, snapshot: Snapshot = Snapshot(), entries: Iterable[Entry] = (),
                 key_capacity: int = 100_000) -> None:
        self._key_capacity = key_capacity
        self._start = snapshot.start
        self._keys = snapshot.keys
        self._entries: list[Entry] = []
        self._digests: list[int] = []
        self._runs: list[tuple[int, int]] = []  # (first index, term), ascending
        self.append(self._start.index, list(entries))

    # -- reading ---------------------------------------------------------------

    def start(self) -> LogStart:
        return self._start

    def length(self) -> int:
        return self._start.index + len(self._entries)

    def term_at(self, length: int) -> int:
        offset = self._offset(length)
        return self._entries[offset - 1].term if offset else self._start.term

    def digest_at(self, length: int) -> int:
        offset = self._offset(length)
        return self._digests[offset - 1] if offset else self._start.digest

    def run_start(self, index: int) -> int:
        self._offset(index)
        position = bisect.bisect_right(self._runs, (index, float("inf"))) - 1
        return max(self._runs[position][0], self._start.index) if position >= 0 else self._start.index

    def entries(self, start: int, stop: int, max_bytes: int) -> list[Entry]:
        first = self._offset(start)
        return cut_to_size(self._entries[first:self._offset(min(stop, self.length()))], max_bytes)

    def entry(self, index: int) -> Entry:
        return self._entries[self._offset(index)]

    def snapshot(self) -> Snapshot:
        return Snapshot(self._start, self._keys)

    @property
    def all_entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries)

    # -- writing (the shell, or whoever plays it) -------------------------------------

    def apply(self, unsaved: Unsaved) -> None:
        """Do what a Ready's log changes say, in their order."""
        if unsaved.install is not None:
            self.install(unsaved.install)
        if unsaved.truncate_from is not None:
            self.truncate(unsaved.truncate_from)
        if unsaved.entries:
            self.append(self.length(), unsaved.entries, unsaved.digests)
        if unsaved.compact is not None:
            self.compact(unsaved.compact)

    def truncate(self, index: int) -> None:
        offset = self._offset(index)
        del self._entries[offset:]
        del self._digests[offset:]
        while self._runs and self._runs[-1][0] >= index:
            self._runs.pop()

    def append(self, start: int, entries: Sequence[Entry], digests: Sequence[int] | None = None) -> None:
        """Add ``entries`` at ``start``, the log's length; ``digests``, if given,
        are their checksums (computed here otherwise)."""
        if start != self.length():
            raise ValueError(f"entries at {start} would leave a gap after {self.length()}")
        if digests is None:
            digests = digests_after(self.digest_at(start), entries)
        for offset, (entry, digest) in enumerate(zip(entries, digests)):
            self._digests.append(digest)
            if not self._runs or self._runs[-1][1] != entry.term:
                self._runs.append((start + offset, entry.term))
            self._entries.append(entry)

    def compact(self, length: int) -> None:
        """Drop the entries before ``length``; their keys join those in force."""
        drop = self._offset(length)
        dropped = self._entries[:drop]
        first_id, offset, keys = self._start.first_id, self._start.offset, list(self._keys)
        for index, entry in enumerate(dropped, start=self._start.index):
            if entry.key is not None:
                keys.append(KeyRecord(entry.key, index, first_id, entry.count, body_digest(entry.body)))
            first_id += entry.count
            offset += len(entry.body)
        self._start = LogStart(length, self.term_at(length), self.digest_at(length), first_id, offset)
        self._keys = tuple(keys[-self._key_capacity:]) if self._key_capacity else ()
        del self._entries[:drop]
        del self._digests[:drop]

    def install(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot``'s start (no entries after it)."""
        self._entries, self._digests, self._runs = [], [], []
        self._start, self._keys = snapshot.start, snapshot.keys

    def _offset(self, length: int) -> int:
        if length < self._start.index:
            raise Compacted(f"entries before {self._start.index} are compacted (asked for {length})")
        if length > self.length():
            raise IndexError(f"length {length} is past the log's {self.length()}")
        return length - self._start.index


def cut_to_size(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The leading entries of ``entries`` within ``max_bytes`` (always the first),
    each costing ``Entry.size``: summed in C loops unless an entry is keyed
    (a page is thousands of entries, and keyed appends are few)."""
    if any(map(ENTRY_KEY, entries)):
        sizes = list(itertools.accumulate(entry.size for entry in entries))
    else:  # each costs its body and ENTRY_OVERHEAD
        sizes = list(map(add, itertools.accumulate(map(len, map(ENTRY_BODY, entries))),
                         itertools.count(ENTRY_OVERHEAD, ENTRY_OVERHEAD)))
    kept = bisect.bisect_right(sizes, max_bytes)
    return entries if kept >= len(entries) else entries[:max(1, kept)]


@dataclass
class Unsaved:
    """What the core changed since the shell last took a Ready, in the order
    the shell applies it: an installed snapshot, a truncation, new entries
    (with their checksums), then a compaction."""

    install: Snapshot | None = None
    truncate_from: int | None = None
    entries: list[Entry] = field(default_factory=list)
    digests: list[int] = field(default_factory=list)
    compact: int | None = None  # the new start: the storage drops the entries before it

    def __bool__(self) -> bool:
        return bool(self.install or self.truncate_from is not None or self.entries or self.compact)


class RaftLog:
    """The core's view of the log: the storage, the entries appended since the
    last Ready (the unstable tail, read from here until the shell stages
    them), the commit length, and what the shell has yet to be told."""

    def __init__(self, storage: LogStorage) -> None:
        self._storage = storage
        self._stable_length = storage.length()  # the storage holds the entries below this
        self._unsaved = Unsaved()
        self._start = storage.start()
        #: False from a compaction until the storage has applied it: till then
        #: ``_start`` knows the new start's index, term and checksum only.
        self._start_settled = True
        self._commit_length = self._start.index  # everything before the start was committed

    def __len__(self) -> int:
        return self._stable_length + len(self._unsaved.entries)

    # -- reading ----------------------------------------------------------------

    @property
    def start(self) -> LogStart:
        """The log's start, whole: once the shell applied a compaction, the
        storage's (it alone counts the messages and bytes before it)."""
        if not self._start_settled:
            stored = self._storage.start()
            if stored.index == self._start.index:  # the Ready that compacted was applied
                self._start, self._start_settled = stored, True
        return self._start

    @property
    def commit_length(self) -> int:
        return self._commit_length

    @property
    def last_term(self) -> int:
        return self.term_at(len(self))

    def term_at(self, length: int) -> int:
        """The term of the last of the first ``length`` entries (the start's at the start)."""
        if length > self._stable_length:
            return self._unsaved.entries[length - self._stable_length - 1].term
        if length == self._start.index:
            return self._start.term
        return self._storage.term_at(length)

    def digest_at(self, length: int) -> int:
        """The checksum of the first ``length`` entries (see ``digest_after``)."""
        if length > self._stable_length:
            return self._unsaved.digests[length - self._stable_length - 1]
        if length == self._start.index:
            return self._start.digest
        return self._storage.digest_at(length)

    def batch(self, start: int, max_entries: int, max_bytes: int) -> list[Entry]:
        """Entries from ``start`` on, at most ``max_entries`` and about ``max_bytes``
        (at least one if there is one). Raises Compacted below the start."""
        stop = min(len(self), start + max_entries)
        if start >= stop:
            return []
        stable = self._stable_length
        if start >= stable:
            return cut_to_size(self._unsaved.entries[start - stable:stop - stable], max_bytes)
        batch = self._storage.entries(start, min(stop, stable), max_bytes)
        if stop > stable and start + len(batch) == stable:
            batch = batch + self._unsaved.entries[:stop - stable]
        return cut_to_size(batch, max_bytes)

    def holds(self, length: int, last_term: int, digest: int) -> bool:
        """Whether this log's first ``length`` entries are the sender's: as many,
        the last of term ``last_term`` (§5.3's check), and the same checksum,
        which also catches an entry of the right term with other content (a
        corrupted disk, a bug) that the term alone cannot."""
        return (self._start.index <= length <= len(self) and self.term_at(length) == last_term
                and self.digest_at(length) == digest)

    def retry_hint(self, length: int, last_term: int) -> int:
        """Where a primary whose first ``length`` entries, the last of term
        ``last_term``, do not match this log should try next: this log's length
        if it is shorter; the first index of the conflicting entry's term, so
        that one round trip skips a whole term of entries the primary never
        wrote (thesis §3.5); where only the checksums differ, the commit
        length, the prefix both logs must share."""
        if length > len(self):
            return len(self)
        if length <= self._start.index:
            return self._start.index
        if self.term_at(length) == last_term:
            return self._commit_length
        return self._run_start(length - 1)

    def snapshot(self) -> Snapshot:
        """The storage's start, with its message count and keys: what a secondary
        whose log ends before the start is sent."""
        return self._storage.snapshot()

    # -- writing ------------------------------------------------------------------

    def append(self, entries: Sequence[Entry], digests: Sequence[int] | None = None) -> None:
        """Add ``entries`` at the end; ``digests``, if given, are their checksums
        (computed here otherwise)."""
        unsaved = self._unsaved
        unsaved.digests.extend(digests_after(self.digest_at(len(self)), entries) if digests is None
                               else digests)
        unsaved.entries.extend(entries)

    def first_conflict(self, start: int, digests: Sequence[int]) -> int | None:
        """The index of the first entry from ``start`` on that this log holds
        otherwise than a log whose checksums there are ``digests``; None if every
        one it holds matches. By checksum: each covers its whole prefix, so one
        comparison per entry settles it, without reading the entry."""
        for offset in range(min(len(digests), len(self) - start)):
            index = start + offset
            if index >= self._start.index and self.digest_at(index + 1) != digests[offset]:
                return index
        return None

    def truncate(self, index: int) -> None:
        """Drop the entries from ``index`` on; never a committed one."""
        if index < self._commit_length:
            raise SafetyViolation(
                f"asked to drop entries from {index}, below the commit length {self._commit_length}")
        unsaved = self._unsaved
        if index >= self._stable_length:
            keep = index - self._stable_length
            del unsaved.entries[keep:]
            del unsaved.digests[keep:]
            return
        if unsaved.truncate_from is None or index < unsaved.truncate_from:
            unsaved.truncate_from = index
        unsaved.entries, unsaved.digests = [], []
        self._stable_length = index

    def commit_to(self, length: int) -> None:
        """Raises the commit length to ``length``; it never goes back."""
        if length > len(self):
            raise SafetyViolation(f"commit length {length} past the log's {len(self)}")
        self._commit_length = max(self._commit_length, length)

    def forget_commit(self) -> None:
        """Forget how much is committed, down to the start: a fixed secondary whose
        primary began a new run may have been told of commits by a run whose
        primary then lost its log (it kept it in memory); the new run decides
        again what is committed (docs/architecture.md, the fixed roles)."""
        self._commit_length = self._start.index

    def compact(self, length: int) -> None:
        """Move the start to ``length``, a committed length of this log. The
        storage works out the rest of the new LogStart (the message count and
        bytes before it, the keys in force), which it alone knows: until the
        shell has applied this change, ``start`` has the new index, term and
        checksum, and ``start`` reads the rest from the storage after that."""
        if not self._start.index < length <= self._commit_length:
            raise SafetyViolation(f"asked to move the start to {length}: it is at "
                                  f"{self._start.index}, and {self._commit_length} are committed")
        self._start = LogStart(length, self.term_at(length), self.digest_at(length))
        self._start_settled = False
        self._unsaved.compact = length

    def install(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot``, whose start lies past this log's
        commit length; what it drops was committed on the primary that sent it."""
        self._unsaved = Unsaved(install=snapshot)
        self._start, self._start_settled = snapshot.start, True
        self._stable_length = snapshot.start.index
        self._commit_length = max(self._commit_length, snapshot.start.index)

    def take_unsaved(self) -> Unsaved:
        """What the shell must apply to its storage before the next call, and forget it."""
        unsaved, self._unsaved = self._unsaved, Unsaved()
        self._stable_length += len(unsaved.entries)
        return unsaved

    def _run_start(self, index: int) -> int:
        """The first index of the run of entries of entry ``index``'s term."""
        term = self.term_at(index + 1)
        first = index
        while first - 1 >= self._stable_length and self.term_at(first) == term:
            first -= 1  # within the unstable tail: short, and new
        if self._start.index < first <= self._stable_length and self.term_at(first) == term:
            first = self._storage.run_start(first - 1)
        return first
