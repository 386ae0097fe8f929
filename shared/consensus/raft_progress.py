"""What a primary knows of one secondary, and what it may send it now: flow control.

As etcd's ``Progress``: a secondary is in one of three states.

- **probe**: where its log ends is not known. The primary sends one
  AppendEntries at a time, with no entries, and waits for its answer; a
  rejection moves the probe back (to the secondary's hint), a success
  moves it to replicate. So a secondary that does not answer is sent
  nothing big, however long it stays away.
- **replicate**: its log is known to match up to ``match``. The primary
  sends what is new at once, without waiting for answers, up to a window
  of ``window`` frames and ``window_bytes`` bytes in flight; each answer
  frees what it covers. So a follower far behind catches up at the speed
  of the link, and a slow one is sent no more than it can take.
- **snapshot**: its log ends before the primary's start (retention): it is
  sent the start and the Idempotency-Keys in force there, a chunk at a time,
  from one copy of them taken when the install began (new keyed appends
  evict the oldest keys in force, which would shift later chunks' offsets).

Nothing is sent twice on a timer of the primary's heartbeat: heartbeats
carry no entries. A frame in flight (or a probe, or a snapshot chunk) is
given up only when no answer came for a retransmission timeout measured
from this secondary's round trips (RFC 6298: the smoothed round trip plus
four deviations, at least ``MIN_RTO_S``, doubling with each timeout in a
row); then the secondary is probed again from what it is known to hold.

``seq`` numbers the primary's frames in its term; replies echo it. A
success stays true however late it comes (within a term, a secondary's
log grows only by this primary's frames, as long as it keeps its life:
the core drops the replies of a life that ended), so it always counts,
and measures a round trip: a secondary slower than the first guess (a
REPLICATION_DELAY, a big frame) is learned from its first answer. A
rejection older than the primary's last change of mind about this
secondary (``floor_seq``) is stale: it answers a frame whose outcome no
longer matters, and moves nothing.

Sans-I/O, like the rest of shared.consensus: the time is an argument.
Thread: the owner's I/O thread only.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass

from shared.consensus.raft_log import Snapshot

#: The first retransmission timeout, before any round trip was measured,
#: and the least one (seconds).
INITIAL_RTO_S = 1.0
MIN_RTO_S = 0.2
#: Frames whose send times are remembered, to measure a late answer's round trip.
SENDS_REMEMBERED = 256
#: The longest a retransmission timeout grows to, however many in a row,
#: unless the primary is told otherwise.
MAX_RTO_S = 10.0


class State(str, enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Flight:
    """One frame sent and not yet answered."""

    seq: int
    prev_length: int  # where its entries go
    end: int  # the length the secondary holds once it took them
    size: int  # bytes, roughly (Entry.size)
    sent_at: float


class Progress:
    def __init__(self, next_length: int, now: float, window: int, window_bytes: int,
                 max_rto: float = MAX_RTO_S) -> None:
        self.match = 0  # its log matches this primary's for this many entries
        self.next = next_length  # what is sent next starts here
        self.state = State.PROBE
        #: When a reply of this term last came from it (check quorum, health);
        #: a new primary counts from its election.
        self.heard_at = now
        self.replied = False  # whether any reply of this term came
        #: The highest seq it echoed: every frame up to there reached it (read index).
        self.acked_seq = 0
        #: Replies to frames below this seq are stale (see the module's docstring).
        self.floor_seq = 0
        self.flights: deque[Flight] = deque()
        #: seq -> when, for the latest frames that carried entries.
        self._sent_at: OrderedDict[int, float] = OrderedDict()
        self._flight_bytes = 0
        self._window, self._window_bytes = window, window_bytes
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._timeouts = 0  # in a row: the timeout doubles with each
        self._max_rto = max_rto
        #: Frames given up for want of an answer (each resent): what /metrics counts.
        self.timeouts = 0
        #: In snapshot state: the start being installed and its keys, as they
        #: were when the install began (chunks are cut from this copy), and
        #: how many of those keys it acknowledged.
        self.snapshot: Snapshot | None = None
        self.keys_acked = 0
        #: Why it takes nothing from this primary (fixed roles: another cluster's log).
        self.diverged: str | None = None
        #: It said it lost its disk (it is not caught up): what it acknowledged
        #: before that was forgotten, and it is told once it holds all committed.
        self.lost_disk = False
        self.restarts = 0  # lives it came back from without what it had acknowledged
        #: The name of its current life (raft_messages.AppendReply.incarnation),
        #: and those that ended: their replies are stale.
        self.incarnation: str | None = None
        self.retired_incarnations: set[str] = set()

    # -- what may be sent ------------------------------------------------------------

    def may_send_entries(self, log_length: int) -> bool:
        if self.diverged is not None or self.state is State.SNAPSHOT:
            return False
        if self.state is State.PROBE:
            return not self.flights and self.next <= log_length
        return (self.next < log_length and len(self.flights) < self._window
                and self._flight_bytes < self._window_bytes)

    def may_send_snapshot_chunk(self) -> bool:
        return self.state is State.SNAPSHOT and not self.flights and self.diverged is None

    def sent(self, seq: int, prev_length: int, end: int, size: int, now: float) -> None:
        """A frame of entries [prev_length, end) went out (in probe: the probe;
        in snapshot state: a chunk, with ``end`` its start's index)."""
        self.flights.append(Flight(seq, prev_length, end, size, now))
        self._flight_bytes += size
        if end > prev_length:  # only entries measure it: a probe is answered at once, a batch
            self._sent_at[seq] = now  # after the secondary stored it (or held it back)
        if len(self._sent_at) > SENDS_REMEMBERED:
            self._sent_at.popitem(last=False)
        if self.state is State.REPLICATE:
            self.next = end

    def retransmit_deadline(self) -> float | None:
        """When the oldest frame in flight is given up, if one is in flight."""
        return self.flights[0].sent_at + self._rto() if self.flights else None

    def on_timeout(self, next_seq: int) -> None:
        """No answer in time: probe again from what it is known to hold, and
        wait longer for the next answer (the timeout doubles)."""
        self._timeouts += 1
        self.timeouts += 1
        self.reprobe(next_seq)

    def reprobe(self, next_seq: int) -> None:
        """What was sent may be lost (a new connection): probe again from what it
        is known to hold (in snapshot state, resend the current chunk). Not a
        timeout: nothing is counted, and the timeout does not grow."""
        self._reset(State.SNAPSHOT if self.state is State.SNAPSHOT else State.PROBE,
                    self.match if self.state is not State.SNAPSHOT else self.next, next_seq)

    # -- what it answered ------------------------------------------------------------

    def heard(self, seq: int, now: float) -> bool:
        """Any reply of this term: it is alive. False if the reply is stale.
        Alive, its link is not losing everything: the timeouts in a row it may
        have run into count for one at most (the next resend does not wait long)."""
        self.heard_at, self.replied = now, True
        self.acked_seq = max(self.acked_seq, seq)
        self._timeouts = min(self._timeouts, 1)
        return seq >= self.floor_seq

    def on_success(self, seq: int, match: int, now: float) -> bool:
        """It holds ``match`` entries that match (however late the answer). True
        if that is news."""
        sent_at = self._sent_at.pop(seq, None)
        if sent_at is not None:
            self._sample(now - sent_at)
            self._timeouts = 0
        news = match > self.match
        if news:
            self.match = match
        self._free(self.match)
        if self.state is State.PROBE:
            self.state = State.REPLICATE
            self.next = max(self.next, self.match)
            self._free(float("inf"))  # the probe
        self.next = max(self.next, self.match)
        return news

    def on_reject(self, seq: int, hint: int, next_seq: int) -> None:
        """Its log does not hold the frame's prefix: probe from its ``hint``."""
        flight = self._flight(seq)
        rejected_at = flight.prev_length if flight is not None else self.next
        if hint < self.match:
            # It holds less than it acknowledged: it lost a tail it had not made
            # durable (FSYNC=off), or its DATA_DIR. Resend from what it has.
            self.match = hint
        self._reset(State.PROBE, max(self.match, min(hint, max(rejected_at - 1, 0))), next_seq)

    def forget_acknowledgements(self, holds: int, next_seq: int) -> None:
        """It lost its disk (or started from an empty one): what it acknowledged
        before counts no more, and no reply sent before now does either. It
        holds ``holds`` entries now, maybe: probe it from there."""
        self.lost_disk = True
        if self.match:  # it came back without what it had acknowledged
            self.restarts += 1
        self.match = 0
        self._reset(State.PROBE, holds, next_seq)

    def on_snapshot_reply(self, seq: int, start_index: int, keys_received: int, now: float) -> bool:
        """A chunk was taken. True once the start is installed there."""
        flight = self._flight(seq)
        if flight is not None:
            self._sample(now - flight.sent_at)
            self._free(float("inf"))
        snapshot = self.snapshot
        if self.state is not State.SNAPSHOT or snapshot is None or start_index != snapshot.start.index:
            return False
        self.keys_acked = keys_received  # less than before, if it restarted meanwhile
        if keys_received < len(snapshot.keys):
            return False
        self.match = max(self.match, start_index)
        self._reset(State.PROBE, start_index, seq + 1)
        return True

    def need_snapshot(self, snapshot: Snapshot, next_seq: int) -> None:
        """Its log ends before the primary's start: send it ``snapshot`` (the
        primary's start and keys now), in chunks cut from this copy."""
        self._reset(State.SNAPSHOT, snapshot.start.index, next_seq)
        self.snapshot = snapshot
        self.keys_acked = 0

    def rto(self) -> float:
        return self._rto()

    # -- its own ------------------------------------------------------------------------

    def _reset(self, state: State, next_length: int, next_seq: int) -> None:
        self.state, self.next = state, next_length
        if state is not State.SNAPSHOT:
            self.snapshot = None  # an install ended (or was given up): its copy of the keys goes
        self.flights.clear()
        self._flight_bytes = 0
        self.floor_seq = next_seq

    def sent_after(self, seq: int) -> int | None:
        """Where the entries of frame ``seq`` went (its prev_length), while it is in flight."""
        flight = self._flight(seq)
        return flight.prev_length if flight is not None else None

    def _flight(self, seq: int) -> Flight | None:
        return next((flight for flight in self.flights if flight.seq == seq), None)

    def _free(self, length: float) -> None:
        while self.flights and self.flights[0].end <= length:
            self._flight_bytes -= self.flights.popleft().size

    def _sample(self, rtt: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt

    def _rto(self) -> float:
        base = INITIAL_RTO_S if self._srtt is None else self._srtt + max(MIN_RTO_S, 4 * self._rttvar)
        return min(self._max_rto, base * 2 ** min(self._timeouts, 8))
