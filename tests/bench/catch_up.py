"""The catch-up scenario: how long a secondary restarted empty takes to hold the log again.

One cluster, in memory, no delay. For each length in turn, the primary's
log is grown to it with batch appends at w=3 (so that both secondaries hold
it all, and nothing is in flight), then s2 is killed (SIGKILL) and started
again, in memory, so empty, on the same ports. The figure is the time from
its launch (Python's start-up included) until its /health length equals
the primary's. The primary learns of the restart from s2's first reply,
which can wait for a heartbeat (HEARTBEAT_INTERVAL, 1 s by default), so
the time until s2 holds its first message is noted too: what follows it
is the transfer itself. Then every node must hold the same list, without
duplicates (tests.bench.consistency). A secondary that does not catch up
ends the scenario: the lengths after it would measure something else.

Thread: the benchmark's main thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.bench import nodes
from tests.bench.consistency import Consistency, wait_for_convergence
from tests.bench.stores import message
from tests.support.http import post_batch
from tests.support.processes import Cluster, Node
from tests.support.waiting import wait_until

#: Messages per POST while the log grows (MAX_BATCH_MESSAGES is 10,000 and
#: MAX_MESSAGE_BYTES 1 MiB: 5,000 100-byte messages stay well under both).
LOAD_BATCH = 5_000
#: The secondary restarted empty.
RESTARTED = "s2"
#: Time between two looks at its /health.
POLL_S = 0.02
#: Covers a loaded machine with the largest log, yet ends a broken run.
CATCH_UP_DEADLINE_S = 60.0


@dataclass
class CatchUp:
    """One restart of the secondary on a log of ``messages``."""

    messages: int
    #: From the secondary's launch until GET /health answered 200.
    ready_s: float
    #: From its launch until it held a message; None if it never did.
    first_message_s: float | None
    #: From its launch until its length equalled the primary's; the deadline if never.
    caught_up_s: float
    caught_up: bool
    #: Every node's list equal afterwards; None if it never caught up.
    consistency: Consistency | None

    @property
    def ok(self) -> bool:
        return self.caught_up and self.consistency is not None and self.consistency.ok

    def to_json(self) -> dict:
        return {
            "messages": self.messages,
            "ready_s": round(self.ready_s, 3),
            "first_message_s": None if self.first_message_s is None else round(self.first_message_s, 3),
            "caught_up_s": round(self.caught_up_s, 3),
            "caught_up": self.caught_up,
            "consistency": self.consistency.to_json() if self.consistency else None,
        }


def run(cluster: Cluster, lengths: tuple[int, ...], message_bytes: int,
        convergence_timeout_s: float) -> list[CatchUp]:
    """One restart per length of ``lengths`` (ascending), on ``cluster``, fresh."""
    found = []
    for length in lengths:
        grow(cluster.primary, length, "catch-up", message_bytes)
        point = _restart_empty(cluster, length, convergence_timeout_s)
        found.append(point)
        if not point.ok:
            break
    return found


def grow(primary: Node, length: int, tag: str, message_bytes: int, w: int = 3,
         batch_bytes: int = LOAD_BATCH * 100) -> None:
    """Append ``message(tag, id, message_bytes)`` at ``w`` in batches (of at most
    LOAD_BATCH messages and about ``batch_bytes``) until ``primary`` holds
    ``length`` messages; each batch must get the ids that follow."""
    batch = max(1, min(LOAD_BATCH, batch_bytes // message_bytes))
    for first in range(nodes.log_length(primary), length, batch):
        seqs = range(first, min(first + batch, length))
        response = post_batch(primary.url, [message(tag, seq, message_bytes) for seq in seqs],
                              http_timeout=60, w=w)
        if response.status != 201 or response.json["first_id"] != first:
            raise RuntimeError(f"{tag}: appending from id {first:,}: "
                               f"{response.status} {response.body[:200]!r}")


def _restart_empty(cluster: Cluster, length: int, convergence_timeout_s: float) -> CatchUp:
    node = cluster[RESTARTED]
    node.kill()
    node.restart()
    ready_s = time.monotonic() - node.started_at
    deadline = node.started_at + CATCH_UP_DEADLINE_S
    first_message_s = None
    try:
        wait_until(lambda: nodes.log_length(node) > 0, deadline - time.monotonic(), POLL_S,
                   what=f"{RESTARTED}'s first message")
        first_message_s = time.monotonic() - node.started_at
        wait_until(lambda: nodes.log_length(node) == length, deadline - time.monotonic(), POLL_S,
                   what=f"{RESTARTED} to hold {length:,} messages")
    except AssertionError:
        return CatchUp(length, ready_s, first_message_s, time.monotonic() - node.started_at,
                       caught_up=False, consistency=None)
    caught_up_s = time.monotonic() - node.started_at
    return CatchUp(length, ready_s, first_message_s, caught_up_s, caught_up=True,
                   consistency=wait_for_convergence(cluster, convergence_timeout_s))
