"""AckWaiter: one append's wait for its write concern.

The hand-off between threads: a Waitress request thread creates the waiter
and blocks in ``wait``; the replicator's I/O thread calls ``record`` as
secondaries acknowledge, ``record_local`` once the primary's own copy is
durable, and ``abort`` when it cannot go on (shutdown, a failed write). The
waiter's own lock guards its state, so neither thread ever needs the
other's locks.

The primary is always one of the ``w`` nodes: a write concern is met once
the primary holds the message (durably, with DATA_DIR) and ``w - 1``
secondaries have acknowledged it, never by secondaries alone.
"""

from __future__ import annotations

import threading

#: Why a waiter was released without success.
SHUTDOWN = "shutdown"
STORAGE = "storage"


class AckWaiter:
    def __init__(self, seq: int, needed: int, local_pending: bool = False) -> None:
        #: The log position waited on.
        self.seq = seq
        #: Secondary ACKs needed (the write concern minus the primary).
        self.needed = needed
        #: Set by the request thread when it stops waiting; the I/O thread drops it.
        self.abandoned = False
        self._local = not local_pending
        self._acked_by: list[str] = []
        self._abort_reason: str | None = None
        self._lock = threading.Lock()  # guards the state above and below
        self._released = False
        # Held from here until the wait is over, satisfied or aborted: the
        # request thread blocks acquiring it, the I/O thread releases it once.
        # A plain lock, not an Event: an Event's wait makes a lock of its own
        # and goes through a Condition, and every extra step that gives up
        # the GIL lets another of the primary's threads in.
        self._gate = threading.Lock()
        self._gate.acquire()

    def record(self, secondaries: list[str]) -> bool:
        """Count these secondaries' ACKs. I/O thread only. True once satisfied.

        The I/O thread calls it once on registration, with whoever holds the
        seq already (maybe nobody), then once per new ACK.
        """
        with self._lock:
            for name in secondaries:
                if name not in self._acked_by:
                    self._acked_by.append(name)
            return self._settle()

    def record_local(self) -> bool:
        """The primary's own copy is durable. I/O thread only. True once satisfied."""
        with self._lock:
            self._local = True
            return self._settle()

    def abort(self, reason: str = SHUTDOWN) -> None:
        """Release the waiting thread without success, unless it was released
        already (a write concern met stays met). Any thread."""
        with self._lock:
            if not self._released:
                self._abort_reason = reason
                self._release()

    def wait(self, timeout: float | None) -> bool:
        """Block until satisfied, aborted or timed out. Request thread. True if satisfied."""
        self._gate.acquire(timeout=-1 if timeout is None else timeout)
        with self._lock:
            satisfied = self._satisfied()
            if not satisfied:
                self.abandoned = True
        return satisfied

    @property
    def finished(self) -> bool:
        """Satisfied, aborted or abandoned: the I/O thread need not keep it."""
        return self.abandoned or self._released

    @property
    def local(self) -> bool:
        """Whether the primary's own copy counts yet."""
        with self._lock:
            return self._local

    @property
    def abort_reason(self) -> str | None:
        with self._lock:
            return self._abort_reason

    @property
    def acked_by(self) -> list[str]:
        """The secondaries that have acknowledged so far, in order of arrival."""
        with self._lock:
            return list(self._acked_by)

    # -- under self._lock ---------------------------------------------------------

    def _settle(self) -> bool:
        satisfied = self._satisfied()
        if satisfied:
            self._release()
        return satisfied

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._gate.release()

    def _satisfied(self) -> bool:
        return self._abort_reason is None and self._local and len(self._acked_by) >= self.needed
