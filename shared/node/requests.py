"""What a request thread hands ``node-io`` and waits on: an append, or a read's index.

The request thread makes one and blocks in ``wait``; ``node-io``
(shared.node.node_io) works on it and releases it once. A plain lock is
the gate, held from creation until the release: the waiting thread blocks
acquiring it. A lock rather than an Event, because an Event is a condition
variable over a lock, and its wait and set cost two more hand-offs of the
GIL per request.

Thread: the request thread calls ``wait`` (and, queueing it, ``number``:
see shared.node.proposals); ``node-io`` everything else.
"""

from __future__ import annotations

import threading
from typing import Callable

# Why an append ended without its write concern met.
NOT_PRIMARY = "not primary"  # nothing was appended
STEPPED_DOWN = "stepped down"  # appended; its fate is for the next primary to decide
CONFLICT = "conflict"  # the Idempotency-Key was used for other messages
STOPPING = "stopping"  # appended; the node stopped before the write concern was met
STORAGE = "storage"  # the primary could not write it (a full disk)


class _Gate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._released = False
        self._gate = threading.Lock()
        self._gate.acquire()

    def wait(self, timeout: float | None) -> bool:
        """True once released; False on timeout, after which ``node-io`` lets it go."""
        released = self._gate.acquire(timeout=-1 if timeout is None else timeout)
        if not released:
            with self._lock:
                released = self._released
                self._abandoned = not released
        return released

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def _release(self, outcome: Callable[[], None]) -> bool:
        """Set the outcome and open the gate, once; False (the outcome left as
        it was) if it was open already."""
        with self._lock:
            if self._released:
                return False
            outcome()
            self._released = True
        self._gate.release()
        return True


class Proposal(_Gate):
    """One append on its way through ``node-io``: its messages' literals, its
    Idempotency-Key and write concern. ``node-io`` assigns its ids (or finds
    its key), counts who holds it, and releases it: met, or ended."""

    def __init__(self, literals: list[bytes], key: str | None, w: int) -> None:
        super().__init__()
        self.literals = literals
        self.key = key
        self.w = w
        self.first_id: int | None = None
        self.index = -1  # the Raft index of its entry
        self.duplicate = False
        self.acked_by: list[str] = []  # who held it when released
        #: Who holds it, as of node-io's last look, in the order they came to:
        #: what a 504 reports. Replaced, never changed in place.
        self.holders: list[str] = []
        self.ended: str | None = None  # one of the reasons above, if it was not met
        self.numbered = False  # given its ids as it was queued, and answered without waiting

    @property
    def body(self) -> bytes:
        """Its messages as an entry holds them."""
        return b",".join(self.literals)

    def number(self, first_id: int, index: int) -> None:
        """Its ids, given as it was queued (shared.node.proposals): nobody waits on it."""
        self.first_id, self.index, self.numbered = first_id, index, True

    def assign(self, first_id: int, index: int, primary: str, duplicate: bool = False) -> bool:
        """Give it its ids, held by ``primary``, which appends it (or holds it
        already); False if its request already gave up (then nothing is
        appended). Under the lock the request's timeout takes: a request that
        gives up after this reports the ids and the primary among the holders,
        not an append that no node holds."""
        with self._lock:
            if self._abandoned:
                return False
            self.first_id, self.index, self.duplicate = first_id, index, duplicate
            self.holders = [primary]
            return True

    def release(self, acked_by: list[str], ended: str | None = None) -> None:
        def outcome() -> None:
            self.acked_by, self.ended = acked_by, ended
        self._release(outcome)


class ReadIndexWait(_Gate):
    """A linearizable read's wait for the commit length it must see (thesis
    §6.4): ``index`` once confirmed, or None if this node could not confirm
    it (no primary, or the primary stepped down)."""

    def __init__(self) -> None:
        super().__init__()
        self.index: int | None = None
        self.committed_id: int | None = None  # the id that commit length ends at

    def release(self, index: int | None, committed_id: int | None = None) -> None:
        def outcome() -> None:
            self.index, self.committed_id = index, committed_id
        self._release(outcome)
