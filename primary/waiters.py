"""The appends waiting for their write concern, as the replicator sees them.

A request thread ``submit``s its AckWaiter; the replicator's I/O thread then
``admit``s it with whoever holds its seq already, ``credit``s it as
secondaries' holdings grow, ``credit_local``s it once the primary's own copy
is committed (with DATA_DIR), and lets it go when it is satisfied, timed
out (``sweep``), or cannot be met (``abort_local``, ``abort_all``).

Thread: ``submit`` from any thread (a queue); everything else on the
replicator's I/O thread only.
"""

from __future__ import annotations

import heapq
import itertools
import queue
from typing import Callable

from primary.acks import SHUTDOWN, AckWaiter


class Waiters:
    def __init__(self) -> None:
        self._new: queue.SimpleQueue[AckWaiter] = queue.SimpleQueue()
        self._by_seq: dict[int, list[AckWaiter]] = {}
        # Those still waiting for the primary's own commit, by seq.
        self._local: list[tuple[int, int, AckWaiter]] = []
        self._tiebreak = itertools.count()

    def submit(self, waiter: AckWaiter) -> None:
        self._new.put(waiter)

    def admit(self, holders_of: Callable[[int], list[str]]) -> None:
        """Take in the submitted waiters, counting who already holds their seq."""
        while not self._new.empty():
            waiter = self._new.get()
            if waiter.record(holders_of(waiter.seq)):
                continue
            self._by_seq.setdefault(waiter.seq, []).append(waiter)
            if not waiter.local:
                heapq.heappush(self._local, (waiter.seq, next(self._tiebreak), waiter))

    def credit(self, secondary: str, holds: Callable[[int], bool]) -> None:
        """Count ``secondary`` for every waiting seq it now holds."""
        self._keep([seq for seq in self._by_seq if holds(seq)],
                   lambda waiter: not waiter.finished and not waiter.record([secondary]))

    def credit_local(self, durable_length: int) -> None:
        """The primary's own copy of every seq below ``durable_length`` is committed."""
        while self._local and self._local[0][0] < durable_length:
            heapq.heappop(self._local)[2].record_local()

    def abort_local(self, reason: str) -> None:
        """Release, unsatisfied, every waiter whose seq the primary could not commit."""
        while self._local:
            heapq.heappop(self._local)[2].abort(reason)

    def sweep(self) -> None:
        """Forget the waiters that were answered, aborted or gave up."""
        self._keep(list(self._by_seq), lambda waiter: not waiter.finished)

    def abort_all(self) -> None:
        for waiters in self._by_seq.values():
            for waiter in waiters:
                waiter.abort(SHUTDOWN)
        while not self._new.empty():
            self._new.get().abort(SHUTDOWN)

    def _keep(self, seqs: list[int], still_waiting) -> None:
        """Keep, for each of ``seqs``, only the waiters for which ``still_waiting`` holds."""
        for seq in seqs:
            remaining = [waiter for waiter in self._by_seq[seq] if still_waiting(waiter)]
            if remaining:
                self._by_seq[seq] = remaining
            else:
                del self._by_seq[seq]
