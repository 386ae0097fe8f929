"""``node-io``: the thread that runs a failover node's Raft core and its sockets.

It owns the RaftNode (shared.consensus.raft), the ROUTER that every peer
sends to, one DEALER per peer (shared.wire.links, which reopens a link
libzmq gave up on), and the node's log (shared.failover.storage). Each pass:

1. steps the core with every frame that arrived (shared.wire.raft_frames),
   and with the entries REPLICATION_DELAY held back that are now due, then
   ticks it (heartbeats, check quorum, election timeouts);
2. takes the appends request threads proposed (``propose``): a known
   Idempotency-Key is answered from the log, the others are proposed to the
   core in one call;
3. after each of these, acts on the Readies in the order the core requires:
   writes the term, the vote and the log changes in one transaction
   (fsynced under FSYNC), and only then sends the messages, which may
   promise what was just written; then settles the waiting appends and
   publishes what request threads read (``state``).

A failed write, or a rule of Raft's about to break (SafetyViolation), ends
the thread, and the node stops (shared.service): the core has moved on in
memory, and a node that cannot keep what it promised must not answer.

Thread: ``propose``, ``state`` and ``set_bound_port`` from any thread;
everything else on ``node-io`` only.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

import zmq

from shared.consensus.quorum import majority
from shared.consensus.raft import AppendEntries, RaftNode, Ready, Role
from shared.failover.config import FailoverConfig, Peer
from shared.failover.storage import RaftStorage
from shared.log.sqlite_store import StoreError
from shared.runtime.logging_setup import RateLimitFilter
from shared.wire import raft_frames
from shared.wire.bad_frames import BadFrameLog
from shared.wire.curve import PlainChannel
from shared.wire.io_thread import IoThread, receive_batch
from shared.wire.links import Links
from shared.wire.protocol import MAX_BATCH_BYTES, ProtocolError, frame_limit

log = logging.getLogger(__name__)
oversized_log = logging.getLogger(f"{__name__}.oversized")
oversized_log.addFilter(RateLimitFilter(10.0))

#: Entries one AppendEntries carries at most: the core sends one batch per
#: secondary at a time, so a batch holds whatever arrived during a round trip.
BATCH_ENTRIES = 4096
#: How many of the latest elections /health lists.
ELECTIONS_KEPT = 10

# Why an append ended without the write concern met.
NOT_PRIMARY = "not primary"  # nothing was appended
STEPPED_DOWN = "stepped down"  # appended; its fate is for the next primary to decide
CONFLICT = "conflict"  # the Idempotency-Key was used for other messages
STOPPING = "stopping"


class Proposal:
    """One append on its way through ``node-io``, and the request thread's wait for it.

    The request thread makes it and blocks in ``wait``; ``node-io`` assigns
    its ids (``first_id``), counts who holds it, and releases it once: met,
    or ended for one of the reasons above. A plain lock is the gate, as in
    primary.acks, so that the wait costs the GIL as little as it can."""

    def __init__(self, literals: list[bytes], key: str | None, w: int) -> None:
        self.literals = literals
        self.key = key
        self.w = w
        self.first_id: int | None = None
        self.last_index = -1  # the Raft index of its last entry
        self.duplicate = False
        self.acked_by: list[str] = []  # who held it when released
        #: Who holds it, as of node-io's last look: what a 504 reports. Replaced, never changed.
        self.holders: list[str] = []
        self.ended: str | None = None  # one of the reasons above, if it was not met
        self._lock = threading.Lock()
        self._abandoned = False
        self._released = False
        self._gate = threading.Lock()
        self._gate.acquire()

    # -- the request thread --------------------------------------------------

    def wait(self, timeout: float | None) -> bool:
        """True once released; False on timeout, after which ``node-io`` lets it go."""
        released = self._gate.acquire(timeout=-1 if timeout is None else timeout)
        if not released:
            with self._lock:
                released = self._released
                self._abandoned = not released
        return released

    # -- node-io --------------------------------------------------------------

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def assign(self, first_id: int, last_index: int, duplicate: bool = False) -> bool:
        """Give it its ids; False if its request already gave up (then nothing is appended)."""
        with self._lock:
            if self._abandoned:
                return False
            self.first_id, self.last_index, self.duplicate = first_id, last_index, duplicate
            return True

    def release(self, acked_by: list[str], ended: str | None = None) -> None:
        with self._lock:
            if self._released:
                return
            self.acked_by, self.ended, self._released = acked_by, ended, True
        self._gate.release()


@dataclass(frozen=True)
class PeerView:
    endpoint: str
    url: str | None  # its PUBLIC_URL, once heard from
    last_heard_s_ago: float | None
    match_length: int | None  # on the primary: entries it is known to hold


@dataclass(frozen=True)
class Election:
    term: int
    primary: str
    at: float  # time.time() when this node learned of it


@dataclass(frozen=True)
class NodeState:
    """What request threads read of the node: one immutable value, replaced per pass."""

    role: Role
    term: int
    primary: str | None
    primary_url: str | None
    committed: int  # committed messages
    length: int  # messages held
    caught_up: bool = True  # see RaftNode.caught_up
    peers: dict[str, PeerView] = field(default_factory=dict)
    elections: tuple[Election, ...] = ()
    elections_total: int = 0
    bad_frames: int = 0

    @property
    def is_primary(self) -> bool:
        return self.role is Role.PRIMARY


@dataclass
class _Link:
    """A peer as the links see it (shared.wire.links reads these three)."""

    name: str
    endpoint: str
    frame_limit: int | None = None  # what it announced; None until it has


class NodeIo(IoThread):
    def __init__(self, ctx: zmq.Context, config: FailoverConfig, storage: RaftStorage,
                 channel: PlainChannel, stands_at_once: bool, rng: random.Random | None = None) -> None:
        super().__init__("node-io")
        self._ctx = ctx
        self._config = config
        self._storage = storage
        self._channel = channel
        self._rng = rng or random.Random()
        persisted = storage.load()
        self._frame_limit = frame_limit(config.max_body_bytes)
        self._node = RaftNode(
            config.node_name, tuple(peer.name for peer in config.peers), self._rng,
            election_timeout=config.election_timeout, heartbeat_interval=config.heartbeat_interval,
            persisted=persisted, max_batch=BATCH_ENTRIES, max_batch_bytes=MAX_BATCH_BYTES,
            # Only a fresh cluster's first election: later, a restarted `primary`
            # waits like any node, so that it does not depose a healthy primary.
            stands_at_once=stands_at_once and persisted.term == 0 and not persisted.entries,
        )
        self._majority = majority(config.cluster_size)
        self._links_by_name = {peer.name: _Link(peer.name, peer.endpoint) for peer in config.others}
        self._proposals: queue.SimpleQueue[Proposal] = queue.SimpleQueue()
        self._waiting: list[Proposal] = []
        self._outbox: list[tuple[str, object]] = []
        self._envelopes: dict[str, raft_frames.Envelope] = {}  # what each peer last said of itself
        self._heard_at: dict[str, float] = {}
        self._delayed: list[tuple[float, int, AppendEntries]] = []
        self._delayed_order = itertools.count()
        self._delayed_upto = (0, 0)  # the term and log length the held-back entries reach
        self._elections: list[Election] = []
        self._elections_total = 0
        self._known_primary: tuple[int, str] | None = None
        self._bad_frames = BadFrameLog(log)
        self._envelope = raft_frames.Envelope(config.advertised_url, self._frame_limit, config.public_url)
        self._links: Links | None = None
        self._dealers: dict[str, zmq.Socket] = {}
        self._router: zmq.Socket | None = None
        self._next_link_check = 0.0
        self.endpoint: str | None = None
        self.state = self._snapshot(time.monotonic())

    # -- any thread -----------------------------------------------------------

    @property
    def messages(self):
        """The client messages this node holds, for reads (an OrderedLog)."""
        return self._storage.messages

    def propose(self, proposal: Proposal) -> None:
        """Hand an append to ``node-io``; the caller then waits on ``proposal``."""
        self._proposals.put(proposal)
        self.wake()

    @property
    def public_url(self) -> str:
        return self._envelope.public_url

    def set_bound_port(self, port: int) -> None:
        """HTTP has bound ``port``: it replaces a port 0 in the URLs sent to peers."""
        self._envelope = raft_frames.Envelope(_with_port(self._envelope.url, port), self._frame_limit,
                                              _with_port(self._envelope.public_url, port))

    # -- node-io: the loop --------------------------------------------------------

    def _open(self, poller: zmq.Poller) -> None:
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.linger = 0
        self._router.setsockopt(zmq.MAXMSGSIZE, self._frame_limit)
        self._channel.secure(self._router)
        try:
            self._router.bind(self._config.replication_bind)
        except zmq.ZMQError as exc:
            self._router.close()
            raise OSError(f"REPLICATION_BIND {self._config.replication_bind}: {exc}") from None
        self.endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        poller.register(self._router, zmq.POLLIN)
        self._links = Links(self._ctx, self._channel, self._frame_limit, poller)
        for link in self._links_by_name.values():
            self._links.open(link)
        self._map_dealers()

    def _pass(self, events: dict) -> None:
        now = time.monotonic()
        if self._router in events:
            # As frames, not bytes: a CURVE frame names the node whose key sent it.
            receive_batch(self._router, lambda frames: self._receive(frames, now), copy=False)
        self._links.watch(events, now)
        while self._delayed and self._delayed[0][0] <= now:
            self._step(heapq.heappop(self._delayed)[2], now)
        self._take(self._node.tick(now))
        if now >= self._next_link_check:
            self._next_link_check = now + self._config.heartbeat_interval
            if self._links.reopen_lost(now, self._config.heartbeat_interval):
                self._map_dealers()
        self._flush(now)
        if not self._proposals.empty():
            self._take_proposals()
            self._flush(now)

    def _next_deadline(self) -> float | None:
        deadlines = [self._next_link_check]
        if self._node.next_timer() is not None:
            deadlines.append(self._node.next_timer())
        if self._delayed:
            deadlines.append(self._delayed[0][0])
        return min(deadlines)

    def _close(self) -> None:
        for proposal in self._waiting:
            proposal.release(proposal.holders, STOPPING)
        while not self._proposals.empty():
            self._proposals.get().release([], NOT_PRIMARY)
        if self._links is not None:
            self._links.close_all()
        if self._router is not None:
            self._router.close(linger=0)
        self._storage.close()

    # -- node-io: receiving ---------------------------------------------------------

    def _receive(self, frames: list[zmq.Frame], now: float) -> None:
        try:
            message, envelope = raft_frames.decode([frame.bytes for frame in frames[1:]])
        except ProtocolError as exc:
            self._bad_frames.dropped("a peer", "%s", exc)
            return
        link = self._links_by_name.get(message.sender)
        if link is None:
            self._bad_frames.dropped(message.sender, "%s is not in PEERS", message.sender)
            return
        signed_by = self._channel.authenticated_sender(frames[-1])
        if signed_by is not None and signed_by != message.sender:
            # Another member's key: it may not speak (or vote) for this one.
            self._bad_frames.dropped(signed_by, "a frame from %s's key that claims to be from %s",
                                     signed_by, message.sender)
            return
        link.frame_limit = envelope.frame_limit
        self._envelopes[message.sender] = envelope
        self._heard_at[message.sender] = now
        if (isinstance(message, AppendEntries) and message.entries
                and self._config.replication_delay and self._node.role is not Role.PRIMARY):
            self._hold_back(message, now)
            message = replace(message, entries=())  # its heartbeat goes on at once
        self._step(message, now)

    def _hold_back(self, message: AppendEntries, now: float) -> None:
        """Keep the entries for REPLICATION_DELAY; a resend of what is held already is dropped."""
        reaches = message.prev_length + len(message.entries)
        if self._delayed and (message.term, reaches) <= self._delayed_upto:
            return
        self._delayed_upto = (message.term, reaches)
        due = now + self._config.replication_delay.draw(self._rng)
        heapq.heappush(self._delayed, (due, next(self._delayed_order), message))

    def _step(self, message, now: float) -> None:
        try:
            ready = self._node.step(message, now)
        except ValueError as exc:  # a reply that claims what was never sent
            self._bad_frames.dropped(message.sender, "%s", exc)
            return
        self._take(ready)

    # -- node-io: proposals -----------------------------------------------------------

    def _take_proposals(self) -> None:
        proposals: list[Proposal] = []
        while not self._proposals.empty():
            proposals.append(self._proposals.get())
        if self._node.role is not Role.PRIMARY:
            for proposal in proposals:
                proposal.release([], NOT_PRIMARY)
            return
        payloads: list[bytes] = []
        fresh: list[Proposal] = []
        keyed_now: dict[str, Proposal] = {}  # keys proposed in this pass, not yet in the table
        start = len(self._node.log)
        first_id = self._storage.message_count(start)
        for proposal in proposals:
            original = self._original(proposal.key, keyed_now)
            if original is not None:
                self._replay(proposal, *original)
                continue
            count = len(proposal.literals)
            offset = len(payloads)
            if not proposal.assign(first_id + offset, start + offset + count - 1):
                continue  # its request timed out before this pass: nothing appended
            payloads.append(raft_frames.encode_payload(proposal.literals[0], proposal.key, count))
            payloads.extend(proposal.literals[1:])
            fresh.append(proposal)
            if proposal.key is not None:
                keyed_now[proposal.key] = proposal
        if payloads:
            self._take(self._node.propose(payloads))  # primary: checked above, on this thread
        self._waiting.extend(fresh)

    def _original(self, key: str | None,
                  keyed_now: dict[str, Proposal]) -> tuple[int, int, list[bytes]] | None:
        """The append ``key`` made, if the log or this pass holds it: its first
        id, the Raft index of its last entry, and its messages' literals."""
        if key is None:
            return None
        if key in keyed_now:
            earlier = keyed_now[key]
            return earlier.first_id, earlier.last_index, earlier.literals
        known = self._storage.keys.get(key)
        if known is None:
            return None
        first_id, count = known
        last_index = self._storage.raft_index(first_id + count - 1)
        return first_id, last_index, self._storage.messages.entries(first_id, first_id + count)

    def _replay(self, proposal: Proposal, first_id: int, last_index: int, literals: list[bytes]) -> None:
        """A known key: nothing is appended; the same messages wait as a new
        append would, for the same write concern, and other ones are a conflict."""
        if literals != proposal.literals:
            if proposal.assign(first_id, -1):
                proposal.release([], CONFLICT)
        elif proposal.assign(first_id, last_index, duplicate=True):
            self._waiting.append(proposal)

    # -- node-io: acting on the core's output -------------------------------------------

    def _take(self, ready: Ready) -> None:
        self._storage.stage(ready)
        self._outbox.extend(ready.messages)

    def _flush(self, now: float) -> None:
        """Write what the Readies taken since the last flush changed, then send."""
        try:
            self._storage.persist()
        except StoreError as exc:
            log.critical("cannot write the log: %s; stopping, since the node could not keep "
                         "what it would promise", exc)
            raise
        outbox, self._outbox = self._outbox, []
        envelope = self._envelope
        for to, message in outbox:
            self._send(to, raft_frames.encode(message, envelope))
        self._storage.messages.set_committed(self._storage.message_count(self._node.commit_length))
        self._settle()
        self._note_election(self._node.term, self._node.primary)
        self.state = self._snapshot(now)

    def _send(self, to: str, frame: bytes) -> None:
        limit = self._links_by_name[to].frame_limit
        if limit is not None and len(frame) > limit:
            oversized_log.error("cannot send %s a frame of %d bytes: it accepts %d; set the same "
                                "MAX_MESSAGE_BYTES on every node", to, len(frame), limit)
            return
        try:
            self._dealers[to].send(frame, zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected (IMMEDIATE): the core sends again at the next heartbeat

    def _settle(self) -> None:
        """Release the appends whose write concern is met, or can no longer be."""
        if not self._waiting:
            return
        node = self._node
        if node.role is not Role.PRIMARY:
            for proposal in self._waiting:
                proposal.release(proposal.holders, STEPPED_DOWN)
            self._waiting = []
            return
        matched = node.match_lengths()
        still = []
        for proposal in self._waiting:
            if proposal.abandoned:
                continue
            holders = [self._config.node_name] + [peer for peer, length in matched.items()
                                                  if length > proposal.last_index]
            # w >= majority promises survival: that is the commit (Raft §5.4.2),
            # which for a replayed entry of an older term may come later.
            proposal.holders = holders
            met = len(holders) >= proposal.w and (proposal.w < self._majority
                                                  or node.commit_length > proposal.last_index)
            if met:
                proposal.release(holders)
            else:
                still.append(proposal)
        self._waiting = still

    # -- node-io: what request threads read ------------------------------------------------

    def _snapshot(self, now: float) -> NodeState:
        node = self._node
        matched = node.match_lengths()
        primary = node.primary
        heard = self._envelopes.get(primary or "")
        primary_url = self._envelope.url if primary == node.name else heard and heard.url
        peers = {
            name: PeerView(
                link.endpoint,
                self._envelopes[name].public_url if name in self._envelopes else None,
                None if name not in self._heard_at else round(now - self._heard_at[name], 3),
                matched.get(name),
            )
            for name, link in self._links_by_name.items()
        }
        return NodeState(node.role, node.term, primary, primary_url,
                         self._storage.message_count(node.commit_length), len(self._storage.messages),
                         node.caught_up, peers, tuple(self._elections), self._elections_total, self._bad_frames.count)

    def _note_election(self, term: int, primary: str | None) -> None:
        if primary is None or self._known_primary == (term, primary):
            return
        self._known_primary = (term, primary)
        self._elections_total += 1
        self._elections = [*self._elections[-(ELECTIONS_KEPT - 1):], Election(term, primary, time.time())]
        if primary == self._node.name:
            log.info("elected primary of term %d", term)
        else:
            log.info("following %s, primary of term %d", primary, term)

    def _map_dealers(self) -> None:
        self._dealers = {link.name: dealer for dealer, link in self._links.dealers.items()}


def _with_port(url: str, port: int) -> str:
    """``url``, with a port 0 replaced by ``port``."""
    parts = urlsplit(url)
    if parts.port != 0:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))
