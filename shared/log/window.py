"""The entries a node keeps in memory: the log's tail, as columns.

A node's log lives on disk (shared.log.sqlite_log) with DATA_DIR; what the
hot paths need stays in memory here: the entries not yet written, and the
recent ones that secondaries catching up from near the end, the tails that
wait for the next message, and the pages near the end ask for. Without
DATA_DIR the window simply never lets go of an entry: it is the log.

Columns rather than an object per entry: an array of numbers costs 8 bytes
an entry where an object costs a hundred, and bytes objects are kept as
they came. Entry ``index`` (a Raft index) sits at ``index - lo``.

Thread: the owner (shared.log.node_log.NodeLog) holds its lock around every
call; the window has no lock of its own.
"""

from __future__ import annotations

import bisect
from array import array
from itertools import accumulate
from typing import Iterable, Sequence

from shared.consensus.raft_log import Entry, make_entry


class Window:
    def __init__(self, lo: int = 0, first_id: int = 0, offset: int = 0) -> None:
        self.lo = lo  # the index of its first entry
        self._next_id = first_id  # the message id after its last entry
        self._next_offset = offset  # the byte offset after its last entry
        self._terms = array("q")
        self._counts = array("q")
        self._first_ids = array("q")
        self._offsets = array("q")  # bytes of messages before each entry
        self._digests = array("Q")
        self._ats = array("d")  # when each was stored here (time.time()): retention by age
        self._bodies: list[bytes] = []
        self._keys: list[str | None] = []
        self.bytes = 0  # of the bodies it holds

    def __len__(self) -> int:
        return len(self._terms)

    @property
    def hi(self) -> int:
        """The index after its last entry: the log's length."""
        return self.lo + len(self._terms)

    @property
    def next_id(self) -> int:
        """The id the next message will get."""
        return self._next_id

    @property
    def next_offset(self) -> int:
        return self._next_offset

    def holds(self, index: int) -> bool:
        return self.lo <= index < self.hi

    # -- reading ---------------------------------------------------------------

    def entry(self, index: int) -> Entry:
        i = index - self.lo
        return Entry(self._terms[i], self._bodies[i], self._counts[i], self._keys[i])

    def entries(self, start: int, stop: int) -> list[Entry]:
        i, j = start - self.lo, stop - self.lo
        columns = zip(self._terms[i:j], self._bodies[i:j], self._counts[i:j], self._keys[i:j])
        return list(map(make_entry, columns))

    def rows(self, start: int, stop: int) -> list[tuple]:
        """Entries [start, stop) as the store's rows: (index, term, first id,
        count, offset, digest, stored at, key, body)."""
        i, j = start - self.lo, stop - self.lo
        return list(zip(range(start, stop), self._terms[i:j], self._first_ids[i:j], self._counts[i:j],
                        self._offsets[i:j], self._digests[i:j], self._ats[i:j], self._keys[i:j],
                        self._bodies[i:j]))

    def parts(self, start: int, stop: int) -> list[tuple[int, int, bytes]]:
        """(first id, count, body) of entries [start, stop): what a page is made of."""
        i, j = start - self.lo, stop - self.lo
        return list(zip(self._first_ids[i:j], self._counts[i:j], self._bodies[i:j]))

    def term(self, index: int) -> int:
        return self._terms[index - self.lo]

    def digest(self, index: int) -> int:
        return self._digests[index - self.lo]

    def first_id(self, index: int) -> int:
        """The id of entry ``index``'s first message (the next id, at ``hi``)."""
        return self._next_id if index == self.hi else self._first_ids[index - self.lo]

    def offset(self, index: int) -> int:
        return self._next_offset if index == self.hi else self._offsets[index - self.lo]

    def stored_at(self, index: int) -> float:
        return self._ats[index - self.lo]

    def body(self, index: int) -> bytes:
        return self._bodies[index - self.lo]

    def key(self, index: int) -> str | None:
        return self._keys[index - self.lo]

    def index_of_id(self, message_id: int) -> int:
        """The index of the entry that holds message ``message_id`` (which must
        lie in this window): the last entry whose first id is at most it (a
        no-op before it shares that first id, and comes earlier)."""
        return self.lo + bisect.bisect_right(self._first_ids, message_id) - 1

    def first_index_at_or_after(self, column: str, value: float) -> int:
        """The first index whose ``column`` ("first_ids", "offsets" or "ats") is at
        least ``value`` (``hi`` if none): they only grow along the log."""
        return self.lo + bisect.bisect_left(getattr(self, f"_{column}"), value)

    # -- writing -----------------------------------------------------------------

    def extend(self, entries: Sequence[Entry], digests: Iterable[int], ats: Iterable[float]) -> None:
        """Add ``entries`` at the end, with their checksums and the times they
        were stored: column by column, each in one C loop."""
        if not entries:
            return
        counts = [entry.count for entry in entries]
        sizes = [len(entry.body) for entry in entries]
        self._terms.extend([entry.term for entry in entries])
        self._counts.extend(counts)
        # Each entry's first id (and offset) is where the ones before it end.
        self._first_ids.extend(accumulate(counts[:-1], initial=self._next_id))
        self._offsets.extend(accumulate(sizes[:-1], initial=self._next_offset))
        self._digests.extend(digests)
        self._ats.extend(ats)
        self._bodies.extend([entry.body for entry in entries])
        self._keys.extend([entry.key for entry in entries])
        size = sum(sizes)
        self._next_id += sum(counts)
        self._next_offset += size
        self.bytes += size

    def truncate(self, index: int) -> None:
        """Drop the entries from ``index`` on (``index`` within or at the end)."""
        i = index - self.lo
        if i >= len(self._terms):
            return
        self._next_id, self._next_offset = self._first_ids[i], self._offsets[i]
        self.bytes -= sum(map(len, self._bodies[i:]))
        for column in self._columns():
            del column[i:]

    def drop_before(self, index: int) -> None:
        """Let go of the entries before ``index`` (retention, or memory)."""
        i = min(index - self.lo, len(self._terms))
        if i <= 0:
            return
        self.bytes -= sum(map(len, self._bodies[:i]))
        for column in self._columns():
            del column[:i]
        self.lo += i

    def reset(self, lo: int, first_id: int, offset: int) -> None:
        """Empty, starting at ``lo`` (an installed snapshot's start)."""
        self.__init__(lo, first_id, offset)

    def _columns(self) -> tuple:
        return (self._terms, self._counts, self._first_ids, self._offsets, self._digests, self._ats,
                self._bodies, self._keys)
