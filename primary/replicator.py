"""The primary's replication engine: one DEALER per secondary, one thread for all.

The ``replicator-io`` thread creates, uses and closes every DEALER; no other
thread touches one. Waitress request threads talk to it through three
thread-safe doors:

- ``notify_appended()`` after appending to the OrderedLog: a wake-up byte on
  a socketpair (Waitress's trigger idea). The I/O thread then reads the new
  entries straight from the log, so a message is never copied per request.
- ``register_waiter(seq, needed)``: an AckWaiter goes through a queue to the
  I/O thread, which alone knows who holds what; the caller waits on it.
- ``statuses()``: immutable per-secondary snapshots for /health and quorum.

The loop polls the DEALERs and the socketpair with a timeout that runs to the
next timer (a heartbeat, a resend, a health change), so nothing sleeps. Each
pass it sends every secondary whatever is new, in batches (one frame carries
up to 1,000 entries), and resends what is overdue. A secondary that stops answering is
declared Unhealthy by missed heartbeats; it then gets only PINGs, until it
answers and is caught up from the length it reports.

DEALERs are set to IMMEDIATE: nothing queues for a secondary that is not
connected; a send then fails at once with EAGAIN, the socket is watched for
POLLOUT, and sending resumes the moment the connection is up.
"""

from __future__ import annotations

import logging
import math
import queue
import socket
import threading
import time
import uuid

import zmq

from primary.acks import AckWaiter
from primary.config import ReplicationSettings, SecondarySpec
from primary.follower import Follower, FollowerStatus, Health, Send
from shared import protocol
from shared.ordered_log import OrderedLog

log = logging.getLogger(__name__)

#: Replies read from one DEALER per pass, so one busy link cannot starve the rest.
RECEIVE_BATCH = 256


class Replicator:
    def __init__(
        self,
        ctx: zmq.Context,
        store: OrderedLog,
        secondaries: tuple[SecondarySpec, ...] | list[SecondarySpec],
        settings: ReplicationSettings = ReplicationSettings(),
    ) -> None:
        self._ctx = ctx
        self._store = store
        self._settings = settings
        #: Names this run of the primary; secondaries reset when it changes.
        self.epoch = uuid.uuid4().hex
        now = time.monotonic()
        self._followers = [Follower(s.name, s.endpoint, settings, now) for s in secondaries]
        self._waiters: dict[int, list[AckWaiter]] = {}
        self._new_waiters: queue.SimpleQueue[AckWaiter] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_pending = False
        self._blocked: set[zmq.Socket] = set()  # DEALERs waiting for POLLOUT
        self._logged_health = {f.name: Health.UNKNOWN for f in self._followers}
        #: When the I/O thread last went round its loop; written by it alone.
        self._last_pass = now
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replicator-io", daemon=True)

    # -- any thread -----------------------------------------------------------

    @property
    def running(self) -> bool:
        """False once the I/O thread has stopped, or died of a bug."""
        return self._thread.is_alive() and not self._stopping.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the I/O thread; waiting requests are released as aborted."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake()
        self._thread.join(timeout)
        self._wake_r.close()
        self._wake_w.close()

    def notify_appended(self) -> None:
        """Tell the I/O thread the log grew. Cheap: at most one byte per I/O pass."""
        self._wake_soon()

    def register_waiter(self, seq: int, needed: int) -> AckWaiter:
        """Start counting secondary ACKs of ``seq``; wait on the returned waiter."""
        waiter = AckWaiter(seq, needed)
        self._new_waiters.put(waiter)
        self._wake_soon()
        if self._stopping.is_set():
            waiter.abort()  # the I/O thread may be gone and never see it
        return waiter

    def statuses(self) -> list[FollowerStatus]:
        return [f.status for f in self._followers]

    def observed_now(self) -> float:
        """The latest moment the I/O thread can vouch for, to judge silence by.

        A secondary's replies wait in its socket until the I/O thread reads
        them. If that thread is starved of the GIL, silence measured against
        the clock would declare healthy secondaries dead (and the primary
        read-only); measured against the loop, it cannot. An idle loop still
        wakes at every heartbeat, hence the one interval of slack."""
        return min(time.monotonic(), self._last_pass + self._settings.heartbeat_interval)

    def available_nodes(self) -> int:
        """Nodes counting toward the write quorum: the primary, and every
        secondary not declared Unhealthy (a Suspected one still counts, and
        one not heard from yet gets ``unhealthy_after`` heartbeats of grace)."""
        now = self.observed_now()
        return 1 + sum(
            status.health(now, self._settings) is not Health.UNHEALTHY for status in self.statuses()
        )

    def _wake_soon(self) -> None:
        # Unlocked on purpose: the I/O thread clears the flag before it reads
        # the log and the waiter queue, so whatever a caller put there before
        # finding the flag set is seen by that read; otherwise it sends a byte.
        if not self._wake_pending:
            self._wake()

    def _wake(self) -> None:
        self._wake_pending = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # stopped: the socketpair is closed and nobody is listening

    # -- replicator-io thread -------------------------------------------------

    def _run(self) -> None:
        links = {self._open_dealer(f): f for f in self._followers}
        poller = zmq.Poller()
        for sock in links:
            poller.register(sock, zmq.POLLIN)
        wake_fd = self._wake_r.fileno()
        poller.register(wake_fd, zmq.POLLIN)
        next_heartbeat = time.monotonic()
        try:
            while not self._stopping.is_set():
                events = dict(poller.poll(self._poll_timeout_ms(links, next_heartbeat)))
                if wake_fd in events:
                    self._drain_wake()
                self._take_new_waiters()
                for sock, follower in links.items():
                    flags = events.get(sock, 0)
                    if flags & zmq.POLLIN:
                        self._receive(sock, follower)
                    if flags & zmq.POLLOUT:
                        self._unblock(poller, sock)
                now = self._last_pass = time.monotonic()
                for follower in self._followers:
                    self._log_health_change(follower, now)
                if now >= next_heartbeat:
                    self._heartbeat(poller, links)
                    next_heartbeat = now + self._settings.heartbeat_interval
                for sock, follower in links.items():
                    if sock not in self._blocked:
                        self._pump(poller, sock, follower)
        except Exception:
            log.critical("the replication I/O thread crashed; /health now answers 503",
                         exc_info=True)
            raise
        finally:
            self._stopping.set()  # from now on register_waiter aborts at once
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.abort()
            while not self._new_waiters.empty():
                self._new_waiters.get().abort()
            for sock in links:
                sock.close(linger=0)

    def _open_dealer(self, follower: Follower) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(follower.endpoint)  # lazy: the secondary may come up later
        return sock

    def _poll_timeout_ms(self, links: dict, next_heartbeat: float) -> int:
        """Until the next timer: a heartbeat, a resend, or a health change to log."""
        now = time.monotonic()
        deadlines = [next_heartbeat]
        for sock, follower in links.items():
            deadlines.append(follower.next_health_change(now))
            if sock not in self._blocked:
                deadlines.append(follower.retry_deadline(now))
        deadline = min(d for d in deadlines if d is not None)
        return max(0, math.ceil((deadline - now) * 1000))

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        self._wake_pending = False

    def _take_new_waiters(self) -> None:
        while not self._new_waiters.empty():
            waiter = self._new_waiters.get()
            holders = [f.name for f in self._followers if f.holds(waiter.seq)]
            if not waiter.record(holders):
                self._waiters.setdefault(waiter.seq, []).append(waiter)

    def _receive(self, sock: zmq.Socket, follower: Follower) -> None:
        for _ in range(RECEIVE_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = protocol.decode(frames)
            except protocol.ProtocolError as exc:
                log.warning("dropped a bad frame from %s (%d parts): %s", follower.name, len(frames), exc)
                continue
            if isinstance(message, (protocol.Ack, protocol.Pong)) and (
                message.status.length > len(self._store)
            ):
                # Within one epoch a secondary holds only what this primary sent.
                log.warning("dropped a bad frame from %s: it claims %d messages, the primary has %d",
                            follower.name, message.status.length, len(self._store))
                continue
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
                continue
            if progress:
                self._credit(follower)

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
