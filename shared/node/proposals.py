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

Thread: ``put`` and ``answered_id`` from request threads; ``take``,
``offer``, ``withdraw`` and ``empty`` on ``node-io``.
"""

from __future__ import annotations

import threading

from shared.node.requests import Proposal

#: Appends answered at once that ``node-io`` has not taken yet, at most.
MAX_AHEAD = 1024


class ProposalQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: list[Proposal] = []
        #: (first id, index) the next append numbered here gets; None while not offered.
        self._next: tuple[int, int] | None = None
        self._to_number = 0  # queued appends that node-io numbers
        self._ahead = 0  # queued appends numbered here
        self._withdrawn = False
        #: The id after the last message of an append answered at once.
        self.answered_id = 0

    def put(self, proposal: Proposal, at_once: bool = False) -> bool:
        """Queue ``proposal``; with ``at_once``, number it now if that is safe,
        and return True: then it is answered without waiting."""
        with self._lock:
            numbered = (at_once and self._next is not None and not self._to_number
                        and self._ahead < MAX_AHEAD)
            if numbered:
                first_id, index = self._next
                proposal.number(first_id, index)
                after = first_id + len(proposal.literals)
                self._next, self.answered_id = (after, index + 1), after
                self._ahead += 1
            else:
                self._to_number += 1
            self._queued.append(proposal)
        return numbered

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
