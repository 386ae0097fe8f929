"""The secondary's replication endpoint: one ROUTER and the thread that owns it.

The ``receiver-io`` thread binds the ROUTER, receives APPEND and PING frames
from the primary, stores entries in the OrderedLog and answers with ACK and
PONG. No other thread touches the socket. Other threads may call ``start``,
``stop`` and the read-only properties; they share only the OrderedLog, which
has its own lock.

REPLICATION_DELAY is a schedule, not a sleep: each new entry gets its own due
time on a heap, and the poll timeout is the time to the earliest one. So two
entries that arrive 10 ms apart with a 1 s delay are both stored about 1 s
after arrival, and PINGs are answered at once however long the queue is.

Deduplication is by seq. An entry already stored is acknowledged again at
once (the primary resent it because an ACK went missing); an entry already
waiting on the schedule is skipped, since its ACK is on the way.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import socket
import threading
import time

import zmq

from shared import protocol
from shared.config import DelayRange
from shared.ordered_log import OrderedLog

log = logging.getLogger(__name__)

#: Frames handled per wake-up before due entries get a turn.
RECEIVE_BATCH = 256


class Receiver:
    def __init__(
        self,
        ctx: zmq.Context,
        bind: str,
        store: OrderedLog,
        node_name: str,
        delay: DelayRange = DelayRange(),
        drop_ack_fraction: float = 0.0,
    ) -> None:
        self._ctx = ctx
        self._bind = bind
        self._store = store
        self._node_name = node_name
        self._delay = delay
        self._drop_ack_fraction = drop_ack_fraction
        #: A fresh name per process run: the primary spots a restart by it.
        self.incarnation = protocol.new_corr_id()
        #: The endpoint actually bound (a port 0 in ``bind`` is resolved).
        self.endpoint: str | None = None
        self.primary_epoch: str | None = None
        self._due: list[tuple[float, int, bytes, str, int, bytes]] = []
        self._scheduled: set[int] = set()
        self._tiebreak = itertools.count()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._startup_error: BaseException | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="receiver-io", daemon=True)

    # -- any thread ---------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the I/O thread and return once the ROUTER is bound."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("receiver did not start in time")
        if self._startup_error is not None:
            raise self._startup_error

    def stop(self, timeout: float = 5.0) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_w.send(b"x")
        self._thread.join(timeout)
        self._wake_r.close()
        self._wake_w.close()

    @property
    def running(self) -> bool:
        """False once the I/O thread has stopped, or died of a bug."""
        return self._thread.is_alive()

    @property
    def waiting_count(self) -> int:
        """Entries received but not yet due. An unsynchronised reading, for /health."""
        return len(self._scheduled)

    # -- receiver-io thread -------------------------------------------------

    def _run(self) -> None:
        try:
            sock = self._open_router()
        except zmq.ZMQError as exc:
            self._startup_error = OSError(f"REPLICATION_BIND: cannot bind {self._bind}: {exc}")
            self._ready.set()
            return
        self._ready.set()
        log.info("replication listening on %s (delay %s)", self.endpoint, self._delay or "none")
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                events = dict(poller.poll(self._ms_until_due()))
                if sock in events:
                    self._receive_batch(sock)
                self._store_due(sock)
        except Exception:
            log.critical("the replication I/O thread crashed; /health now answers 503",
                         exc_info=True)
            raise
        finally:
            sock.close(linger=0)

    def _open_router(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.linger = 0
        # A reply to a primary that went away raises EHOSTUNREACH instead of
        # vanishing, so _send can say so (the primary resends what it misses).
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            sock.bind(self._bind)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def _ms_until_due(self) -> int | None:
        if not self._due:
            return None
        return max(0, math.ceil((self._due[0][0] - time.monotonic()) * 1000))

    def _receive_batch(self, sock: zmq.Socket) -> None:
        for _ in range(RECEIVE_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle(sock, frames)

    def _handle(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        identity, payload = frames[0], frames[1:]
        try:
            message = protocol.decode(payload)
        except protocol.ProtocolError as exc:
            log.warning("dropped a bad frame (%d parts): %s", len(payload), exc)
            return
        if isinstance(message, protocol.Append):
            self._follow_epoch(message.epoch)
            self._on_append(sock, identity, message)
        elif isinstance(message, protocol.Ping):
            self._follow_epoch(message.epoch)
            self._send(sock, identity, protocol.encode_pong(message.corr_id, self._status()))
        else:
            log.warning("dropped a %s frame: only the primary's APPEND and PING are expected here",
                        type(message).__name__.upper())

    def _follow_epoch(self, epoch: str) -> None:
        if epoch == self.primary_epoch:
            return
        if self.primary_epoch is not None:
            log.warning(
                "the primary restarted with an empty log (epoch %s -> %s): dropping %d messages "
                "of the old one to follow it",
                self.primary_epoch, epoch, len(self._store),
            )
            self._store.clear()
            self._due.clear()
            self._scheduled.clear()
        else:
            log.info("following primary epoch %s", epoch)
        self.primary_epoch = epoch

    def _on_append(self, sock: zmq.Socket, identity: bytes, append: protocol.Append) -> None:
        acked: list[int] = []
        now = time.monotonic()
        for seq, entry in enumerate(append.entries, start=append.first):
            if seq in self._scheduled:
                continue
            if not self._delay or self._store.holds(seq):
                self._store.put(seq, entry)
                acked.append(seq)
            else:
                due = now + self._delay.draw()
                heapq.heappush(self._due, (due, next(self._tiebreak), identity, append.corr_id, seq, entry))
                self._scheduled.add(seq)
        log.debug("APPEND %s seqs %d..%d: %d stored or held, %d scheduled",
                  append.corr_id, append.first, append.first + len(append.entries) - 1,
                  len(acked), len(append.entries) - len(acked))
        if acked:
            self._ack(sock, identity, append.corr_id, acked)

    def _store_due(self, sock: zmq.Socket) -> None:
        now = time.monotonic()
        ready: dict[tuple[bytes, str], list[int]] = {}
        while self._due and self._due[0][0] <= now:
            _, _, identity, corr_id, seq, entry = heapq.heappop(self._due)
            self._scheduled.discard(seq)
            self._store.put(seq, entry)
            ready.setdefault((identity, corr_id), []).append(seq)
        for (identity, corr_id), seqs in ready.items():
            self._ack(sock, identity, corr_id, seqs)

    def _ack(self, sock: zmq.Socket, identity: bytes, corr_id: str, seqs: list[int]) -> None:
        if self._drop_ack_fraction and random.random() < self._drop_ack_fraction:
            log.debug("fault injection: dropped the ACK of %s", corr_id)
            return
        frames = protocol.encode_ack(corr_id, self._status(), protocol.to_ranges(seqs))
        self._send(sock, identity, frames)

    def _status(self) -> protocol.Status:
        return protocol.Status(self._node_name, self.incarnation, len(self._store))

    def _send(self, sock: zmq.Socket, identity: bytes, frames: list[bytes]) -> None:
        try:
            sock.send_multipart([identity, *frames], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # The primary went away or is not reading; it resends what it misses.
            log.debug("could not answer the primary: %s", exc)
