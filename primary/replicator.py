"""The primary's replication engine: one DEALER per secondary, one thread for all.

The ``replicator-io`` thread creates, uses and closes every DEALER, and its
monitor (shared.wire.links, which reopens a link libzmq gave up on); no other
thread touches one. Waitress request threads talk to it through thread-safe
doors:

- ``notify_appended()`` after appending to the log: a wake-up byte on a
  socketpair (shared.wire.io_thread). The I/O thread then reads the new entries
  straight from the log, so a message is never copied per request.
- ``register_waiter(seq, needed)``: an AckWaiter goes through a queue to the
  I/O thread, which alone knows who holds what; the caller waits on it.
- ``view()``: every secondary's status and health at one moment, for
  /health and the quorum check alike; ``wait_recovered``, ``recovering``,
  ``history`` and ``storage_error`` for the appender and /health.

The loop polls the DEALERs, their monitors and its wake-up with a timeout that runs to the
next timer (a heartbeat, a resend, a health change, a recovery step), so
nothing sleeps. Each pass it:

1. reads replies, new waiters, and the links' monitor events (shared.wire.links);
2. moves recovery on, while the primary is taking over a log (shared.consensus.recovery);
3. flushes the log: with DATA_DIR, everything appended since the last pass
   is committed in one transaction (group commit) and only then becomes
   visible, counts as held by the primary, and is replicated. So nothing a
   reader saw or a secondary holds can vanish in a crash of the primary;
4. sends every secondary whatever is new, in batches, and resends what is
   overdue. A secondary that stops answering is declared Unhealthy by
   missed heartbeats; it then gets only PINGs, until it answers and is
   caught up from the length it reports. At a heartbeat, a link that libzmq
   ended for good is reopened.

**History and run** (shared.consensus.history): a primary that keeps its log resumes
the history it stored, under a new run; one that starts empty recovers it
from its secondaries first; a new cluster mints its history on the first
append. Every APPEND and PING names them.

DEALERs are set to IMMEDIATE: nothing queues for a secondary that is not
connected; a send then fails at once with EAGAIN, the socket is watched for
POLLOUT, and sending resumes the moment the connection is up.

**Frame limits.** An APPEND stays within the largest frame its secondary
announced (``Progress.frame_limit``): a batch is cut short to fit, and a
message that fits no frame makes the secondary unwritable, with one ERROR.
A FETCH announces this node's limit in turn.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time

import zmq

from primary.acks import STORAGE, AckWaiter
from primary.config import ReplicationSettings, SecondarySpec
from shared.wire.links import Links
from primary.waiters import Waiters
from shared.consensus import history as hist
from shared.consensus.health import Health
from shared.consensus.progress import Progress, Send
from shared.consensus.quorum import ReplicationView
from shared.consensus.recovery import Recovery
from shared.log.ordered_log import OrderedLog
from shared.log.sqlite_store import StoreError
from shared.wire import protocol
from shared.wire.bad_frames import BadFrameLog
from shared.wire.curve import PLAIN, PlainChannel
from shared.wire.io_thread import IoThread, receive_batch

log = logging.getLogger(__name__)


class Replicator(IoThread):
    def __init__(
        self,
        ctx: zmq.Context,
        store: OrderedLog,
        secondaries: tuple[SecondarySpec, ...] | list[SecondarySpec],
        settings: ReplicationSettings = ReplicationSettings(),
        max_message_bytes: int = 1 << 20,
        channel: PlainChannel = PLAIN,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__("replicator-io")
        self._ctx = ctx
        self._channel = channel  # plain, or CURVE from REPLICATION_KEYS_DIR
        self._store = store
        self._settings = settings
        self._frame_limit = protocol.frame_limit(max_message_bytes)
        now = time.monotonic()
        #: Back-off jitter for every peer; seeded by tests, from the OS otherwise.
        rng = rng if rng is not None else random.Random()
        self._peers = [Progress(s.name, s.endpoint, settings, now, rng) for s in secondaries]
        self._view = ReplicationView.judge(self._peers, now)
        self._leader = protocol.Leader(None, ())
        self._recovery: Recovery | None = None
        self._recovered = threading.Event()
        self._highest_run = 0
        #: Why the last flush failed, while it keeps failing; for the appender.
        self.storage_error: str | None = None
        self._waiters = Waiters()
        self._links: Links | None = None  # opened on the I/O thread
        self._bad_frames = BadFrameLog(log)
        self._poller: zmq.Poller | None = None
        self._blocked: set[zmq.Socket] = set()  # DEALERs waiting for POLLOUT
        self._logged_health = {f.name: Health.UNKNOWN for f in self._peers}
        self._next_heartbeat = now
        #: When the I/O thread last went round its loop; written by it alone.
        self._last_pass = now

    # -- any thread -----------------------------------------------------------

    @property
    def history(self) -> str | None:
        return self._leader.history

    @property
    def run(self) -> list | None:
        """This primary's run as [number, token], once it leads a history."""
        run = self._leader.run
        return None if run is None else list(run)

    @property
    def bad_frames(self) -> int:
        """Frames from secondaries dropped since start. An unsynchronised reading, for /health."""
        return self._bad_frames.count

    @property
    def recovering(self) -> bool:
        return not self._recovered.is_set()

    def wait_recovered(self, timeout: float | None) -> bool:
        """Block until the primary has taken over its log; False on timeout."""
        return self._recovered.wait(timeout)

    def notify_appended(self) -> None:
        """Tell the I/O thread the log grew. Cheap: at most one byte per I/O pass."""
        self.wake()

    def register_waiter(self, seq: int, needed: int) -> AckWaiter:
        """Start counting ACKs of ``seq``; wait on the returned waiter. With
        DATA_DIR it also waits for the primary's own copy to be committed."""
        waiter = AckWaiter(seq, needed, local_pending=self._store.durable)
        self._waiters.submit(waiter)
        self.wake()
        if self.stopping:
            waiter.abort()  # the I/O thread may be gone and never see it
        return waiter

    def view(self) -> ReplicationView:
        """Every secondary's status and health as the I/O thread judged them
        at the end of its last pass: what /health shows and what the quorum
        check of every append counts, so the two never disagree, and reading
        it costs nothing.

        Judged by the I/O thread, not against the reader's clock: a
        secondary's replies wait in its socket until that thread reads them,
        so if it were starved of the GIL, silence measured by the clock would
        declare healthy secondaries dead (and the primary read-only). The loop
        passes at every heartbeat and whenever silence would change a
        secondary's health, so the view is never older than either."""
        return self._view

    # -- replicator-io thread -------------------------------------------------

    def _open(self, poller: zmq.Poller) -> None:
        history = self._store.meta.get("history")
        if history is not None:
            # It kept its log: a new run continues it at the next id.
            segments = hist.from_wire(self._store.meta["segments"])
            run = hist.next_run(segments[-1].number)
            self._start_run(history, hist.start_run(segments, run, self._store.appended()))
            self._store.flush()  # the new run is on disk before anyone hears of it
            self._recovered.set()
        elif self._peers:
            self._recovery = Recovery([f.name for f in self._peers],
                                      self._settings.heartbeat_interval,
                                      self._settings.recovery_timeout, time.monotonic())
        else:
            self._recovered.set()
        self._poller = poller
        self._links = Links(self._ctx, self._channel, self._frame_limit, poller)
        for peer in self._peers:
            self._links.open(peer)

    def _pass(self, events: dict) -> None:
        poller, links = self._poller, self._links.dealers
        self._waiters.admit(lambda seq: [f.name for f in self._peers if f.holds(seq)])
        for sock, peer in links.items():
            flags = events.get(sock, 0)
            if flags & zmq.POLLIN:
                receive_batch(sock, lambda frames, f=peer: self._receive(frames, f))
            if flags & zmq.POLLOUT:
                self._unblock(poller, sock)
        now = time.monotonic()
        self._links.watch(events, now)
        self._excuse_own_stall(now)
        self._last_pass = now
        if self._recovery is not None:
            self._recover(now)
        elif self._leader.history is None and self._store.appended():
            self._start_run(hist.new_history_id(),
                            hist.start_run((), hist.next_run(self._highest_run), 0))
        self._flush()
        for peer in self._peers:
            self._log_health_change(peer, now)
        if now >= self._next_heartbeat:
            # A link lost for a heartbeat interval gets a new DEALER, which this beat pings.
            closed = self._links.reopen_lost(now, self._settings.heartbeat_interval)
            self._blocked.difference_update(closed)
            self._heartbeat(poller, links)
            self._next_heartbeat = now + self._settings.heartbeat_interval
        for sock, peer in links.items():
            if sock not in self._blocked:
                self._pump(poller, sock, peer)
        self._view = ReplicationView.judge(self._peers, now)

    def _close(self) -> None:
        self._store.release_readers()  # tailing readers are answered at once
        # From now on register_waiter aborts at once (``stopping`` is set).
        self._waiters.abort_all()
        self._links.close_all()

    def _next_deadline(self) -> float:
        """The next timer: a heartbeat, a resend, a health change to log, a recovery step."""
        now = time.monotonic()
        deadlines = [self._next_heartbeat]
        if self._recovery is not None:
            deadlines.append(self._recovery.deadline(now))
        for sock, peer in self._links.dealers.items():
            deadlines.append(peer.next_health_change(now))
            if sock not in self._blocked:
                deadlines.append(peer.retry_deadline(now))
        return min(d for d in deadlines if d is not None)

    def _excuse_own_stall(self, now: float) -> None:
        """After this thread itself was stalled (the process paused, or starved
        of the CPU), the secondaries' replies may not even be readable yet:
        zmq's own thread stalled too. Their silence meanwhile proves nothing,
        so it does not count; the heartbeat that follows tells the truth."""
        stalled = now - self._last_pass - self._settings.heartbeat_interval
        if stalled > self._settings.heartbeat_interval:  # an idle loop wakes every beat
            for peer in self._peers:
                peer.excuse_silence(stalled, now)
            self._next_heartbeat = now

    # -- history, run and recovery ----------------------------------------------

    def _start_run(self, history: str, segments: hist.Segments) -> None:
        """Lead ``history`` under the run that ``segments`` ends with."""
        self._store.set_meta(history=history, segments=hist.to_wire(segments))
        self._leader = protocol.Leader(history, segments)
        run = segments[-1]
        for peer in self._peers:
            peer.follow_run(history, run.run)
        self._next_heartbeat = time.monotonic()  # tell every secondary at once
        log.info("leading history %s as run %d.%s from id %d", history, run.number, run.token, run.base)

    def _recover(self, now: float) -> None:
        recovery = self._recovery
        recovery.step(now)
        fetch = recovery.next_fetch(now)
        if fetch is not None:
            source, start = fetch
            sock = next(s for s, f in self._links.dealers.items() if f.name == source)
            corr_id = protocol.new_corr_id()
            if self._send(self._poller, sock, protocol.encode_fetch(corr_id, start, self._frame_limit)):
                recovery.sent_fetch(source, corr_id, now)
        if not recovery.done:
            return
        self._recovery = None
        outcome = recovery.outcome
        self._highest_run = outcome.highest_run
        if outcome.history is not None:
            run = hist.next_run(outcome.highest_run)
            self._start_run(outcome.history,
                            hist.start_run(outcome.segments, run, self._store.appended()))
        self._recovered.set()

    # -- the log's durability -------------------------------------------------------

    def _flush(self) -> None:
        """Commit what was appended; then the primary counts as holding it."""
        try:
            self._store.flush()
        except StoreError as exc:
            if self.storage_error is None:
                log.error("cannot store appends, answering 503 until writes succeed again: %s", exc)
            self.storage_error = str(exc)
            self._waiters.abort_local(STORAGE)
            return
        if self.storage_error is not None:
            log.info("storage accepts writes again")
            self.storage_error = None
        self._waiters.credit_local(len(self._store))

    # -- replies ----------------------------------------------------------------

    def _receive(self, parts: list[bytes], peer: Progress) -> None:
        try:
            message = protocol.decode(parts)
        except protocol.ProtocolError as exc:
            self._bad_frames.dropped(peer.name, "%d bytes: %s", sum(map(len, parts)), exc)
            return
        now = time.monotonic()
        if isinstance(message, protocol.Entries):
            if self._recovery is not None and self._recovery.on_entries(peer.name, message):
                for entry in message.entries:
                    self._store.append(entry)
            return
        if not isinstance(message, (protocol.Ack, protocol.Pong)):
            self._bad_frames.dropped(peer.name, "%s, but only ACK, PONG and ENTRIES are expected",
                                     type(message).__name__.upper())
            return
        status = message.status
        if status.run is not None and status.run == self._leader.run and status.length > len(self._store):
            # Under this run a secondary holds only what this primary sent.
            peer.claims_unsent(status.incarnation, status.length, len(self._store))
            self._bad_frames.dropped(peer.name, "it claims %d messages, the primary has %d",
                                     status.length, len(self._store))
            return
        if isinstance(message, protocol.Ack):
            progress = peer.on_ack(message, now)
            if progress is None:
                log.debug("ignored a late or unknown ACK %s from %s", message.corr_id, peer.name)
        else:
            if self._recovery is not None:
                self._recovery.on_pong(peer.name, message, now)
            progress = peer.on_status(status, now)
        if progress:
            self._waiters.credit(peer.name, peer.holds)
        peer.note_catch_up(len(self._store), now)

    def _heartbeat(self, poller: zmq.Poller, links: dict) -> None:
        for sock in links:
            self._send(poller, sock, protocol.encode_ping(protocol.new_corr_id(), self._leader))
        # Requests that timed out or were answered leave their waiters behind.
        self._waiters.sweep()

    def _log_health_change(self, peer: Progress, now: float) -> None:
        health = peer.health(now)
        if health is self._logged_health[peer.name]:
            return
        self._logged_health[peer.name] = health
        if health is Health.DIVERGED:
            return  # the peer said why, as an ERROR
        if health in (Health.SUSPECTED, Health.UNHEALTHY):
            log.warning("%s is %s: missed heartbeats", peer.name, health.value)
        else:
            log.info("%s is %s", peer.name, health.value)

    # -- sending ------------------------------------------------------------------

    def _pump(self, poller: zmq.Poller, sock: zmq.Socket, peer: Progress) -> None:
        """Send this peer everything due, until nothing is or the socket is full."""
        log_length = len(self._store)
        while True:
            now = time.monotonic()
            send = peer.next_send(log_length, now)
            if send is None:
                return
            entries = self._batch(send, peer.frame_limit)
            if not entries:  # its first entry alone is over the secondary's limit
                first = self._store.entries(send.start, send.start + 1)
                peer.cannot_carry(send.start, len(protocol.encode_append(
                    send.corr_id, self._leader, send.start, first)))
                return
            frame = protocol.encode_append(send.corr_id, self._leader, send.start, entries)
            if not self._send(poller, sock, frame):
                return
            peer.sent(send, send.start + len(entries), now)

    def _batch(self, send: Send, frame_limit: int | None) -> list[bytes]:
        """The entries of ``send`` for one APPEND: batch_max_bytes of them (at
        least one), cut short to a frame within ``frame_limit``; none if the
        first entry alone is over it."""
        entries = self._store.entries(send.start, send.stop)
        room = (math.inf if frame_limit is None
                else frame_limit - protocol.append_overhead(send.corr_id, self._leader, send.start))
        size = 0
        for count, entry in enumerate(entries):
            size += len(entry)
            # Each entry follows a separator (protocol.fitting): count + 1 of them so far.
            if (size > self._settings.batch_max_bytes and count > 0) or size + count + 1 > room:
                return entries[:count]
        return entries

    def _send(self, poller: zmq.Poller, sock: zmq.Socket, frame: bytes) -> bool:
        try:
            sock.send(frame, zmq.NOBLOCK)
            return True
        except zmq.Again:
            # Not connected (IMMEDIATE) or its queue is full: wait for POLLOUT.
            self._blocked.add(sock)
            poller.modify(sock, zmq.POLLIN | zmq.POLLOUT)
            return False

    def _unblock(self, poller: zmq.Poller, sock: zmq.Socket) -> None:
        self._blocked.discard(sock)
        poller.modify(sock, zmq.POLLIN)
        # A fresh connection: ask at once what it holds rather than at the next beat.
        self._send(poller, sock, protocol.encode_ping(protocol.new_corr_id(), self._leader))
