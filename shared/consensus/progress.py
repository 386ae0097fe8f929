"""What the primary knows about one secondary, and what to send it next.

This module is sans-I/O: a Progress (as etcd's raft names it) never touches
a socket or a clock of its own, and draws its jitter from the
``random.Random`` it is given. The replicator's I/O thread feeds it replies and the time, asks it what
to send, and does the sending. That keeps the replication rules (pipelining,
retries, catch-up, health) testable without sockets.

Thread: the replicator's I/O thread only, except ``status``, an immutable
snapshot that the I/O thread republishes and any thread may read.

The bookkeeping, per secondary:

    seqs  0 ......... acked_length ........... next_seq ........ log length
          |  held, contiguous  | held or in flight  |  not sent yet   |

- ``acked_length``: the secondary holds every seq below it (its own report).
- ``held_above``: seqs at or past acked_length that it acknowledged singly
  (random delays store them out of order). They are not resent, but do not
  count towards a write concern until the gap below them is filled.
- flights: batches of seqs sent and not yet all acknowledged. A flight is
  resent when its retry time passes; the timeout starts from this
  secondary's measured round trip (RFC 6298) and doubles, with jitter, with
  each resend of the flight, up to ``retry_backoff_max``.
- Each attempt of a flight goes out under a corr_id of its own, and an ACK
  of any attempt counts. So every ACK measures a round trip exactly, resends
  included (Karn's ambiguity, which TCP answers with timestamps, never
  arises), and a secondary slower than the first guess is learned at once.
- A new incarnation in a reply means the secondary lost its state: forget
  the flights and resend from the length it reports ("rewind"). The same
  happens when an Unhealthy secondary answers again, and when it reports
  fewer messages than it had acknowledged (repair).
- Only replies under the primary's own history and run (shared.consensus.history)
  say what a secondary holds. It is sent nothing until its first such reply
  has told its length, so a secondary that kept its log across a restart is
  resent only what it lacks. One that holds another history, or follows a
  newer run, is diverged: kept as it is, never written to, and not counted.
- ``frame_limit``: the largest frame it announced it accepts. A message no
  frame within it carries makes it unwritable, like a diverged one (``cannot_carry``).
- One that claims more of this run than the primary ever appended holds an
  entry the primary never sent (a forged frame, in plain mode), and this
  protocol cannot tell which of its entries is false: it is diverged, not
  written to nor counted, until it starts again without its state (a new
  incarnation; ``claims_unsent``). The failover mode finds and replaces such
  an entry by itself (shared.consensus.raft_log's checksums).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from shared.consensus import messages
from shared.consensus.health import Health, ProgressStatus, ReplicationSettings, health_at
from shared.consensus.history import Run

#: The name its lines carried before shared/ was grouped by concern: log
#: filters and alerts key on it, so it stays.
log = logging.getLogger("primary.follower")

#: Retry timeout before any round trip has been measured, and the least
#: margin it keeps above the measured round trip.
INITIAL_RETRY_S = 1.0
MIN_RETRY_S = 0.2
#: Doublings of the retry timeout are counted up to here (the cap applies anyway).
MAX_BACKOFF_EXPONENT = 16


@dataclass(eq=False)
class Flight:
    start: int  # first seq not yet known to be held; advances as ACKs arrive
    stop: int
    sent_at: float  # of the latest attempt
    retry_at: float
    resends: int = 0
    corr_ids: list[str] = field(default_factory=list)  # one per attempt


@dataclass
class CatchUp:
    """A catch-up in progress: since when, from which length, up to which."""

    started: float
    start_length: int
    target: int | None = None  # the log's length when the primary first looks


@dataclass(frozen=True)
class Send:
    """One APPEND to put on the wire: seqs [start, stop) under corr_id.
    ``flight`` is the flight it resends, or None for new entries."""

    corr_id: str
    start: int
    stop: int
    flight: Flight | None = None


class Progress:
    def __init__(
        self, name: str, endpoint: str, settings: ReplicationSettings, now: float,
        rng: random.Random,
    ) -> None:
        self.name = name
        self._rng = rng
        self.endpoint = endpoint
        self._settings = settings
        self._watching_since = now
        self._last_heard: float | None = None
        self._incarnation: str | None = None
        self._retired_incarnations: set[str] = set()
        self.acked_length = 0
        self._held_above: set[int] = set()
        self._next_seq = 0
        self._flights: list[Flight] = []
        self._attempts: dict[str, tuple[Flight, float]] = {}  # corr_id -> (flight, sent at)
        self._catch_up: CatchUp | None = None
        # The primary's history and run; only replies under them say what it holds.
        self._history: str | None = None
        self._run: Run | None = None
        self._synced = False  # a reply under this run has told its length
        self._diverged: str | None = None
        #: The incarnation that claimed entries this primary never sent, and what it claimed.
        self._distrusted: tuple[str, str] | None = None
        #: None until it says (a secondary of an older version never does).
        self.frame_limit: int | None = None
        self._oversized: str | None = None  # why no frame within frame_limit can carry what is next
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._resends = 0
        self.status = self._snapshot()

    # -- queries --------------------------------------------------------------

    def holds(self, seq: int) -> bool:
        """Whether it counts as holding ``seq`` towards a write concern: only
        what it shows, its contiguous prefix. An entry it stored past a gap is
        not counted until the gap is filled, so a secondary that shows nothing
        never counts as holding anything."""
        return seq < self.acked_length

    def _stored(self, seq: int) -> bool:
        """Whether it need not be sent ``seq`` again: shown, or stored past a gap."""
        return seq < self.acked_length or seq in self._held_above

    def health(self, now: float) -> Health:
        if self._diverged is not None or self._oversized is not None or self._distrust() is not None:
            return Health.DIVERGED
        return health_at(now, self._last_heard, self._watching_since, self._settings)

    def _writable(self, now: float) -> bool:
        """Whether to send it entries: it follows this run, is not diverged,
        and has not been declared Unhealthy (then only heartbeats probe it)."""
        return self._synced and self.health(now) not in (Health.UNHEALTHY, Health.DIVERGED)

    def next_health_change(self, now: float) -> float | None:
        """When silence would next change this secondary's health, if it stays silent."""
        interval = self._settings.heartbeat_interval
        if self._last_heard is None:
            thresholds = [self._watching_since + self._settings.unhealthy_after * interval]
        else:
            thresholds = [self._last_heard + beats * interval
                          for beats in (self._settings.suspect_after, self._settings.unhealthy_after)]
        return min((t for t in thresholds if t > now), default=None)

    def retry_deadline(self, now: float) -> float | None:
        """When the earliest flight is due for a resend, if any is to be resent."""
        if not self._writable(now):
            return None
        return min((f.retry_at for f in self._flights), default=None)

    # -- what to send ---------------------------------------------------------

    def follow_run(self, history: str, run: Run) -> None:
        """The primary's run starts: what it holds counts from its first reply
        under that run; until then it is sent nothing."""
        self._history, self._run = history, run
        self._synced = False
        self._rewind(0)
        self._publish()

    def next_send(self, log_length: int, now: float) -> Send | None:
        """The next APPEND to send, or None. Commit it with ``sent`` once on the wire."""
        if not self._writable(now):
            return None
        for flight in self._flights:
            if flight.retry_at <= now:
                return Send(messages.new_corr_id(), flight.start, flight.stop, flight)
        if len(self._flights) >= self._settings.max_flights or self._next_seq >= log_length:
            return None
        stop = min(log_length, self._next_seq + self._settings.batch_max_entries)
        return Send(messages.new_corr_id(), self._next_seq, stop)

    def sent(self, send: Send, stop: int, now: float) -> None:
        """Record that seqs [send.start, stop) went out under send.corr_id."""
        flight = send.flight
        if flight is None:
            flight = Flight(send.start, stop, now, now)
            self._flights.append(flight)
            self._next_seq = stop
        else:
            flight.resends += 1
            self._resends += 1
            # INFO, not WARNING: a secondary with a REPLICATION_DELAY longer
            # than the first guess of its round trip is resent to once.
            log.info(
                "resending seqs %d..%d to %s (no ACK after %.2fs)",
                flight.start, flight.stop - 1, self.name, now - flight.sent_at,
            )
            self._publish()  # for /metrics; resends are rare, new batches are not
        flight.sent_at = now
        flight.retry_at = now + self._retry_timeout(flight.resends)
        flight.corr_ids.append(send.corr_id)
        self._attempts[send.corr_id] = (flight, now)

    def cannot_carry(self, seq: int, frame_bytes: int) -> None:
        """Message ``seq`` alone needs a ``frame_bytes`` frame, over its
        frame_limit: write to it no more, until it announces a larger one."""
        self._oversized = (f"message id {seq} needs a {frame_bytes}-byte frame, "
                           f"over the {self.frame_limit} bytes it accepts")
        log.error("%s is not written to: %s; set the same MAX_MESSAGE_BYTES on every node",
                  self.name, self._oversized)
        self._publish()

    # -- what the secondary said ---------------------------------------------

    def on_ack(self, ack: messages.Ack, now: float) -> bool | None:
        """Apply an ACK. None if its corr_id is unknown (late or bogus): it is ignored.
        Otherwise True if the secondary now shows seqs it did not before."""
        attempt = self._attempts.get(ack.corr_id)
        if attempt is None or ack.status.incarnation in self._retired_incarnations:
            return None
        flight, sent_at = attempt
        self._sample_round_trip(now - sent_at)
        confirmed = [
            seq
            for start, stop in ack.acked
            for seq in range(max(start, flight.start), min(stop, flight.stop))
        ]
        progress = self._apply_status(ack.status, now)
        for seq in confirmed:
            if not self._stored(seq):
                self._held_above.add(seq)
        if flight in self._flights:  # a restart may have just dropped it
            self._advance(flight)
        self._publish()
        return progress

    def on_status(self, status: messages.Status, now: float) -> bool:
        """Apply the status every reply carries. True if holdings grew."""
        grew = self._apply_status(status, now)
        self._publish()
        return grew

    # -- internals ------------------------------------------------------------

    def _apply_status(self, status: messages.Status, now: float) -> bool:
        if status.incarnation in self._retired_incarnations:
            return False  # a reply that outlived a restart, held back on the way
        was_unhealthy = self.health(now) is Health.UNHEALTHY
        self._last_heard = now
        if status.frame_limit != self.frame_limit:
            self.frame_limit = status.frame_limit
            if self._oversized is not None:
                self._oversized = None
                log.info("%s now accepts frames of up to %s: writing to it again", self.name,
                         "any size" if status.frame_limit is None else f"{status.frame_limit} bytes")
        self._judge(status)
        if self._run is None or (status.history, status.run) != (self._history, self._run):
            return False  # heard, but what it holds is not yet of this run
        first_reply = not self._synced
        if first_reply:
            self._synced = True
            self._incarnation = status.incarnation
        restarted = self._incarnation != status.incarnation
        if first_reply or restarted or was_unhealthy:
            self._catch_up = CatchUp(now, max(status.length, self.acked_length))
        if first_reply:
            self._rewind(status.length)
        elif restarted:
            log.warning(
                "%s restarted (it holds %d messages): resending from there",
                self.name, status.length,
            )
            self._retired_incarnations.add(self._incarnation)
            self._rewind(status.length)
        elif was_unhealthy:
            log.info("%s answers again: resending from %d", self.name, status.length)
            self._rewind(max(status.length, self.acked_length))
        elif status.length < self.acked_length:
            log.warning("%s reports %d messages, fewer than the %d it acknowledged: "
                        "resending from there", self.name, status.length, self.acked_length)
            self._rewind(status.length)
        self._incarnation = status.incarnation
        grew = status.length > self.acked_length
        if grew:
            self.acked_length = status.length
            self._held_above = {s for s in self._held_above if s >= status.length}
            for flight in list(self._flights):
                self._advance(flight)
        return grew

    def _judge(self, status: messages.Status) -> None:
        """Mark it diverged if it holds another history or follows a newer run;
        log the change once. Judged only once this primary has a run."""
        if self._run is None:
            return
        reason = None
        if status.history is not None and status.history != self._history:
            reason = f"it holds another history ({status.history}, {status.length} messages)"
        elif status.run is not None and status.run.number > self._run.number:
            reason = f"it follows a newer primary run ({status.run.number})"
        if reason == self._diverged:
            return
        self._diverged = reason
        if reason is None:
            log.info("%s follows this primary again", self.name)
        else:
            log.error("%s is diverged: %s. It is kept as it is and not written to; to re-join "
                      "it, empty its DATA_DIR or restart it in memory", self.name, reason)

    def claims_unsent(self, incarnation: str, length: int, log_length: int) -> None:
        """Its reply under this run says it holds ``length`` messages, more than
        the ``log_length`` this primary appended: see the module's docstring."""
        if self._distrusted is not None and self._distrusted[0] == incarnation:
            return
        reason = (f"it claims {length} messages of this run, the primary has {log_length}: it holds "
                  "an entry this primary never sent")
        self._distrusted = (incarnation, reason)
        log.error("%s is diverged: %s. It is not written to nor counted; to re-join it, empty its "
                  "DATA_DIR or restart it in memory", self.name, reason)
        self._publish()

    def _distrust(self) -> str | None:
        """Why its state cannot be trusted, while it is the incarnation that claimed too much."""
        if self._distrusted is None or self._distrusted[0] != self._incarnation:
            return None
        return self._distrusted[1]

    def excuse_silence(self, seconds: float, now: float) -> None:
        """Do not count ``seconds`` of silence: the primary could not listen."""
        if self._last_heard is not None:
            self._last_heard = min(now, self._last_heard + seconds)
        self._watching_since = min(now, self._watching_since + seconds)
        self._publish()

    def note_catch_up(self, log_length: int, now: float) -> None:
        """Log the end of a catch-up: after a restart, a return from Unhealthy,
        or the first reply, once the secondary holds what the log held then."""
        catch_up = self._catch_up
        if catch_up is None:
            return
        if catch_up.target is None:
            catch_up.target = log_length
        if self.acked_length < catch_up.target:
            return
        self._catch_up = None
        if catch_up.target > catch_up.start_length:
            log.info("%s caught up: %d messages in %.2fs", self.name,
                     catch_up.target - catch_up.start_length, now - catch_up.started)

    def _advance(self, flight: Flight) -> None:
        while flight.start < flight.stop and self._stored(flight.start):
            flight.start += 1
        if flight.start == flight.stop:
            self._flights.remove(flight)
            for corr_id in flight.corr_ids:
                del self._attempts[corr_id]

    def _rewind(self, length: int) -> None:
        self.acked_length = length
        self._held_above.clear()
        self._flights.clear()
        self._attempts.clear()
        self._next_seq = length

    def _sample_round_trip(self, rtt: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt

    def _retry_timeout(self, resends: int) -> float:
        if self._srtt is None:
            base = INITIAL_RETRY_S
        else:
            # A steady round trip drives rttvar to 0; the margin keeps the
            # timeout clear of it, so a slow secondary is not resent to.
            base = self._srtt + max(MIN_RETRY_S, 4 * self._rttvar)
        # Doubling per resend of this flight: each loss costs one timeout, and
        # only a flight that keeps failing waits long.
        backoff = 2 ** min(resends, MAX_BACKOFF_EXPONENT)
        timeout = min(self._settings.retry_backoff_max, base * backoff)
        # Jitter, upwards only, keeps the resends of many flights apart.
        return timeout * self._rng.uniform(1.0, 1.25)

    def _publish(self) -> None:
        self.status = self._snapshot()

    def _snapshot(self) -> ProgressStatus:
        return ProgressStatus(
            self.name,
            self.endpoint,
            self._watching_since,
            self._last_heard,
            self.acked_length,
            self._incarnation,
            self._diverged or self._oversized or self._distrust(),
            self._resends,
        )
