"""The ordered log: messages by seq, exposed only as a gap-free prefix.

Both roles keep one. The primary assigns seqs by appending; a secondary puts
entries at the seq the primary chose, in whatever order they arrive, and shows
only the contiguous prefix from seq 0, so a reader never sees a gap, a
duplicate or a reordering.

Entries are stored as the JSON string literals of their messages (see
``protocol.encode_entry``), so a message is encoded once, on the primary,
and every replica, every batch and every GET reuses those bytes.

Thread: any. One lock guards all state; every method holds it briefly and
never blocks on anything else while holding it.
"""

from __future__ import annotations

import threading
from typing import Iterator

_OPEN, _CLOSE = b'{"messages":[', b"]}"
#: Entries per chunk of a streamed document: big enough to keep the number of
#: writes low, small enough never to copy much at once.
CHUNK_ENTRIES = 4096


class OrderedLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._prefix: list[bytes] = []  # seqs 0 .. len-1, no gaps
        self._ahead: dict[int, bytes] = {}  # seqs past a gap, hidden until it fills

    def __len__(self) -> int:
        """Length of the visible, contiguous prefix."""
        return len(self._prefix)

    def append(self, entry: bytes) -> int:
        """Append at the end and return the new entry's seq (primary use)."""
        with self._lock:
            self._prefix.append(entry)
            return len(self._prefix) - 1

    def put(self, seq: int, entry: bytes) -> bool:
        """Store the entry at ``seq`` unless held already; True if it was new."""
        with self._lock:
            if seq < len(self._prefix) or seq in self._ahead:
                return False
            if seq > len(self._prefix):
                self._ahead[seq] = entry
                return True
            self._prefix.append(entry)
            while self._ahead:
                successor = self._ahead.pop(len(self._prefix), None)
                if successor is None:
                    break
                self._prefix.append(successor)
            return True

    def holds(self, seq: int) -> bool:
        with self._lock:
            return seq < len(self._prefix) or seq in self._ahead

    def entries(self, start: int, stop: int) -> list[bytes]:
        """Visible entries with seq in [start, stop)."""
        with self._lock:
            return self._prefix[start:stop]

    def entry(self, seq: int) -> bytes | None:
        with self._lock:
            return self._prefix[seq] if seq < len(self._prefix) else None

    def messages_document(self) -> tuple[int, Iterator[bytes]]:
        """The visible prefix as the JSON document ``{"messages": [...]}``:
        its size in bytes, and its bytes in chunks.

        Chunks, so a large log is never copied whole into one response body
        (which Bottle would keep alive until the thread's next request)."""
        with self._lock:
            snapshot = self._prefix[:]  # copies references only
        size = len(_OPEN) + sum(map(len, snapshot)) + max(len(snapshot) - 1, 0) + len(_CLOSE)
        return size, _document_chunks(snapshot)

    def clear(self) -> None:
        """Forget everything (a secondary following a restarted primary)."""
        with self._lock:
            self._prefix = []
            self._ahead = {}


def _document_chunks(entries: list[bytes]) -> Iterator[bytes]:
    yield _OPEN
    for start in range(0, len(entries), CHUNK_ENTRIES):
        if start:
            yield b","
        yield b",".join(entries[start : start + CHUNK_ENTRIES])
    yield _CLOSE
