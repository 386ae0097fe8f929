"""The appends request threads hand ``node-io``, in order, and the ids some get at once.

Every append goes through this queue, and ``node-io`` takes it whole each
pass and numbers the appends in queue order. Most appends then wait for
``node-io`` to release them (shared.node.requests). One kind need not: on a
fixed primary whose log lives in memory, a w=1 append without an
Idempotency-Key is answered at once, as soon as it has its ids and its
place in the queue, as the fixed primary always answered it. Waiting for a
pass of ``node-io`` cost such an append more than it did: two hand-offs of
a thread and of the GIL, about a sixth of the primary's CPU at w=1.

Why an append answered at once is answered truly:

- **Its ids are those ``node-io`` gives it.** It is numbered under the lock
  that puts it in order, counting on from where ``node-io`` said the log
  ends (``offer``), and only while no append ahead of it is still to be
  numbered by ``node-io``: such an append may take no ids (a known key, a
  request that timed out), so the count past it is not known. Taking one
  suspends the numbering until ``node-io`` offers it again. ``node-io``
  checks every numbered append it takes, and stops the node if one differs.
- **It is appended.** Numbering is offered only by a fixed primary with a
  log in memory: one that never steps down, and whose writes cannot fail.
- **It is seen.** A local read, /health and /metrics on the node first wait
  until it shows every append answered at once (NodeIo.showing_answers).
- **"Held" means what it meant.** At w=1 without DATA_DIR the primary's
  memory is what holds a message, queued or in the log; a crash loses it
  either way, until a secondary has it.

At most MAX_AHEAD appends are answered ahead of ``node-io``; the next ones
wait for it, so a flood cannot grow the queue without bound.

**Gathering.** The queue wakes ``node-io`` (the ``wake`` it is given) for
every append that waits, but for appends answered at once only for the
first of a batch: ``node-io`` then lets them gather for up to LINGER_S
(``gathering_until``), as Kafka's producer lingers, and takes them in one
pass. Nobody waits on them, and a pass costs ``node-io`` about as much for
one append as for ten: at w=1 that was most of its CPU. The gathering ends
at once when an append that waits comes, when LINGER_MAX have gathered, or
when a reader must see them (``hurry``). The secondaries get such appends
up to LINGER_S later; nothing a client was told depends on when. (Meanwhile
``node-io`` may leave the secondaries' answers unread too: NodeIo._quiet_until.)

Thread: ``put``, ``hurry`` and ``answered_id`` from request threads;
``take``, ``offer``, ``withdraw``, ``gathering_until`` and ``empty`` on
``node-io``.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from shared.node.requests import Proposal

#: Appends answered at once that ``node-io`` has not taken yet, at most.
MAX_AHEAD = 1024
#: How long ``node-io`` lets appends answered at once gather before it takes them,
#: at most; and how many may gather before it takes them sooner.
LINGER_S = 0.01
LINGER_MAX = 256


class ProposalQueue:
    def __init__(self, wake: Callable[[], None] = lambda: None) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._queued: list[Proposal] = []
        #: (first id, index) the next append numbered here gets; None while not offered.
        self._next: tuple[int, int] | None = None
        self._to_number = 0  # queued appends that node-io numbers
        self._ahead = 0  # queued appends numbered here
        self._withdrawn = False
        self._gathering_since = 0.0  # when the first queued append answered at once came
        self._hurried = False
        #: The id after the last message of an append answered at once.
        self.answered_id = 0

    def put(self, proposal: Proposal, at_once: bool = False) -> bool:
        """Queue ``proposal``; with ``at_once``, number it now if that is safe,
        and return True: then it is answered without waiting."""
        with self._lock:
            numbered = (at_once and self._next is not None and not self._to_number
                        and self._ahead < MAX_AHEAD)
            first = not self._queued
            if numbered:
                first_id, index = self._next
                proposal.number(first_id, index)
                after = first_id + len(proposal.literals)
                self._next, self.answered_id = (after, index + 1), after
                if first:
                    self._gathering_since = time.monotonic()
                self._ahead += 1
            else:
                self._to_number += 1
            self._queued.append(proposal)
            wake = first or not numbered or self._ahead == LINGER_MAX
        if wake:  # unlocked: node-io may be waiting for the lock
            self._wake()
        return numbered

    def gathering_until(self) -> float | None:
        """When ``node-io`` should take the queue, if it holds only appends
        answered at once, fewer than LINGER_MAX, that no reader hurries; else
        None (take it now, or nothing is queued)."""
        with self._lock:
            if self._queued and not self._to_number and not self._hurried and self._ahead < LINGER_MAX:
                return self._gathering_since + LINGER_S
            return None

    def hurry(self) -> None:
        """A reader waits to see the appends answered at once: ``node-io`` takes them now."""
        with self._lock:
            self._hurried = True
        self._wake()

    def empty(self) -> bool:
        return not self._queued

    def take(self) -> list[Proposal]:
        """Every queued append, in order. If some are still to be numbered, the
        numbering stops until ``offer``: node-io is about to give them ids."""
        with self._lock:
            taken, self._queued = self._queued, []
            if self._to_number:
                self._next = None
            self._to_number = self._ahead = 0
            self._hurried = False
        return taken

    def offer(self, next_id: int, next_index: int) -> None:
        """The log ends at ``next_id`` (entry ``next_index``) with everything taken
        numbered: appends may be numbered from there, unless they already are, or
        one still to be numbered is queued."""
        with self._lock:
            if self._next is None and not self._to_number and not self._withdrawn:
                self._next = (next_id, next_index)

    def withdraw(self) -> None:
        """No append is numbered here from now on (the node stops)."""
        with self._lock:
            self._next, self._withdrawn = None, True
