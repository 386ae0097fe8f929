"""The ordered log: messages by seq, exposed only as a gap-free prefix.

Both roles keep one. The primary assigns seqs by appending; a secondary puts
entries at the seq the primary chose, in whatever order they arrive, and shows
only the contiguous prefix from seq 0, so a reader never sees a gap, a
duplicate or a reordering.

Entries are stored as the JSON string literals of their messages (see
``protocol.encode_entry``), so a message is encoded once, on the primary,
and every replica, every batch and every GET reuses those bytes.

This is the node's storage interface, and its in-memory implementation:
``flush`` has nothing to do, and what is appended or put is visible at
once. ``shared.log.durable_log.DurableLog`` implements the same interface with
SQLite behind it. ``meta`` holds the node's identity (history id, segments,
incarnation); ``set_meta`` changes it.

Thread: any. One lock guards all state; every method holds it briefly and
never blocks on anything else while holding it. Writers: the primary's
request threads append; the I/O thread of either role puts, truncates,
sets identity values and flushes.
"""

from __future__ import annotations

import threading
from typing import Iterable, Iterator

_OPEN, _CLOSE = b'{"messages":[', b"]}"
#: Bytes per chunk of a streamed document, about: big enough to keep the
#: number of writes low, small enough never to copy much at once, whatever
#: the size of the messages.
CHUNK_BYTES = 256 << 10


class OrderedLog:
    #: Whether a flushed entry survives the process.
    durable = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Notified, under the lock, whenever the visible prefix grows.
        self._grew = threading.Condition(self._lock)
        self._readers_released = False
        self._prefix: list[bytes] = []  # seqs 0 .. len-1, no gaps
        self._ahead: dict[int, bytes] = {}  # seqs past a gap, hidden until it fills
        self._ahead_bytes = 0  # the size of the entries in _ahead
        #: How many leading entries are committed, where the node knows (failover
        #: mode: shared.node); None where the log has no such notion.
        self._committed: int | None = None
        self.meta: dict = {}

    # -- reading ----------------------------------------------------------------

    def __len__(self) -> int:
        """Length of the visible, contiguous prefix."""
        return self._visible()

    def appended(self) -> int:
        """Entries appended so far, visible or not yet: the next seq (primary use)."""
        return len(self._prefix)

    def holds(self, seq: int) -> bool:
        with self._lock:
            return seq < len(self._prefix) or seq in self._ahead

    def entries(self, start: int, stop: int) -> list[bytes]:
        """Visible entries with seq in [start, stop)."""
        with self._lock:
            return self._prefix[start : min(stop, self._visible())]

    def entry(self, seq: int) -> bytes | None:
        """The entry appended at ``seq``, visible yet or not (the primary's replay check)."""
        with self._lock:
            return self._prefix[seq] if seq < len(self._prefix) else None

    def run_from(self, seq: int, max_entries: int, max_bytes: int) -> list[bytes]:
        """Held entries from ``seq`` on, as far as they are contiguous, past a
        gap too, up to ``max_entries`` and about ``max_bytes`` (at least one)."""
        run: list[bytes] = []
        size = 0
        with self._lock:
            visible = self._visible()
            while len(run) < max_entries:
                entry = self._prefix[seq] if seq < visible else self._ahead.get(seq)
                if entry is None:
                    break
                size += len(entry)
                if size > max_bytes and run:
                    break
                run.append(entry)
                seq += 1
        return run

    def shown(self, committed: bool = False) -> int:
        """Entries a reader sees: the visible prefix, or only its committed part."""
        with self._lock:
            return self._shown(committed)

    def set_committed(self, length: int) -> None:
        """The first ``length`` entries are committed (never lowered); wakes tails."""
        with self._lock:
            if self._committed is None or length > self._committed:
                self._committed = length
                self._grew.notify_all()

    def wait_for_length(self, length: int, timeout: float, committed: bool = False) -> bool:
        """Block until at least ``length`` entries are shown, ``timeout`` runs
        out, or ``release_readers`` is called; True if the length was reached.
        For a request thread that tails the log."""
        with self._lock:
            self._grew.wait_for(lambda: self._shown(committed) >= length or self._readers_released,
                                timeout)
            return self._shown(committed) >= length

    def release_readers(self) -> None:
        """Answer every waiting reader now, and any later one at once (shutdown)."""
        with self._lock:
            self._readers_released = True
            self._grew.notify_all()

    @property
    def ahead_count(self) -> int:
        """Entries held past a gap. An unsynchronised reading, for /health."""
        return len(self._ahead)

    @property
    def ahead_bytes(self) -> int:
        """Bytes of the entries held past a gap. An unsynchronised reading."""
        return self._ahead_bytes

    def messages_document(self, committed: bool = False) -> tuple[int, Iterator[bytes]]:
        """The visible prefix (or its committed part) as the JSON document
        ``{"messages": [...]}``: its size in bytes, and its bytes in chunks.

        Chunks, so a large log is never copied whole into one response body
        (which Bottle would keep alive until the thread's next request)."""
        with self._lock:
            snapshot = self._prefix[: self._shown(committed)]  # copies references only
        return _document(snapshot, _CLOSE)

    def page_document(self, start: int, limit: int | None,
                      committed: bool = False) -> tuple[int, Iterator[bytes]]:
        """Visible (or committed) entries from ``start``, at most ``limit`` (all
        when None), as ``{"messages": [...], "from": start, "next": ...,
        "length": ...}``, the length shown at the same moment. A slice: its
        cost does not depend on ``start``."""
        with self._lock:
            visible = self._shown(committed)
            stop = visible if limit is None else min(visible, start + limit)
            entries = self._prefix[start:stop]
        close = b'],"from":%d,"next":%d,"length":%d}' % (start, start + len(entries), visible)
        return _document(entries, close)

    # -- writing ----------------------------------------------------------------

    def append(self, entry: bytes, key: str | None = None) -> int:
        """Append at the end and return the new entry's seq (primary use);
        ``key``, the Idempotency-Key it was appended under, is kept with it."""
        with self._lock:
            self._prefix.append(entry)
            seq = len(self._prefix) - 1
            if key is not None:
                self._keep_key(seq, key, 1)
            self._grew.notify_all()
            return seq

    def append_many(self, entries: list[bytes], key: str | None = None) -> int:
        """Append ``entries`` at consecutive seqs, with nothing between them;
        the first one's seq (primary use). ``key`` as for ``append``."""
        with self._lock:
            first = len(self._prefix)
            self._prefix.extend(entries)
            if key is not None:
                self._keep_key(first, key, len(entries))
            self._grew.notify_all()
            return first

    def keyed_appends(self) -> list[tuple[int, str, int]]:
        """The appends an earlier process made under an Idempotency-Key, as
        (first seq, key, count) by seq ascending: what the primary's
        idempotency table starts from (main thread, at start). None in memory."""
        return []

    def put(self, seq: int, entry: bytes) -> bool:
        """Store the entry at ``seq`` unless held already; True if it was new."""
        with self._lock:
            return self._place(seq, entry)

    def truncate(self, from_seq: int) -> list[int]:
        """Remove every entry at ``from_seq`` or beyond; the seqs removed."""
        with self._lock:
            return self._cut(from_seq)

    def set_meta(self, **values) -> None:
        with self._lock:
            self.meta = {**self.meta, **values}

    def flush(self) -> None:
        """Make what was written so far durable and visible: here it already is."""

    def load(self, entries: Iterable[tuple[int, bytes]]) -> None:
        """Fill an empty log from ``(seq, entry)`` pairs in seq order (start-up)."""
        with self._lock:
            for seq, entry in entries:
                if seq == len(self._prefix):
                    self._prefix.append(entry)
                else:
                    self._hold(seq, entry)
            self._close_gap()

    # -- under the lock -----------------------------------------------------------

    def _visible(self) -> int:
        return len(self._prefix)

    def _shown(self, committed: bool) -> int:
        visible = self._visible()
        return min(visible, self._committed or 0) if committed else visible

    def _place(self, seq: int, entry: bytes) -> bool:
        if seq < len(self._prefix) or seq in self._ahead:
            return False
        if seq > len(self._prefix):
            self._hold(seq, entry)
            return True
        self._prefix.append(entry)
        self._close_gap()
        self._grew.notify_all()
        return True

    def _close_gap(self) -> None:
        while self._ahead:
            successor = self._ahead.pop(len(self._prefix), None)
            if successor is None:
                break
            self._ahead_bytes -= len(successor)
            self._prefix.append(successor)

    def _keep_key(self, seq: int, key: str, count: int) -> None:
        """Keep ``key`` with the ``count`` entries appended from ``seq``. In
        memory nothing outlives the process, and the primary's idempotency
        table holds the keys it needs: nothing to do."""

    def _hold(self, seq: int, entry: bytes) -> None:
        self._ahead[seq] = entry
        self._ahead_bytes += len(entry)

    def _cut(self, from_seq: int) -> list[int]:
        removed = list(range(from_seq, len(self._prefix)))
        del self._prefix[from_seq:]
        beyond = sorted(seq for seq in self._ahead if seq >= from_seq)
        for seq in beyond:
            self._ahead_bytes -= len(self._ahead.pop(seq))
        return removed + beyond


def _document(entries: list[bytes], close: bytes) -> tuple[int, Iterator[bytes]]:
    size = len(_OPEN) + sum(map(len, entries)) + max(len(entries) - 1, 0) + len(close)
    return size, _document_chunks(entries, close)


def _document_chunks(entries: list[bytes], close: bytes) -> Iterator[bytes]:
    yield _OPEN
    chunk: list[bytes] = []
    size = 0
    for index, entry in enumerate(entries):
        chunk.append(entry)
        size += len(entry) + 1  # and its comma
        if size >= CHUNK_BYTES:
            yield b",".join(chunk) + (b"," if index + 1 < len(entries) else b"")
            chunk, size = [], 0
    if chunk:
        yield b",".join(chunk)
    yield close
