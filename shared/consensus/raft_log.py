"""A Raft node's log, and the values it persists (shared.consensus.raft's storage half).

Indexes are 0-based positions: entry i is the i-th of the log, and a
*length* counts entries, so "the first n entries" and "entries 0..n-1" say
the same. The **commit length** is how many leading entries the node knows
to be committed; it is not persisted (a restarted node learns it again).

The log remembers what changed since the shell last persisted it
(``take_unsaved``), so RaftNode can hand the shell a truncation point and
the entries to append instead of the whole log. It refuses to drop a
committed entry: that raises SafetyViolation, and the shell stops the
process rather than lose a write that was acknowledged.

Thread: the owner's I/O thread only; values are immutable.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterable


class SafetyViolation(Exception):
    """A rule that Raft's safety rests on would break: the node must stop."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: the term of the primary that appended it, and what it holds
    (``None`` is the no-op a new primary appends at the start of its term)."""

    term: int
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int
    voted_for: str | None
    caught_up: bool = True  # see PersistedState


@dataclass(frozen=True, slots=True)
class PersistedState:
    """Everything a node restarts from.

    ``caught_up`` is False for a node that starts from an empty data
    directory, where it cannot tell a new cluster from a running one whose
    terms it has forgotten (a lost DATA_DIR): it may have voted in them. Until
    a primary has caught it up, it votes only for a candidate whose log is
    empty (a new cluster's first election) and stands only while its own log
    is empty; then it counts as having voted for that primary in its term.
    """

    term: int = 0
    voted_for: str | None = None
    entries: tuple[Entry, ...] = ()
    caught_up: bool = True


def digest_after(digest: int, entry: Entry) -> int:
    """The checksum of a log once ``entry`` follows a prefix whose checksum is
    ``digest``: a CRC-32 chain over every entry's term and payload. Two logs
    with the same checksum at a length hold the same entries up to it, but
    for a collision (about one in 2**32 for a corrupted or forged entry)."""
    return zlib.crc32(entry.payload or b"", zlib.crc32(b"%d:" % entry.term, digest))


def log_digest(entries: Iterable[Entry]) -> int:
    """The checksum of a log holding ``entries`` (0 for none)."""
    digest = 0
    for entry in entries:
        digest = digest_after(digest, entry)
    return digest


class RaftLog:
    """The entries, their checksums, the commit length, and what the shell has
    not yet persisted."""

    def __init__(self, entries: tuple[Entry, ...] = ()) -> None:
        self._entries: list[Entry] = []
        self._digests: list[int] = []  # _digests[i]: the checksum of entries 0..i
        self.append(tuple(entries))
        self._commit_length = 0
        # The shell holds the first _saved_length entries as they were; entries
        # from _changed_from on are new to it (its copy may differ from there).
        self._saved_length = len(self._entries)
        self._changed_from = len(self._entries)
        self._view: tuple[Entry, ...] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[Entry, ...]:
        if self._view is None:
            self._view = tuple(self._entries)
        return self._view

    @property
    def commit_length(self) -> int:
        return self._commit_length

    @property
    def last_term(self) -> int:
        return self.term_at(len(self._entries))

    def term_at(self, length: int) -> int:
        """The term of the last of the first ``length`` entries (0 for none)."""
        return self._entries[length - 1].term if length else 0

    def digest_at(self, length: int) -> int:
        """The checksum of the first ``length`` entries (see ``digest_after``)."""
        return self._digests[length - 1] if length else 0

    def slice(self, start: int, stop: int) -> tuple[Entry, ...]:
        return tuple(self._entries[start:stop])

    def batch(self, start: int, max_entries: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from ``start`` on, at most ``max_entries`` and, past the first,
        ``max_bytes`` of payloads."""
        batch, size = [], 0
        for entry in self._entries[start:start + max_entries]:
            size += len(entry.payload or b"")
            if batch and size > max_bytes:
                break
            batch.append(entry)
        return tuple(batch)

    def holds(self, length: int, last_term: int, digest: int) -> bool:
        """Whether this log's first ``length`` entries are the sender's: as many,
        the last of term ``last_term`` (§5.3's check), and the same checksum,
        which also catches an entry of the right term with other content (a
        forged frame, a corrupted disk) that the term alone cannot."""
        return (length <= len(self._entries) and self.term_at(length) == last_term
                and self.digest_at(length) == digest)

    def retry_hint(self, length: int, last_term: int) -> int:
        """Where a primary whose first ``length`` entries, the last of term
        ``last_term``, do not match this log should try next: this log's length
        if it is shorter; the first index of the conflicting entry's term, so
        that one round trip skips a whole term of entries the primary never
        wrote (thesis §3.5); and where only the checksums differ, the commit
        length, the prefix both logs must share."""
        if length > len(self._entries):
            return len(self._entries)
        if self.term_at(length) == last_term:
            return self._commit_length
        conflicting_term = self.term_at(length)
        index = length - 1
        while index > 0 and self._entries[index - 1].term == conflicting_term:
            index -= 1
        return index

    def append(self, entries: tuple[Entry, ...]) -> None:
        digest = self.digest_at(len(self._entries))
        for entry in entries:
            digest = digest_after(digest, entry)
            self._digests.append(digest)
        self._entries.extend(entries)
        self._view = None

    def merge(self, start: int, entries: tuple[Entry, ...]) -> int:
        """Writes ``entries`` from index ``start`` on, where this log already holds
        the first ``start`` entries of the sender's. Entries that match are kept
        (a late or repeated AppendEntries must not undo newer ones); from the
        first conflict on (another term, or the same term and other content),
        this log's entries are dropped (§5.3). Returns the length now known to
        match the sender's log."""
        for offset, entry in enumerate(entries):
            index = start + offset
            if index == len(self._entries):
                self.append(entries[offset:])
                break
            if self._entries[index] != entry:
                self._truncate(index)
                self.append(entries[offset:])
                break
        return start + len(entries)

    def commit_to(self, length: int) -> None:
        """Raises the commit length to ``length``; it never goes back."""
        if length > len(self._entries):
            raise SafetyViolation(f"commit length {length} past the log's {len(self._entries)}")
        self._commit_length = max(self._commit_length, length)

    def take_unsaved(self) -> tuple[int | None, tuple[Entry, ...]]:
        """What the shell must do to its copy of the log, and forget it: the index
        to truncate from (None for none), then the entries to append."""
        if self._changed_from == self._saved_length == len(self._entries):
            return None, ()  # the common case: a tick that changed nothing
        truncate_from = self._changed_from if self._changed_from < self._saved_length else None
        unsaved = self.slice(self._changed_from, len(self._entries))
        self._saved_length = self._changed_from = len(self._entries)
        return truncate_from, unsaved

    def _truncate(self, index: int) -> None:
        if index < self._commit_length:
            raise SafetyViolation(
                f"asked to drop entries from {index}, below the commit length {self._commit_length}")
        del self._entries[index:]
        del self._digests[index:]
        self._changed_from = min(self._changed_from, index)
        self._view = None
