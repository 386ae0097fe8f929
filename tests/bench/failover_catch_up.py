"""failover-catch-up: a failover follower restarted with an empty DATA_DIR, and what it costs the primary.

For each case (messages, bytes each), on a failover cluster of its own
(tests.bench.failover: DATA_DIR, FSYNC=always, default timeouts): the log
is grown to that many messages with batch appends at w=3
(tests.bench.catch_up.grow: 5,000 messages or 500 kB an append, whichever
is fewer, as the fixed-role catch-up grows its log), every node follows the primary and has
committed as much, then a follower (s2) is killed (SIGKILL),
its DATA_DIR emptied, and it is launched again on the same ports, as a
replaced disk would be: the primary resends it the whole log.

Figures: from its launch until its /health length equals the primary's
(and until it held its first message: what precedes that is start-up and
the primary noticing); messages per second over the first and over the
transfer alone; the primary's RSS at rest just before the restart, and
its peak during the catch-up: VmHWM, reset to the current RSS as the
follower is launched (/proc/PID/clear_refs), and the RSS sampled at every
look (every 20 ms), whichever is higher. Then every node must hold the
same list, without duplicates (tests.bench.consistency). A follower that
does not catch up within ``DEADLINE_S`` fails the run.

Thread: the benchmark's main thread.
"""

from __future__ import annotations

import http.client
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tests.bench import catch_up, failover, nodes
from tests.bench.consistency import Consistency, wait_for_convergence
from tests.bench.loads import CONVERGENCE_TIMEOUT_S, say
from tests.support.http import request

#: The follower restarted: the first of these that is not the primary.
RESTARTED = ("s2", "s1")
#: Bytes of messages per POST while the log grows (MAX_MESSAGE_BYTES is 1 MiB).
GROW_BATCH_BYTES = 500_000
POLL_S = 0.02
#: Covers a loaded machine with the largest log, yet ends a broken run.
DEADLINE_S = 300.0
MB = 1_000_000


@dataclass
class FailoverCatchUp:
    messages: int
    message_bytes: int
    #: From the follower's launch: /health 200, its first message, the whole log (the deadline if never).
    ready_s: float | None
    first_message_s: float | None
    caught_up_s: float
    caught_up: bool
    #: The primary's RSS just before the restart, and at its peak during the catch-up.
    rest_rss_bytes: int
    peak_rss_bytes: int
    consistency: Consistency | None

    @property
    def ok(self) -> bool:
        return self.caught_up and self.consistency is not None and self.consistency.ok

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.caught_up_s

    @property
    def transfer_messages_per_s(self) -> float | None:
        if self.first_message_s is None or self.caught_up_s <= self.first_message_s:
            return None
        return self.messages / (self.caught_up_s - self.first_message_s)

    @property
    def per_append(self) -> int:
        """Messages per append (per entry) of the log caught up."""
        return max(1, min(catch_up.LOAD_BATCH, GROW_BATCH_BYTES // self.message_bytes))

    @property
    def growth_bytes(self) -> int:
        return self.peak_rss_bytes - self.rest_rss_bytes

    def to_json(self) -> dict:
        transfer = self.transfer_messages_per_s
        return {
            "messages": self.messages, "message_bytes": self.message_bytes, "per_append": self.per_append,
            "ready_s": None if self.ready_s is None else round(self.ready_s, 3),
            "first_message_s": None if self.first_message_s is None else round(self.first_message_s, 3),
            "caught_up_s": round(self.caught_up_s, 3), "caught_up": self.caught_up,
            "messages_per_s": round(self.messages_per_s),
            "transfer_messages_per_s": None if transfer is None else round(transfer),
            "primary_rest_rss_mb": round(self.rest_rss_bytes / MB, 1),
            "primary_peak_rss_mb": round(self.peak_rss_bytes / MB, 1),
            "primary_growth_mb": round(self.growth_bytes / MB, 1),
            "consistency": self.consistency.to_json() if self.consistency else None,
        }


def run(log_dir: Path, cases: tuple[tuple[int, int], ...]) -> list[FailoverCatchUp]:
    found = []
    for messages, size in cases:
        with failover.failover_cluster(log_dir / f"{messages}x{size}") as cluster:
            elected = failover.wait_for_primary(cluster)
            primary = cluster[elected]
            say(f"failover-catch-up: growing the log to {messages:,} messages of {size:,} bytes (w=3)")
            catch_up.grow(primary, messages, f"fo-catch-up-{size}", size, w=3, batch_bytes=GROW_BATCH_BYTES)
            failover.wait_caught_up(cluster, "every node to catch up")
            follower = cluster[next(name for name in RESTARTED if name != elected)]
            say(f"failover-catch-up: {follower.name} restarted with an empty DATA_DIR")
            found.append(_restart_empty(cluster, primary, follower, messages, size))
    return found


def _restart_empty(cluster: failover.FailoverNodes, primary, node, messages: int,
                   size: int) -> FailoverCatchUp:
    target = nodes.log_length(primary)
    node.kill()
    data_dir = Path(node.env["DATA_DIR"])
    shutil.rmtree(data_dir)
    data_dir.mkdir()
    rest = nodes.memory(primary).rss_bytes
    nodes.reset_peak(primary)
    sampled = rest
    nodes.relaunch(node)
    ready_s = first_s = None
    while True:
        sampled = max(sampled, nodes.memory(primary).rss_bytes)
        length = _length(node)
        elapsed = time.monotonic() - node.started_at
        if length is not None and ready_s is None:
            ready_s = elapsed
        if length and first_s is None:
            first_s = elapsed
        if length == target or elapsed > DEADLINE_S:
            break
        time.sleep(POLL_S)
    caught_up = length == target
    peak = max(sampled, nodes.memory(primary).peak_rss_bytes)
    consistency = None
    if caught_up:
        node.wait_ready()
        consistency = wait_for_convergence(cluster, CONVERGENCE_TIMEOUT_S)
    return FailoverCatchUp(messages, size, ready_s, first_s, elapsed, caught_up, rest, peak, consistency)


def _length(node) -> int | None:
    """The node's /health length; None while it does not answer."""
    if node.url is None:
        return None
    try:
        response = request("GET", f"{node.url}/health", timeout=2)
    except (OSError, http.client.HTTPException):
        return None
    return response.json["length"] if response.status == 200 else None
