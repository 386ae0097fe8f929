"""The primary's replication engine: one DEALER per secondary, one thread for all.

The ``replicator-io`` thread creates, uses and closes every DEALER; no other
thread touches one. Waitress request threads talk to it through three
thread-safe doors:

- ``notify_appended()`` after appending to the OrderedLog: a wake-up byte on
  a socketpair (Waitress's trigger idea). The I/O thread then reads the new
  entries straight from the log, so a message is never copied per request.
- ``register_waiter(seq, needed)``: an AckWaiter goes through a queue to the
  I/O thread, which alone knows who holds what; the caller waits on it.
- ``view()``: every secondary's status and health at one moment, for
  /health and the quorum check alike.

The loop (shared.io_thread) polls the DEALERs and its wake-up with a timeout
that runs to the next timer (a heartbeat, a resend, a health change), so
nothing sleeps. Each pass it sends every secondary whatever is new, in batches (one frame carries
up to 1,000 entries), and resends what is overdue. A secondary that stops answering is
declared Unhealthy by missed heartbeats; it then gets only PINGs, until it
answers and is caught up from the length it reports.

DEALERs are set to IMMEDIATE: nothing queues for a secondary that is not
connected; a send then fails at once with EAGAIN, the socket is watched for
POLLOUT, and sending resumes the moment the connection is up.
"""

from __future__ import annotations

import logging
import queue
import time
import uuid
from dataclasses import dataclass

import zmq

from primary.acks import AckWaiter
from primary.config import ReplicationSettings, SecondarySpec
from primary.follower import Follower, FollowerStatus, Health, Send
from shared import protocol
from shared.io_thread import IoThread, receive_batch
from shared.ordered_log import OrderedLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicationView:
    """The secondaries' statuses and health, judged at one moment ``now``."""

    now: float
    secondaries: list[tuple[FollowerStatus, Health]]

    @property
    def available_nodes(self) -> int:
        """Nodes counting toward the write quorum: the primary, and every
        secondary not declared Unhealthy (a Suspected one still counts, and
        one not heard from yet gets ``unhealthy_after`` heartbeats of grace)."""
        return 1 + sum(health is not Health.UNHEALTHY for _, health in self.secondaries)


class Replicator(IoThread):
    def __init__(
        self,
        ctx: zmq.Context,
        store: OrderedLog,
        secondaries: tuple[SecondarySpec, ...] | list[SecondarySpec],
        settings: ReplicationSettings = ReplicationSettings(),
    ) -> None:
        super().__init__("replicator-io")
        self._ctx = ctx
        self._store = store
        self._settings = settings
        #: Names this run of the primary; secondaries reset when it changes.
        self.epoch = uuid.uuid4().hex
        now = time.monotonic()
        self._followers = [Follower(s.name, s.endpoint, settings, now) for s in secondaries]
        self._waiters: dict[int, list[AckWaiter]] = {}
        self._new_waiters: queue.SimpleQueue[AckWaiter] = queue.SimpleQueue()
        self._links: dict[zmq.Socket, Follower] = {}
        self._poller: zmq.Poller | None = None
        self._blocked: set[zmq.Socket] = set()  # DEALERs waiting for POLLOUT
        self._logged_health = {f.name: Health.UNKNOWN for f in self._followers}
        self._next_heartbeat = now
        #: When the I/O thread last went round its loop; written by it alone.
        self._last_pass = now

    # -- any thread -----------------------------------------------------------

    def notify_appended(self) -> None:
        """Tell the I/O thread the log grew. Cheap: at most one byte per I/O pass."""
        self.wake()

    def register_waiter(self, seq: int, needed: int) -> AckWaiter:
        """Start counting secondary ACKs of ``seq``; wait on the returned waiter."""
        waiter = AckWaiter(seq, needed)
        self._new_waiters.put(waiter)
        self.wake()
        if self.stopping:
            waiter.abort()  # the I/O thread may be gone and never see it
        return waiter

    def view(self) -> ReplicationView:
        """Every secondary's status and health at one moment: what /health
        shows and what the quorum check counts, so the two never disagree."""
        now = self._observed_now()
        return ReplicationView(
            now, [(status, status.health(now, self._settings)) for status in (f.status for f in self._followers)]
        )

    def _observed_now(self) -> float:
        """The latest moment the I/O thread can vouch for, to judge silence by.

        A secondary's replies wait in its socket until the I/O thread reads
        them. If that thread is starved of the GIL, silence measured against
        the clock would declare healthy secondaries dead (and the primary
        read-only); measured against the loop, it cannot. An idle loop still
        wakes at every heartbeat, hence the one interval of slack."""
        return min(time.monotonic(), self._last_pass + self._settings.heartbeat_interval)

    # -- replicator-io thread -------------------------------------------------

    def _open(self, poller: zmq.Poller) -> None:
        self._poller = poller
        self._links = {self._open_dealer(f): f for f in self._followers}
        for sock in self._links:
            poller.register(sock, zmq.POLLIN)

    def _pass(self, events: dict) -> None:
        poller, links = self._poller, self._links
        self._take_new_waiters()
        for sock, follower in links.items():
            flags = events.get(sock, 0)
            if flags & zmq.POLLIN:
                receive_batch(sock, lambda frames, f=follower: self._receive(frames, f))
            if flags & zmq.POLLOUT:
                self._unblock(poller, sock)
        now = self._last_pass = time.monotonic()
        for follower in self._followers:
            self._log_health_change(follower, now)
        if now >= self._next_heartbeat:
            self._heartbeat(poller, links)
            self._next_heartbeat = now + self._settings.heartbeat_interval
        for sock, follower in links.items():
            if sock not in self._blocked:
                self._pump(poller, sock, follower)

    def _close(self) -> None:
        # From now on register_waiter aborts at once (``stopping`` is set).
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.abort()
        while not self._new_waiters.empty():
            self._new_waiters.get().abort()
        for sock in self._links:
            sock.close(linger=0)

    def _open_dealer(self, follower: Follower) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(follower.endpoint)  # lazy: the secondary may come up later
        return sock

    def _next_deadline(self) -> float:
        """The next timer: a heartbeat, a resend, or a health change to log."""
        now = time.monotonic()
        deadlines = [self._next_heartbeat]
        for sock, follower in self._links.items():
            deadlines.append(follower.next_health_change(now))
            if sock not in self._blocked:
                deadlines.append(follower.retry_deadline(now))
        return min(d for d in deadlines if d is not None)

    def _take_new_waiters(self) -> None:
        while not self._new_waiters.empty():
            waiter = self._new_waiters.get()
            holders = [f.name for f in self._followers if f.holds(waiter.seq)]
            if not waiter.record(holders):
                self._waiters.setdefault(waiter.seq, []).append(waiter)

    def _receive(self, frames: list[bytes], follower: Follower) -> None:
        try:
            message = protocol.decode(frames)
        except protocol.ProtocolError as exc:
            log.warning("dropped a bad frame from %s (%d parts): %s", follower.name, len(frames), exc)
            return
        if isinstance(message, (protocol.Ack, protocol.Pong)) and (
            message.status.length > len(self._store)
        ):
            # Within one epoch a secondary holds only what this primary sent.
            log.warning("dropped a bad frame from %s: it claims %d messages, the primary has %d",
                        follower.name, message.status.length, len(self._store))
            return
        now = time.monotonic()
        if isinstance(message, protocol.Ack):
            progress = follower.on_ack(message, now)
            if progress is None:
                log.debug("ignored a late or unknown ACK %s from %s", message.corr_id, follower.name)
        elif isinstance(message, protocol.Pong):
            progress = follower.on_status(message.status, now)
        else:
            log.warning("dropped a %s frame from %s: only ACK and PONG are expected",
                        type(message).__name__.upper(), follower.name)
            return
        if progress:
            self._credit(follower)
        follower.note_catch_up(len(self._store), now)

    def _credit(self, follower: Follower) -> None:
        """Give waiting appends the ACK of a secondary whose holdings grew."""
        self._keep_waiters(
            [seq for seq in self._waiters if follower.holds(seq)],
            lambda waiter: not waiter.abandoned and not waiter.record([follower.name]),
        )

    def _keep_waiters(self, seqs: list[int], still_waiting) -> None:
        """Keep, for each of ``seqs``, only the waiters for which ``still_waiting`` holds."""
        for seq in seqs:
            remaining = [waiter for waiter in self._waiters[seq] if still_waiting(waiter)]
            if remaining:
                self._waiters[seq] = remaining
            else:
                del self._waiters[seq]

    def _heartbeat(self, poller: zmq.Poller, links: dict) -> None:
        for sock in links:
            self._send(poller, sock, protocol.encode_ping(protocol.new_corr_id(), self.epoch))
        # Requests that timed out leave their waiters behind; sweep them up.
        self._keep_waiters(list(self._waiters), lambda waiter: not waiter.abandoned)

    def _log_health_change(self, follower: Follower, now: float) -> None:
        health = follower.health(now)
        if health is self._logged_health[follower.name]:
            return
        self._logged_health[follower.name] = health
        if health in (Health.SUSPECTED, Health.UNHEALTHY):
            log.warning("%s is %s: missed heartbeats", follower.name, health.value)
        else:
            log.info("%s is %s", follower.name, health.value)

    def _pump(self, poller: zmq.Poller, sock: zmq.Socket, follower: Follower) -> None:
        """Send this follower everything due, until nothing is or the socket is full."""
        log_length = len(self._store)
        while True:
            now = time.monotonic()
            send = follower.next_send(log_length, now)
            if send is None:
                return
            entries = self._batch(send)
            frames = protocol.encode_append(send.corr_id, self.epoch, send.start, entries)
            if not self._send(poller, sock, frames):
                return
            follower.sent(send, send.start + len(entries), now)

    def _batch(self, send: Send) -> list[bytes]:
        entries = self._store.entries(send.start, send.stop)
        size = 0
        for count, entry in enumerate(entries):
            size += len(entry)
            if size > self._settings.batch_max_bytes and count > 0:
                return entries[:count]
        return entries

    def _send(self, poller: zmq.Poller, sock: zmq.Socket, frames: list[bytes]) -> bool:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
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
        self._send(poller, sock, protocol.encode_ping(protocol.new_corr_id(), self.epoch))
