"""AckWaiter: one append's wait for its write concern.

The hand-off between threads: a Waitress request thread creates the waiter
and blocks in ``wait``; the replicator's I/O thread calls ``record`` as
secondaries acknowledge, and ``abort`` at shutdown. The waiter's own lock
guards its state, so neither thread ever needs the other's locks.
"""

from __future__ import annotations

import threading


class AckWaiter:
    def __init__(self, seq: int, needed: int) -> None:
        #: The log position waited on.
        self.seq = seq
        #: Secondary ACKs needed (the write concern minus the primary).
        self.needed = needed
        #: Set by the request thread when it stops waiting; the I/O thread drops it.
        self.abandoned = False
        self._acked_by: list[str] = []
        self._aborted = False
        self._lock = threading.Lock()
        self._done = threading.Event()

    def record(self, secondaries: list[str]) -> bool:
        """Count these secondaries' ACKs. I/O thread only. True once satisfied.

        The I/O thread calls it once on registration, with whoever holds the
        seq already (maybe nobody), then once per new ACK.
        """
        with self._lock:
            for name in secondaries:
                if name not in self._acked_by:
                    self._acked_by.append(name)
            satisfied = len(self._acked_by) >= self.needed
        if satisfied:
            self._done.set()
        return satisfied

    def abort(self) -> None:
        """Release the waiting thread without success (shutdown). I/O thread only."""
        with self._lock:
            self._aborted = True
        self._done.set()

    def wait(self, timeout: float | None) -> bool:
        """Block until satisfied, aborted or timed out. Request thread. True if satisfied."""
        self._done.wait(timeout)
        with self._lock:
            satisfied = not self._aborted and len(self._acked_by) >= self.needed
        if not satisfied:
            self.abandoned = True
        return satisfied

    @property
    def aborted(self) -> bool:
        with self._lock:
            return self._aborted

    @property
    def acked_by(self) -> list[str]:
        """The secondaries that have acknowledged so far, in order of arrival."""
        with self._lock:
            return list(self._acked_by)
