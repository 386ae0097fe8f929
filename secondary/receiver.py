"""The secondary's replication endpoint: one ROUTER and the thread that owns it.

The ``receiver-io`` thread (shared.io_thread) binds the ROUTER, receives
APPEND, PING and FETCH frames from the primary, stores entries in the log
and answers with ACK, PONG and ENTRIES. No other thread touches the socket.
Other threads may call ``start``, ``stop`` and the read-only properties;
they share only the log, which has its own lock.

Each pass of the loop handles what arrived, stores what is due, flushes the
log once (one commit, one fsync, for the whole pass: group commit), and only
then sends its answers: an ACK never runs ahead of the disk.

**Whom it follows.** Frames name the cluster's history and the runs of
primaries that wrote it (shared.history). The first history heard is
adopted and kept; frames of any other history are refused, and the node
keeps its log as it is: nothing a frame says can make it throw its log
away. A frame of a newer run is followed; where that run's segments
disagree with the node's own, the entries from that id on were written by a
run that has since been rolled back, and only they are truncated, with a
WARNING that names them. A frame of an older run is stale and ignored.

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

from shared import history as hist
from shared import protocol
from shared.config import DelayRange
from shared.curve import PLAIN, PlainChannel
from shared.io_thread import IoThread, receive_batch
from shared.bad_frames import BadFrameLog
from shared.logging_setup import RateLimitFilter
from shared.ordered_log import OrderedLog
from shared.sqlite_store import StoreError

log = logging.getLogger(__name__)
store_log = logging.getLogger(f"{__name__}.store")
store_log.addFilter(RateLimitFilter(5.0))

#: Entries one ENTRIES answer carries at most (and protocol.MAX_BATCH_BYTES).
FETCH_MAX_ENTRIES = 4096


class Receiver(IoThread):
    def __init__(
        self,
        ctx: zmq.Context,
        bind: str,
        store: OrderedLog,
        node_name: str,
        delay: DelayRange = DelayRange(),
        drop_ack_fraction: float = 0.0,
        keep_incarnation: bool = False,
        max_ahead: int = 100_000,
        max_message_bytes: int = 1 << 20,
        channel: PlainChannel = PLAIN,
    ) -> None:
        super().__init__("receiver-io")
        self._ctx = ctx
        self._channel = channel  # plain, or CURVE from REPLICATION_KEYS_DIR
        self._bind = bind
        self._store = store
        self._node_name = node_name
        self._delay = delay
        self._drop_ack_fraction = drop_ack_fraction
        self._max_ahead = max_ahead
        self._frame_limit = protocol.frame_limit(max_message_bytes)
        #: Names this node's state: kept with its data only when every
        #: acknowledged entry is sure to have survived (FSYNC=always);
        #: otherwise new, so the primary resends from the length reported.
        self.incarnation: str = store.meta.get("incarnation") if keep_incarnation else None
        if self.incarnation is None:
            self.incarnation = protocol.new_corr_id()
            store.set_meta(incarnation=self.incarnation)
        #: The endpoint actually bound (a port 0 in ``bind`` is resolved).
        self.endpoint: str | None = None
        #: The cluster's history id, once heard; and the runs that wrote it.
        self.history: str | None = store.meta.get("history")
        self._segments: hist.Segments = hist.from_wire(store.meta.get("segments", []))
        self._sock: zmq.Socket | None = None
        self._bad_frames = BadFrameLog(log)
        self._due: list[tuple[float, int, bytes, str, int, bytes]] = []
        self._scheduled: set[int] = set()
        self._tiebreak = itertools.count()
        # Answers of this pass, sent once the log is flushed.
        self._acks: list[tuple[bytes, str, list[int]]] = []
        self._replies: list[tuple[bytes, bytes]] = []
        self._pongs: list[tuple[bytes, str]] = []
        #: Entries received in APPEND frames, and those of them it held or had
        #: scheduled already (resends). Written by the I/O thread alone; other
        #: threads read them unsynchronised, for /metrics.
        self.received = 0
        self.duplicates = 0

    # -- any thread ---------------------------------------------------------

    @property
    def waiting_count(self) -> int:
        """Entries received but not yet due. An unsynchronised reading, for /health."""
        return len(self._scheduled)

    @property
    def bad_frames(self) -> int:
        """Frames dropped since start. An unsynchronised reading, for /health."""
        return self._bad_frames.count

    @property
    def run(self) -> hist.Run | None:
        """The primary run this node follows. An unsynchronised reading, for /health."""
        segments = self._segments
        return segments[-1].run if segments else None

    # -- receiver-io thread -------------------------------------------------

    def _open(self, poller: zmq.Poller) -> None:
        try:
            self._sock = self._open_router()
        except zmq.ZMQError as exc:
            raise OSError(f"REPLICATION_BIND: cannot bind {self._bind}: {exc}") from None
        poller.register(self._sock, zmq.POLLIN)
        self._store.flush()  # the incarnation, before anyone hears of it
        log.info("replication listening on %s (delay %s)", self.endpoint, self._delay or "none")

    def _pass(self, events: dict) -> None:
        if self._sock in events:
            receive_batch(self._sock, self._handle)
        self._store_due()
        self._flush_and_answer()

    def _next_deadline(self) -> float | None:
        return self._due[0][0] if self._due else None

    def _close(self) -> None:
        self._store.release_readers()  # tailing readers are answered at once
        if self._sock is not None:
            self._sock.close(linger=0)

    def _open_router(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.linger = 0
        self._channel.secure(sock)
        # A reply to a primary that went away raises EHOSTUNREACH instead of
        # vanishing, so _send can say so (the primary resends what it misses).
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, self._frame_limit)
        try:
            sock.bind(self._bind)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def _handle(self, frames: list[bytes]) -> None:
        identity, parts = frames[0], frames[1:]
        try:
            message = protocol.decode(parts)
        except protocol.ProtocolError as exc:
            self._bad_frames.dropped(_peer(identity), "%d bytes: %s", sum(map(len, parts)), exc)
            return
        if isinstance(message, protocol.Append):
            if self._follow(message.leader):
                self._on_append(identity, message)
        elif isinstance(message, protocol.Ping):
            self._follow(message.leader)
            self._pongs.append((identity, message.corr_id))
        elif isinstance(message, protocol.Fetch):
            entries = self._store.run_from(message.start, FETCH_MAX_ENTRIES, protocol.MAX_BATCH_BYTES)
            self._replies.append(
                (identity, protocol.encode_entries(message.corr_id, message.start, entries)))
        else:
            self._bad_frames.dropped(_peer(identity), "%s, but only a primary's frames are "
                                     "expected here", type(message).__name__.upper())

    def _follow(self, leader: protocol.Leader) -> bool:
        """Whether to take entries from this sender; adopts its history or run if due."""
        if leader.history is None:
            return False  # a primary with nothing appended yet: it only asks
        if self.history is None:
            self.history = leader.history
            log.info("joined history %s", leader.history)
        elif leader.history != self.history:
            self._bad_frames.dropped(
                "a primary of history " + leader.history,
                "this node holds history %s and keeps its %d messages; to re-join that "
                "cluster, empty its DATA_DIR or restart it in memory", self.history, len(self._store),
            )
            return False
        own = self.run
        if leader.run == own:
            return True
        if own is not None and leader.run.number < own.number:
            log.debug("ignored a frame of older run %s (following %s)", leader.run, own)
            return False
        self._adopt(leader.segments)
        return True

    def _adopt(self, segments: hist.Segments) -> None:
        cut = hist.divergence(self._segments, segments)
        if cut is not None:
            removed = self._store.truncate(cut)
            self._due = [item for item in self._due if item[4] < cut]
            heapq.heapify(self._due)
            self._scheduled = {seq for seq in self._scheduled if seq < cut}
            if removed:
                log.warning(
                    "truncated %d message(s), ids %s: only a primary run that has since been "
                    "rolled back wrote them, and the primary now writes other messages there",
                    len(removed), _describe_ranges(removed),
                )
        self._segments = segments
        self._store.set_meta(history=self.history, segments=hist.to_wire(segments))
        run = segments[-1]
        log.info("following primary run %d.%s from id %d", run.number, run.token, run.base)

    def _on_append(self, identity: bytes, append: protocol.Append) -> None:
        acked: list[int] = []
        now = time.monotonic()
        # Past this window an entry is not kept (nor acknowledged): the primary
        # resends it later. So frames far ahead cannot fill the memory.
        window_end = len(self._store) + self._max_ahead
        self.received += len(append.entries)
        for seq, entry in enumerate(append.entries, start=append.first):
            if seq in self._scheduled:
                self.duplicates += 1
                continue
            if seq >= window_end:
                continue
            if not self._delay or self._store.holds(seq):
                if not self._store.put(seq, entry):
                    self.duplicates += 1
                acked.append(seq)
            else:
                due = now + self._delay.draw()
                heapq.heappush(self._due, (due, next(self._tiebreak), identity, append.corr_id, seq, entry))
                self._scheduled.add(seq)
        log.debug("APPEND %s seqs %d..%d: %d stored or held, %d scheduled",
                  append.corr_id, append.first, append.first + len(append.entries) - 1,
                  len(acked), len(append.entries) - len(acked))
        if acked:
            self._acks.append((identity, append.corr_id, acked))

    def _store_due(self) -> None:
        now = time.monotonic()
        ready: dict[tuple[bytes, str], list[int]] = {}
        while self._due and self._due[0][0] <= now:
            _, _, identity, corr_id, seq, entry = heapq.heappop(self._due)
            self._scheduled.discard(seq)
            self._store.put(seq, entry)
            ready.setdefault((identity, corr_id), []).append(seq)
        self._acks.extend((identity, corr_id, seqs) for (identity, corr_id), seqs in ready.items())

    def _flush_and_answer(self) -> None:
        acks, self._acks = self._acks, []
        replies, self._replies = self._replies, []
        pongs, self._pongs = self._pongs, []
        try:
            self._store.flush()
        except StoreError as exc:
            # Nothing is acknowledged that is not stored; the primary resends.
            store_log.error("could not store what arrived (%d ACKs held back): %s", len(acks), exc)
            acks = []
        for identity, corr_id in pongs:
            self._send(identity, protocol.encode_pong(corr_id, self._status(), self._segments))
        for identity, corr_id, seqs in acks:
            self._ack(identity, corr_id, seqs)
        for identity, frame in replies:
            self._send(identity, frame)

    def _ack(self, identity: bytes, corr_id: str, seqs: list[int]) -> None:
        if self._drop_ack_fraction and random.random() < self._drop_ack_fraction:
            log.debug("fault injection: dropped the ACK of %s", corr_id)
            return
        self._send(identity, protocol.encode_ack(corr_id, self._status(), protocol.to_ranges(seqs)))

    def _status(self) -> protocol.Status:
        return protocol.Status(self._node_name, self.incarnation, len(self._store),
                               self.history, self.run)

    def _send(self, identity: bytes, frame: bytes) -> None:
        try:
            self._sock.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # The primary went away or is not reading; it resends what it misses.
            log.debug("could not answer the primary: %s", exc)


def _describe_ranges(seqs: list[int]) -> str:
    return ", ".join(f"{a}..{b - 1}" if b - a > 1 else str(a) for a, b in protocol.to_ranges(seqs))


def _peer(identity: bytes) -> str:
    """How log lines name a peer: its connection's ROUTER identity."""
    return f"peer {identity.hex()}"
