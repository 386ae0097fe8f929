"""The secondary's replication endpoint: one ROUTER and the thread that owns it.

The ``receiver-io`` thread (shared.io_thread) binds the ROUTER, receives APPEND and PING frames
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
import random
import time

import zmq

from shared import protocol
from shared.config import DelayRange
from shared.io_thread import IoThread, receive_batch
from shared.ordered_log import OrderedLog

log = logging.getLogger(__name__)


class Receiver(IoThread):
    def __init__(
        self,
        ctx: zmq.Context,
        bind: str,
        store: OrderedLog,
        node_name: str,
        delay: DelayRange = DelayRange(),
        drop_ack_fraction: float = 0.0,
    ) -> None:
        super().__init__("receiver-io")
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
        self._sock: zmq.Socket | None = None
        self._due: list[tuple[float, int, bytes, str, int, bytes]] = []
        self._scheduled: set[int] = set()
        self._tiebreak = itertools.count()

    # -- any thread ---------------------------------------------------------

    @property
    def waiting_count(self) -> int:
        """Entries received but not yet due. An unsynchronised reading, for /health."""
        return len(self._scheduled)

    # -- receiver-io thread -------------------------------------------------

    def _open(self, poller: zmq.Poller) -> None:
        try:
            self._sock = self._open_router()
        except zmq.ZMQError as exc:
            raise OSError(f"REPLICATION_BIND: cannot bind {self._bind}: {exc}") from None
        poller.register(self._sock, zmq.POLLIN)
        log.info("replication listening on %s (delay %s)", self.endpoint, self._delay or "none")

    def _pass(self, events: dict) -> None:
        if self._sock in events:
            receive_batch(self._sock, self._handle)
        self._store_due()

    def _next_deadline(self) -> float | None:
        return self._due[0][0] if self._due else None

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)

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

    def _handle(self, frames: list[bytes]) -> None:
        identity, payload = frames[0], frames[1:]
        try:
            message = protocol.decode(payload)
        except protocol.ProtocolError as exc:
            log.warning("dropped a bad frame (%d parts): %s", len(payload), exc)
            return
        if isinstance(message, protocol.Append):
            self._follow_epoch(message.epoch)
            self._on_append(identity, message)
        elif isinstance(message, protocol.Ping):
            self._follow_epoch(message.epoch)
            self._send(identity, protocol.encode_pong(message.corr_id, self._status()))
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

    def _on_append(self, identity: bytes, append: protocol.Append) -> None:
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
            self._ack(identity, append.corr_id, acked)

    def _store_due(self) -> None:
        now = time.monotonic()
        ready: dict[tuple[bytes, str], list[int]] = {}
        while self._due and self._due[0][0] <= now:
            _, _, identity, corr_id, seq, entry = heapq.heappop(self._due)
            self._scheduled.discard(seq)
            self._store.put(seq, entry)
            ready.setdefault((identity, corr_id), []).append(seq)
        for (identity, corr_id), seqs in ready.items():
            self._ack(identity, corr_id, seqs)

    def _ack(self, identity: bytes, corr_id: str, seqs: list[int]) -> None:
        if self._drop_ack_fraction and random.random() < self._drop_ack_fraction:
            log.debug("fault injection: dropped the ACK of %s", corr_id)
            return
        frames = protocol.encode_ack(corr_id, self._status(), protocol.to_ranges(seqs))
        self._send(identity, frames)

    def _status(self) -> protocol.Status:
        return protocol.Status(self._node_name, self.incarnation, len(self._store))

    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self._sock.send_multipart([identity, *frames], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # The primary went away or is not reading; it resends what it misses.
            log.debug("could not answer the primary: %s", exc)
