"""The follower's rules: whom a secondary follows, and what it keeps of each APPEND.

Sans-I/O. secondary/receiver.py's I/O thread decodes a frame, hands it here
with the time and what its log holds, then does what comes back, in that
order: first what to store (a truncation, the history to keep, entries),
then what to send (the seqs to acknowledge). Nothing here touches a socket,
the log or a clock.

**Whom it follows.** Frames name the cluster's history and the runs of
primaries that wrote it (shared.consensus.history). The first history heard
is adopted and kept; frames of any other history are refused, and the node
keeps its log as it is: nothing a frame says can make it throw its log
away. A frame of a newer run is followed; where that run's segments
disagree with the node's own, the entries from that id on were written by a
run that has since been rolled back, and only they are truncated. A frame
of an older run is stale and ignored.

**What it keeps.** Deduplication is by seq. An entry already stored is
acknowledged again at once (the primary resent it because an ACK went
missing); an entry already waiting on the delay schedule is skipped, since
its ACK is on the way. Nothing is kept nor acknowledged past ``max_ahead``
entries beyond the log's contiguous prefix, nor once the entries held in
memory (past the gap, or waiting on the delay schedule) would pass
``max_ahead_bytes``: the primary resends them later, once the gap is filled.
So frames far ahead, or large entries behind one lost frame, cannot fill
the memory. An entry that fills the gap is always taken.

REPLICATION_DELAY is a schedule: each new entry gets its own due time,
drawn from the injected ``random.Random``, and ``next_due`` tells the shell
when to call ``due`` again.

Thread: the receiver's I/O thread only; ``waiting_count``, ``history`` and
``run`` may be read unsynchronised from others.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Callable, Hashable, Protocol

from shared.consensus import history as hist
from shared.consensus.messages import Append, Leader


class Delay(Protocol):
    """How long to hold back one entry (shared.runtime.config.DelayRange)."""

    def draw(self, rng: random.Random) -> float: ...

    def __bool__(self) -> bool: ...


@dataclass(frozen=True)
class Verdict:
    """What the sender of a frame is to this node, and what to store first."""

    #: Whether to take entries from this sender.
    follow: bool
    #: A history this node joins now; store it before answering.
    joined: str | None = None
    #: A newer run to follow: its segments, to store before answering.
    adopted: hist.Segments | None = None
    #: Where the log is cut first (truncate from this id on), if it is.
    cut: int | None = None
    #: Why the frame is refused, for the bad-frame log; None if it is not.
    refusal: str | None = None


@dataclass
class Taken:
    """What one APPEND asks of the node: store ``store``, then acknowledge ``ack``."""

    store: list[tuple[int, bytes]] = field(default_factory=list)
    ack: list[int] = field(default_factory=list)
    scheduled: int = 0


class Follower:
    def __init__(
        self,
        history: str | None,
        segments: hist.Segments,
        rng: random.Random,
        delay: Delay | None = None,
        max_ahead: int = 100_000,
        max_ahead_bytes: int = 32 << 20,
    ) -> None:
        #: The cluster's history id, once heard; and the runs that wrote it.
        self.history = history
        self.segments = segments
        self._rng = rng
        self._delay = delay
        self._max_ahead = max_ahead
        self._max_ahead_bytes = max_ahead_bytes
        self._scheduled_bytes = 0
        self._due: list[tuple[float, int, Hashable, str, int, bytes]] = []
        self._scheduled: set[int] = set()
        self._tiebreak = itertools.count()
        #: Entries received in APPEND frames, and those of them held or
        #: scheduled already (resends).
        self.received = 0
        self.duplicates = 0

    @property
    def run(self) -> hist.Run | None:
        """The primary run this node follows."""
        segments = self.segments
        return segments[-1].run if segments else None

    @property
    def waiting_count(self) -> int:
        """Entries received but not yet due."""
        return len(self._scheduled)

    @property
    def next_due(self) -> float | None:
        """When the earliest held-back entry is due, if one is."""
        return self._due[0][0] if self._due else None

    def on_leader(self, leader: Leader, log_length: int) -> Verdict:
        """Judge the sender of an APPEND or PING; adopts its history or run if due."""
        if leader.history is None:
            return Verdict(False)  # a primary with nothing appended yet: it only asks
        joined = None
        if self.history is None:
            self.history = joined = leader.history
        elif leader.history != self.history:
            return Verdict(False, refusal=(
                f"this node holds history {self.history} and keeps its {log_length} messages; "
                "to re-join that cluster, empty its DATA_DIR or restart it in memory"))
        own = self.run
        if leader.run == own:
            return Verdict(True, joined)
        if own is not None and leader.run.number < own.number:
            return Verdict(False, joined)  # stale: a frame of an older run
        cut = hist.divergence(self.segments, leader.segments)
        if cut is not None:
            self._due = [item for item in self._due if item[4] < cut]
            heapq.heapify(self._due)
            self._scheduled_bytes = sum(len(item[5]) for item in self._due)
            self._scheduled = {seq for seq in self._scheduled if seq < cut}
        self.segments = leader.segments
        return Verdict(True, joined, leader.segments, cut)

    def on_append(
        self, reply_to: Hashable, append: Append, now: float,
        log_length: int, holds: Callable[[int], bool], held_bytes: int = 0,
    ) -> Taken:
        """What to keep of ``append``, from a sender ``on_leader`` accepted.

        ``log_length`` is the log's contiguous prefix, ``holds`` whether it
        holds a seq, and ``held_bytes`` the size of what it holds past its
        gap; ``reply_to`` comes back with the entry from ``due``.
        """
        taken = Taken()
        window_end = log_length + self._max_ahead
        in_memory = held_bytes + self._scheduled_bytes
        contiguous_end = log_length  # where the prefix ends, with what this frame fills
        self.received += len(append.entries)
        for seq, entry in enumerate(append.entries, start=append.first):
            if seq in self._scheduled:
                self.duplicates += 1
                continue
            if seq >= window_end:
                continue
            if holds(seq):
                self.duplicates += 1
                taken.store.append((seq, entry))
                taken.ack.append(seq)
                continue
            if seq == contiguous_end:
                # It fills the gap, so it is always taken: without it, what is
                # held past the gap could never be stored.
                contiguous_end += 1
            elif in_memory + len(entry) > self._max_ahead_bytes:
                continue  # not kept: resent once the gap is filled
            else:
                in_memory += len(entry)
            if self._delay:
                self._scheduled_bytes += len(entry)
                due = now + self._delay.draw(self._rng)
                heapq.heappush(self._due, (due, next(self._tiebreak), reply_to, append.corr_id, seq, entry))
                self._scheduled.add(seq)
                taken.scheduled += 1
            else:
                taken.store.append((seq, entry))
                taken.ack.append(seq)
        return taken

    def due(self, now: float) -> list[tuple[Hashable, str, list[tuple[int, bytes]]]]:
        """The held-back entries due by ``now``: per reply_to and corr_id, those to
        store and then acknowledge."""
        ready: dict[tuple[Hashable, str], list[tuple[int, bytes]]] = {}
        while self._due and self._due[0][0] <= now:
            _, _, reply_to, corr_id, seq, entry = heapq.heappop(self._due)
            self._scheduled.discard(seq)
            self._scheduled_bytes -= len(entry)
            ready.setdefault((reply_to, corr_id), []).append((seq, entry))
        return [(reply_to, corr_id, entries) for (reply_to, corr_id), entries in ready.items()]
