"""The secondary's replication endpoint: one ROUTER and the thread that owns it.

The ``receiver-io`` thread (shared.wire.io_thread) binds the ROUTER, receives
APPEND, PING and FETCH frames from the primary, stores entries in the log
and answers with ACK, PONG and ENTRIES. No other thread touches the socket.
Other threads may call ``start``, ``stop`` and the read-only properties;
they share only the log, which has its own lock.

Each pass of the loop handles what arrived, stores what is due, flushes the
log once (one commit, one fsync, for the whole pass: group commit), and only
then sends its answers: an ACK never runs ahead of the disk.

The rules (whom it follows, what it keeps of each APPEND, the delay
schedule) are shared.consensus.follower's; this module decodes the frames,
does what the rules return (first the store, then the answers) and logs it.

Every ACK and PONG announces the largest frame this node accepts, and each
ENTRIES answer stays within the largest the primary's FETCH announced: a
larger frame would end the connection, and the primary would not hear it.

REPLICATION_DELAY is a schedule, not a sleep: each new entry gets its own due
time, and the poll timeout is the time to the earliest one. So two entries
that arrive 10 ms apart with a 1 s delay are both stored about 1 s after
arrival, and PINGs are answered at once however long the queue is.
"""

from __future__ import annotations

import logging
import random
import time

import zmq

from shared.consensus import history as hist
from shared.consensus.follower import Follower
from shared.log.ordered_log import OrderedLog
from shared.log.sqlite_store import StoreError
from shared.runtime.config import DelayRange
from shared.runtime.logging_setup import RateLimitFilter
from shared.wire import protocol
from shared.wire.bad_frames import BadFrameLog
from shared.wire.curve import PLAIN, PlainChannel
from shared.wire.io_thread import IoThread, receive_batch

log = logging.getLogger(__name__)
store_log = logging.getLogger(f"{__name__}.store")
store_log.addFilter(RateLimitFilter(5.0))
#: Any FETCH can ask for a frame too small for an entry: a peer must not flood the log.
fetch_log = logging.getLogger(f"{__name__}.fetch")
fetch_log.addFilter(RateLimitFilter(5.0))

#: Entries one ENTRIES answer carries at most (and protocol.MAX_BATCH_BYTES, and
#: no more than the primary's frame limit lets through).
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
        max_ahead_bytes: int = 32 << 20,
        max_message_bytes: int = 1 << 20,
        channel: PlainChannel = PLAIN,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__("receiver-io")
        self._ctx = ctx
        self._channel = channel  # plain, or CURVE from REPLICATION_KEYS_DIR
        self._bind = bind
        self._store = store
        self._node_name = node_name
        self._delay = delay
        self._drop_ack_fraction = drop_ack_fraction
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
        self._rng = rng if rng is not None else random.Random()
        self._rules = Follower(store.meta.get("history"),
                               hist.from_wire(store.meta.get("segments", [])),
                               self._rng, delay, max_ahead, max_ahead_bytes)
        self._sock: zmq.Socket | None = None
        self._bad_frames = BadFrameLog(log)
        # Answers of this pass, sent once the log is flushed.
        self._acks: list[tuple[bytes, str, list[int]]] = []
        self._replies: list[tuple[bytes, bytes]] = []
        self._pongs: list[tuple[bytes, str]] = []

    # -- any thread ---------------------------------------------------------

    @property
    def history(self) -> str | None:
        """The cluster's history id, once heard. An unsynchronised reading."""
        return self._rules.history

    @property
    def waiting_count(self) -> int:
        """Entries received but not yet due. An unsynchronised reading, for /health."""
        return self._rules.waiting_count

    @property
    def received(self) -> int:
        """Entries received in APPEND frames. An unsynchronised reading, for /metrics."""
        return self._rules.received

    @property
    def duplicates(self) -> int:
        """Received entries held or scheduled already (resends), for /metrics."""
        return self._rules.duplicates

    @property
    def bad_frames(self) -> int:
        """Frames dropped since start. An unsynchronised reading, for /health."""
        return self._bad_frames.count

    @property
    def run(self) -> hist.Run | None:
        """The primary run this node follows. An unsynchronised reading, for /health."""
        return self._rules.run

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
        return self._rules.next_due

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
            self._on_fetch(identity, message)
        else:
            self._bad_frames.dropped(_peer(identity), "%s, but only a primary's frames are "
                                     "expected here", type(message).__name__.upper())

    def _on_fetch(self, identity: bytes, fetch: protocol.Fetch) -> None:
        held = self._store.run_from(fetch.start, FETCH_MAX_ENTRIES, protocol.MAX_BATCH_BYTES)
        entries = held
        if fetch.frame_limit is not None:
            room = fetch.frame_limit - protocol.entries_overhead(fetch.corr_id, fetch.start)
            entries = protocol.fitting(held, room)
        if held and not entries:
            # An empty answer would say it holds nothing from there: it says nothing.
            fetch_log.error("cannot send id %d (%d bytes) to the primary, which accepts frames of up to "
                            "%d bytes; set the same MAX_MESSAGE_BYTES on every node",
                            fetch.start, len(held[0]), fetch.frame_limit)
            return
        self._replies.append((identity, protocol.encode_entries(fetch.corr_id, fetch.start, entries)))

    def _follow(self, leader: protocol.Leader) -> bool:
        """Whether to take entries from this sender; stores what following it changes."""
        verdict = self._rules.on_leader(leader, len(self._store))
        if verdict.refusal is not None:
            self._bad_frames.dropped("a primary of history " + leader.history, "%s", verdict.refusal)
        if verdict.joined is not None:
            log.info("joined history %s", verdict.joined)
        if verdict.adopted is not None:
            self._adopt(verdict.cut, verdict.adopted)
        elif not verdict.follow and leader.run is not None and verdict.refusal is None:
            log.debug("ignored a frame of older run %s (following %s)", leader.run, self.run)
        return verdict.follow

    def _adopt(self, cut: int | None, segments: hist.Segments) -> None:
        if cut is not None:
            removed = self._store.truncate(cut)
            if removed:
                log.warning(
                    "truncated %d message(s), ids %s: only a primary run that has since been "
                    "rolled back wrote them, and the primary now writes other messages there",
                    len(removed), _describe_ranges(removed),
                )
        self._store.set_meta(history=self.history, segments=hist.to_wire(segments))
        run = segments[-1]
        log.info("following primary run %d.%s from id %d", run.number, run.token, run.base)

    def _on_append(self, identity: bytes, append: protocol.Append) -> None:
        taken = self._rules.on_append(identity, append, time.monotonic(),
                                      len(self._store), self._store.holds, self._store.ahead_bytes)
        for seq, entry in taken.store:
            self._store.put(seq, entry)
        log.debug("APPEND %s seqs %d..%d: %d stored or held, %d scheduled",
                  append.corr_id, append.first, append.first + len(append.entries) - 1,
                  len(taken.ack), taken.scheduled)
        if taken.ack:
            self._acks.append((identity, append.corr_id, taken.ack))

    def _store_due(self) -> None:
        for identity, corr_id, entries in self._rules.due(time.monotonic()):
            for seq, entry in entries:
                self._store.put(seq, entry)
            self._acks.append((identity, corr_id, [seq for seq, _ in entries]))

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
            self._send(identity, protocol.encode_pong(corr_id, self._status(), self._rules.segments))
        for identity, corr_id, seqs in acks:
            self._ack(identity, corr_id, seqs)
        for identity, frame in replies:
            self._send(identity, frame)

    def _ack(self, identity: bytes, corr_id: str, seqs: list[int]) -> None:
        if self._drop_ack_fraction and self._rng.random() < self._drop_ack_fraction:
            log.debug("fault injection: dropped the ACK of %s", corr_id)
            return
        self._send(identity, protocol.encode_ack(corr_id, self._status(), protocol.to_ranges(seqs)))

    def _status(self) -> protocol.Status:
        return protocol.Status(self._node_name, self.incarnation, len(self._store),
                               self.history, self.run, self._frame_limit)

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
