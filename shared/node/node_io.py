"""``node-io``: the thread that runs a node's Raft core and its sockets, in every role.

It owns the RaftNode (shared.consensus.raft), the node's log
(shared.log.node_log), a ROUTER where peers send to it (every node but a
fixed primary listens), and one DEALER per peer it dials
(shared.wire.links, which reopens a link libzmq gave up on). Each pass:

1. steps the core with every frame that arrived (shared.wire.frames), and
   with the entries REPLICATION_DELAY held back that are now due, then
   ticks it (heartbeats, resends, check quorum, elections, a fixed
   primary's start and recovery);
2. takes the appends request threads proposed (``propose``, through
   shared.node.proposals, which numbers some as they are queued, and lets
   those gather for a few milliseconds: a pass woken by them alone, with
   nothing else due, is skipped until then): a known
   Idempotency-Key is answered from the log, the others are proposed to
   the core in one call, one entry per append; and the linearizable reads
   (``read_index``), one read index for all that came meanwhile;
3. acts on the pass's Readies in the order the core requires: the log
   stages each the moment the core returns it; then ``persist`` writes
   them all in one commit (fsynced under FSYNC, and always for a term or a
   vote), the primary's view of each peer is logged when it changes
   (shared.node.peer_watch), what request threads read is published
   (``state``), and only then are the messages sent, which may promise
   what was just written; then the waiting appends and reads are settled.

**Routing.** A request goes on this node's DEALER to the addressee; an
answer goes back on the connection its request came on (so a fixed
secondary, which dials no one, answers its primary through its ROUTER, and
a forged request's answer goes to the forger, not to the node it named).
A message to a peer this node does not dial goes to the ROUTER identity
of the last frame the core accepted from it. What a frame says beside the
Raft message (the sender's URLs, its frame limit) is believed only from
frames the core accepted as current (``Ready.heard``).

**A failed write** (a full disk). Nothing is sent while the log cannot be
written: a message may promise what is not on disk. A failover node then
stops (shared.service): it is as good as down, and the others elect
another primary. A fixed-role node cannot be replaced, so it goes on: the
appends it could not write are answered 503 with their ids, new ones are
refused, and each pass tries the write again; once it succeeds, what was
staged is written and sent, and appends resume.

A rule of Raft's about to break in this node's own state (SafetyViolation)
ends the thread, and the node stops: it must not answer. A frame that
claims what cannot be true is logged at ERROR and dropped (``Refused``).

Thread: ``propose``, ``read_index``, ``state``, ``showing_answers``,
``set_bound_port``, ``hand_over`` and ``stop`` from any thread; everything
else on ``node-io`` only.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import zmq

from shared.consensus.health import Health
from shared.consensus.raft import (
    WINDOW, AppendEntries, AppendReply, Mode, NotPrimary, RaftNode, Ready, Refused, Role,
)
from shared.consensus.raft_log import Entry, HardState, body_digest
from shared.consensus.raft_messages import FetchReply, FetchRequest, Message
from shared.log.node_log import NodeLog
from shared.log.sqlite_log import StoreError
from shared.node.peer_watch import PeerWatch
from shared.node.proposals import ProposalQueue
from shared.node.requests import (
    CONFLICT, NOT_PRIMARY, STEPPED_DOWN, STOPPING, STORAGE, Proposal, ReadIndexWait,
)
from shared.node.settings import NodeSettings
from shared.runtime.logging_setup import RateLimitFilter
from shared.wire import frames
from shared.wire.bad_frames import BadFrameLog
from shared.wire.curve import PlainChannel
from shared.wire.io_thread import IoThread, receive_batch
from shared.wire.links import Links

log = logging.getLogger(__name__)
oversized_log = logging.getLogger(f"{__name__}.oversized")
oversized_log.addFilter(RateLimitFilter(10.0))

#: How many of the latest elections /health lists.
ELECTIONS_KEPT = 10
#: Frames a socket queues to send to one peer at most: room for a window of
#: frames in flight (shared.consensus.raft_progress), whose bytes the window
#: bounds, and the heartbeats and answers between them.
SEND_QUEUE_FRAMES = 2 * WINDOW
#: Frames a socket holds received from one peer at most: a peer that sends
#: faster than this node reads is slowed down (TCP's back-pressure, nothing
#: is dropped), and a peer that floods this node costs it no more memory.
RECEIVE_QUEUE_FRAMES = 16
#: A pass longer than this many heartbeats means the thread itself stalled
#: (a paused process, a starved CPU): the peers' silence meanwhile proves nothing.
STALL_BEATS = 2


class NumberingBroken(RuntimeError):
    """An append answered at once is not appended where its answer said: a bug,
    and the node stops (shared.node.proposals)."""


@dataclass(frozen=True)
class PeerView:
    """What a node knows of one peer, for /health and /metrics."""

    endpoint: str | None
    url: str | None  # its PUBLIC_URL, once heard from
    last_heard: float | None  # time.monotonic(), on the primary or as frames came
    match_length: int | None = None  # on the primary: the messages it is known to hold
    health: Health | None = None  # on the primary
    diverged: str | None = None  # on the primary: why it is not written to
    resends: int = 0  # on the primary: frames resent to it for want of an answer


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
    committed: int  # the id after the last committed message
    length: int  # the id after the last message held
    first_id: int  # the first id retention kept
    at: float = 0.0  # time.monotonic() of the pass that published it
    caught_up: bool = True
    unheard: tuple[str, ...] = ()
    cluster: str | None = None
    recovering: bool = False
    peers: dict[str, PeerView] = field(default_factory=dict)
    elections: tuple[Election, ...] = ()
    elections_total: int = 0
    bad_frames: int = 0
    handing_over: bool = False
    storage_error: str | None = None  # why writes fail, while they do

    @property
    def is_primary(self) -> bool:
        return self.role is Role.PRIMARY

    def available_nodes(self) -> int:
        """This node and every peer neither declared unhealthy nor diverged (the fixed primary's quorum)."""
        return 1 + sum(view.health not in (Health.UNHEALTHY, Health.DIVERGED)
                       for view in self.peers.values())


@dataclass
class _Link:
    """A peer this node dials, as shared.wire.links sees it."""

    name: str
    endpoint: str
    frame_limit: int | None = None  # what it announced; None until it has


class NodeIo(IoThread):
    def __init__(self, ctx: zmq.Context, settings: NodeSettings, node_log: NodeLog,
                 channel: PlainChannel, fsync: bool = True, rng: random.Random | None = None) -> None:
        super().__init__(settings.thread_name)
        self._ctx = ctx
        self._settings = settings
        self._log = node_log
        self._channel = channel
        self._rng = rng or random.Random()
        self._node = RaftNode(
            settings.name, settings.peers, self._rng, storage=node_log,
            hard_state=self._starting_state(node_log, fsync),
            election_timeout=settings.election_timeout, heartbeat_interval=settings.heartbeat_interval,
            mode=settings.mode, recovery_timeout=settings.recovery_timeout, max_rto=settings.max_rto,
            incarnation=node_log.incarnation,
            max_batch_bytes=frames.MAX_BATCH_BYTES,
            # Seconds since 1970: a run begun after recovering the log outranks
            # this primary's earlier ones (RaftNode._run_after_recovery), and
            # stays within the jump a secondary takes (MAX_TERM_JUMP).
            run_floor=int(time.time()),
            # Only a fresh cluster's first election: later, a restarted `primary`
            # waits like any node, so that it does not depose a healthy primary.
            stands_at_once=settings.stands_at_once and node_log.hard_state.term == 0 and not node_log.length(),
        )
        self._links_by_name = {name: _Link(name, endpoint) for name, endpoint in settings.dials}
        self._proposals = ProposalQueue(self.wake)
        #: Notified whenever ``state`` is published: what ``showing_answers`` waits on.
        self._published = threading.Condition()
        self._waiting: list[Proposal] = []
        self._reads: queue.SimpleQueue[ReadIndexWait] = queue.SimpleQueue()
        self._read_requests: dict[int, list[ReadIndexWait]] = {}
        self._reads_committing: list[tuple[int, int, list[ReadIndexWait]]] = []  # heap by index
        self._request_ids = itertools.count(1)
        self._outbox: list[tuple[str, Message, bytes | None]] = []  # (to, message, route)
        self._replying_to: tuple[str, bytes | None] | None = None  # (sender, router identity) in a step
        self._routes: dict[str, bytes] = {}  # ROUTER identities of peers the core heard
        #: Who last fetched pages of this node's log, and its ROUTER identity: the
        #: pages after the first go at later ticks, where the first went. Not in
        #: ``_routes``: a recovering primary's question is answered whatever its
        #: term, so it may not redirect what goes to a peer the core heard.
        self._fetch_route: tuple[str, bytes | None] | None = None
        self._envelopes: dict[str, frames.Envelope] = {}  # what each peer last said of itself
        self._delayed: list[tuple[float, int, AppendEntries, bytes | None]] = []
        self._delayed_order = itertools.count()
        #: Per sender, the term and log length its held-back entries reach (while any are held).
        self._delayed_upto: dict[str, tuple[int, int]] = {}
        self._last_due = 0.0
        self._peers = PeerWatch(settings, node_log)
        self._elections: list[Election] = []
        self._elections_total = 0
        self._known_primary: tuple[int, str] | None = None
        self._announced_cluster: str | None = None
        self._run_from_id = 0
        self._bad_frames = BadFrameLog(log)
        self._envelope = frames.Envelope(settings.advertised_url, settings.frame_limit, settings.public_url)
        self._links: Links | None = None
        self._dealers: dict[str, zmq.Socket] = {}
        self._router: zmq.Socket | None = None
        self._next_link_check = 0.0
        self._last_pass = time.monotonic()
        #: Entries received in AppendEntries, and those of them it held already
        #: (resends): plain counts /metrics reads unsynchronised.
        self.received = 0
        self.duplicates = 0
        self._hand_over = threading.Event()
        self._handed_over = threading.Event()
        self._storage_error: str | None = None
        #: Set once a fixed primary has taken over its log (at once elsewhere).
        self.recovered = threading.Event()
        self.endpoint: str | None = None
        self.state = self._snapshot(time.monotonic())

    @staticmethod
    def _starting_state(node_log: NodeLog, fsync: bool) -> HardState:
        """A node that cannot vouch for its log (a new DATA_DIR, or FSYNC=off, which
        a power cut may have cut short) starts not caught up: see the core."""
        state = node_log.hard_state
        if state.caught_up and not (node_log.durable and fsync and not node_log.fresh):
            state = HardState(state.term, state.voted_for, False, state.vote_floor, state.cluster)
        return state

    # -- any thread -----------------------------------------------------------

    @property
    def log(self) -> NodeLog:
        """The node's log, for reads."""
        return self._log

    @property
    def public_url(self) -> str:
        return self._envelope.public_url

    def propose(self, proposal: Proposal, at_once: bool = False) -> bool:
        """Hand an append to ``node-io``. True if it was numbered as it was queued
        (``at_once`` asks for that; see shared.node.proposals): it is answered
        now. Otherwise the caller waits on ``proposal``."""
        return self._proposals.put(proposal, at_once)

    def showing_answers(self, timeout: float = 1.0) -> NodeState:
        """The published state, once it (and the log) shows every append this
        node answered at once: what a local read, /health and /metrics wait
        for, so that a client finds the append it was just answered. Waits at
        most ``timeout``: a stalled ``node-io`` delays a read, never holds it."""
        answered = self._proposals.answered_id
        if self.state.length < answered:
            self._proposals.hurry()
            with self._published:
                self._published.wait_for(lambda: self.state.length >= answered or not self.running,
                                         timeout)
        return self.state

    def read_index(self, wait: ReadIndexWait) -> None:
        """Ask for a linearizable read's commit length; the caller then waits on ``wait``."""
        self._reads.put(wait)
        self.wake()

    def set_bound_port(self, port: int) -> None:
        """HTTP has bound ``port``: it replaces a port 0 in the URLs sent to peers."""
        envelope = self._envelope
        self._envelope = frames.Envelope(_with_port(envelope.url, port), envelope.frame_limit,
                                         _with_port(envelope.public_url, port))

    def hand_over(self) -> None:
        """Before a planned stop: a primary hands its role to the most up-to-date
        secondary (thesis §3.10) and returns once it is no longer primary, or
        after an election timeout. Returns at once on any other node."""
        if self.running and self.state.is_primary and self._settings.mode is Mode.ELECTED:
            self._hand_over.set()
            self.wake()
            self._handed_over.wait(self._settings.election_timeout + 0.5)

    def stop(self, timeout: float = 5.0) -> None:
        self.hand_over()
        super().stop(timeout)

    # -- node-io: the loop --------------------------------------------------------

    def _open(self, poller: zmq.Poller) -> None:
        if self._settings.bind is not None:
            self._router = self._open_router()
            poller.register(self._router, zmq.POLLIN)
        self._links = Links(self._ctx, self._channel, self._settings.frame_limit, poller,
                            SEND_QUEUE_FRAMES, RECEIVE_QUEUE_FRAMES)
        for link in self._links_by_name.values():
            self._links.open(link)
        self._map_dealers()
        self._flush(time.monotonic())  # a fixed secondary's incarnation, a fresh store's state

    def _open_router(self) -> zmq.Socket:
        router = self._ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.setsockopt(zmq.MAXMSGSIZE, self._settings.frame_limit)
        router.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE_FRAMES)
        router.setsockopt(zmq.SNDHWM, SEND_QUEUE_FRAMES)
        self._channel.secure(router)
        try:
            router.bind(self._settings.bind)
        except zmq.ZMQError as exc:
            router.close()
            raise OSError(f"REPLICATION_BIND: cannot bind {self._settings.bind}: {exc}") from None
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        return router

    def _pass(self, events: dict) -> None:
        now = time.monotonic()
        if self._gathers(events, now):
            return
        self._excuse_own_stall(now)
        if self._router is not None and self._router in events:
            # As frames, not bytes: a CURVE frame names the node whose key sent it.
            receive_batch(self._router, lambda parts: self._receive(parts[1:], parts[0], now), copy=False)
        for name, dealer in self._dealers.items():
            if dealer in events:
                receive_batch(dealer, lambda parts, name=name: self._receive(parts, None, now, name),
                              copy=False)
        for peer in self._links.watch(events, now):
            self._take(self._node.peer_connected(peer, now))
        while self._delayed and self._delayed[0][0] <= now:
            _, _, message, identity = heapq.heappop(self._delayed)
            self._step(message, identity, now)
            if not self._delayed:
                self._delayed_upto.clear()
        self._take(self._node.tick(now))
        if self._hand_over.is_set():
            self._hand_over_now(now)
        if now >= self._next_link_check:
            self._next_link_check = now + self._settings.heartbeat_interval
            self._drop_abandoned_reads()
            if self._links.reopen_lost(now, self._settings.heartbeat_interval):
                self._map_dealers()
        if not self._proposals.empty() and self._node.role is not Role.RECOVERING:
            self._take_proposals(now)
        if not self._reads.empty():
            self._take_reads(now)
        self._flush(now)
        self._retain(now)

    def _gathering_until(self) -> float | None:
        """Until when appends answered at once may gather (shared.node.proposals),
        unless a timer, a read or a hand-over comes first; None: not now."""
        gathering = self._proposals.gathering_until()
        if gathering is None or not self._reads.empty() or self._hand_over.is_set():
            return None
        return min(gathering, self._timers_deadline())

    def _gathers(self, events: dict, now: float) -> bool:
        """Whether this pass is skipped while appends gather: it was woken by them alone."""
        until = self._gathering_until()
        return until is not None and now < until and self._only_woken(events)

    def _quiet_until(self) -> float | None:
        """While appends gather and nothing waits on the peers (no append, no
        read), their answers wait in the sockets too: the pass that takes the
        appends reads them all, where each would have had a pass of its own."""
        if self._waiting or self._read_requests or self._reads_committing:
            return None
        return self._gathering_until()

    def _next_deadline(self) -> float | None:
        gathering = self._gathering_until()
        return self._timers_deadline() if gathering is None else gathering

    def _timers_deadline(self) -> float:
        deadlines = [self._next_link_check]
        if self._node.next_timer() is not None:
            deadlines.append(self._node.next_timer())
        if self._delayed:
            deadlines.append(self._delayed[0][0])
        if self._node.role is Role.PRIMARY and self._settings.retention:
            deadlines.append(self._last_pass + 0.25)
        return min(deadlines)

    def _close(self) -> None:
        for proposal in self._waiting:
            proposal.release(proposal.holders, STOPPING)
        self._proposals.withdraw()
        for proposal in self._proposals.take():
            proposal.release([], NOT_PRIMARY)
        for waits in self._read_requests.values():
            for wait in waits:
                wait.release(None)
        for _, _, waits in self._reads_committing:
            for wait in waits:
                wait.release(None)
        while not self._reads.empty():
            self._reads.get().release(None)
        self._handed_over.set()
        with self._published:
            self._published.notify_all()
        if self._links is not None:
            self._links.close_all()
        if self._router is not None:
            self._router.close(linger=0)
        self._log.close()

    def _excuse_own_stall(self, now: float) -> None:
        """After this thread itself stalled (the process paused, or starved of the
        CPU), the peers' replies may not even be readable yet: their silence
        meanwhile proves nothing about them, so it does not count."""
        stalled = now - self._last_pass - self._settings.heartbeat_interval
        if stalled > STALL_BEATS * self._settings.heartbeat_interval:
            self._peers.excuse_stall(stalled, now)
        self._last_pass = now

    # -- node-io: receiving ---------------------------------------------------------

    def _receive(self, parts: list[zmq.Frame], identity: zmq.Frame | None, now: float,
                 link: str | None = None) -> None:
        try:
            message, envelope = frames.decode([part.bytes for part in parts])
        except frames.ProtocolError as exc:
            # Named by its connection: one sender of junk must not hide another's.
            who = link or (f"a peer ({identity.bytes.hex()})" if identity is not None else "a peer")
            self._bad_frames.dropped(who, "%s", exc)
            return
        if link is not None and message.sender != link:
            # Only the node this DEALER dialled (its key pinned, with CURVE) answers on it.
            self._bad_frames.dropped(link, "a frame that claims to be from %s", message.sender)
            return
        signed_by = None if link is not None else self._channel.authenticated_sender(parts[-1])
        if signed_by is not None and signed_by != message.sender:
            # Another member's key: it may not speak (or vote) for this one.
            self._bad_frames.dropped(signed_by, "a frame from %s's key that claims to be from %s",
                                     signed_by, message.sender)
            return
        self._peers.heard(message.sender, now)
        router_identity = None if identity is None else identity.bytes
        if isinstance(message, AppendEntries) and message.entries:
            self._count_received(message)
        if (isinstance(message, AppendEntries) and message.entries and self._settings.replication_delay
                and self._node.role is not Role.PRIMARY):
            self._hold_back(message, router_identity, now)
            return
        if self._step(message, router_identity, now, envelope) and link is not None:
            link_state = self._links_by_name[link]
            link_state.frame_limit = envelope.frame_limit

    def _count_received(self, message: AppendEntries) -> None:
        """Count the messages an AppendEntries brings, and those it brings again
        (held already, or held back already)."""
        self.received += sum(entry.count for entry in message.entries)
        held = min(self._log.length(), message.prev_length + len(message.entries)) - message.prev_length
        again = message.entries[:max(0, held)]
        if self._held_back_already(message):
            again = message.entries
        self.duplicates += sum(entry.count for entry in again)

    @property
    def reads_held(self) -> int:
        """Linearizable read requests node-io holds, answered or not by its clients.
        An unsynchronised reading, for tests."""
        return len(self._read_requests) + len(self._reads_committing)

    @property
    def waiting_count(self) -> int:
        """Messages held back by REPLICATION_DELAY. An unsynchronised reading, for /health."""
        return sum(entry.count for _, _, message, _ in list(self._delayed) for entry in message.entries)

    def _hold_back(self, message: AppendEntries, identity: bytes | None, now: float) -> None:
        """Keep the entries for REPLICATION_DELAY, in order; a resend of what is held already is dropped."""
        if self._held_back_already(message):
            return
        self._delayed_upto[message.sender] = (message.term, message.prev_length + len(message.entries))
        self._last_due = max(self._last_due, now + self._settings.replication_delay.draw(self._rng))
        heapq.heappush(self._delayed, (self._last_due, next(self._delayed_order), message, identity))

    def _held_back_already(self, message: AppendEntries) -> bool:
        """Whether the sender's entries held back reach as far already: a resend.
        Per sender as the frame names it, since the core has not judged it
        yet: a forger's frame under any other name, however far it claims to
        reach, does not make the primary's own frames look held. (One under
        the primary's name is the impersonation plain mode cannot stop.)"""
        reach = self._delayed_upto.get(message.sender)
        return reach is not None and (message.term, message.prev_length + len(message.entries)) <= reach

    def _step(self, message: Message, identity: bytes | None, now: float,
              envelope: frames.Envelope | None = None) -> bool:
        """Step the core; True if it heard the sender as a current member."""
        self._replying_to = (message.sender, identity)
        try:
            ready = self._node.step(message, now)
        except Refused as exc:
            self._bad_frames.dropped(message.sender, "%s", exc, level=logging.ERROR)
            return False
        finally:
            self._replying_to = None
        if isinstance(message, FetchRequest) and ready.refusal is None:
            # Only a fetch the core took: a refused one must not send a fetch's
            # later pages to whoever sent it (a forger, in plain mode).
            self._fetch_route = (message.sender, identity)
        if ready.refusal is not None:
            self._bad_frames.dropped(message.sender, "%s", ready.refusal)
        heard = ready.heard == message.sender
        if heard:
            if identity is not None:
                self._routes[message.sender] = identity
            if envelope is not None:
                self._envelopes[message.sender] = envelope
        self._take(ready, message.sender, identity)
        return heard

    # -- node-io: appends ---------------------------------------------------------------

    def _take_proposals(self, now: float) -> None:
        proposals = self._proposals.take()
        node = self._node
        if node.role is not Role.PRIMARY or node.transferring_to is not None:
            for proposal in proposals:
                proposal.release([], NOT_PRIMARY)
            return
        entries: list[Entry] = []
        fresh: list[Proposal] = []
        keyed_now: dict[str, Proposal] = {}  # keys proposed in this pass, not yet in the log
        first_id, index = self._log.next_id, self._log.length()
        for proposal in proposals:
            if proposal.numbered:
                if (proposal.first_id, proposal.index) != (first_id, index):
                    raise NumberingBroken(f"an append answered with id {proposal.first_id} (entry "
                                          f"{proposal.index}) is appended at id {first_id} (entry {index})")
            elif proposal.key is not None and self._replays(proposal, keyed_now):
                continue
            elif not proposal.assign(first_id, index, self._settings.name):
                continue  # its request timed out before this pass: nothing is appended
            else:
                fresh.append(proposal)
            entries.append(Entry(0, proposal.body, len(proposal.literals), proposal.key))
            first_id += len(proposal.literals)
            index += 1
            if proposal.key is not None:
                keyed_now[proposal.key] = proposal
        if entries:
            try:
                self._take(node.propose(entries, now))
            except NotPrimary:  # not expected: checked above, on this thread
                for proposal in fresh:
                    proposal.release([], NOT_PRIMARY)
                return
        self._waiting.extend(fresh)

    def _replays(self, proposal: Proposal, keyed_now: dict[str, Proposal]) -> bool:
        """A known key: nothing is appended; the same messages wait as a new
        append would, for the same write concern; other ones are a conflict."""
        earlier = keyed_now.get(proposal.key)
        if earlier is not None:
            first_id, index, same = earlier.first_id, earlier.index, earlier.body == proposal.body
        else:
            record = self._log.lookup(proposal.key)
            if record is None:
                return False
            first_id, index = record.first_id, record.index
            same = record.count == len(proposal.literals) and record.digest == body_digest(proposal.body)
        if not same:
            if proposal.assign(first_id, -1, self._settings.name):
                proposal.release([], CONFLICT)
        elif proposal.assign(first_id, index, self._settings.name, duplicate=True):
            self._waiting.append(proposal)
        return True

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
        reach = max(matched.values(), default=0)  # no peer holds an entry at or past it
        majority = self._settings.majority
        still = []
        for proposal in self._waiting:
            if proposal.abandoned:
                continue
            if proposal.index >= reach:
                holders = [self._settings.name]
            else:
                now_holding = [peer for peer, length in matched.items() if length > proposal.index]
                holders = [self._settings.name] + [p for p in proposal.holders[1:] if p in now_holding]
                holders += [p for p in now_holding if p not in holders]
            proposal.holders = holders
            # w >= majority promises survival: that is the commit (Raft §5.4.2),
            # which for a replayed entry of an older term may come later.
            if len(holders) >= proposal.w and (proposal.w < majority or node.commit_length > proposal.index):
                proposal.release(holders)
            else:
                still.append(proposal)
        self._waiting = still

    # -- node-io: linearizable reads -------------------------------------------------------

    def _drop_abandoned_reads(self) -> None:
        """Forgets the reads every client gave up on: a request whose answer never
        comes (the primary died with it) or an index this node never commits
        (it was cut off) would otherwise be held for ever. Requests are numbered
        in the order they came, and every read waits as long, so the abandoned
        ones are at the front; the heap is swept whole, as rarely as a link
        check, at a cost of the reads pending, never of the log."""
        requests = self._read_requests
        while requests:
            request, waits = next(iter(requests.items()))
            if not all(wait.abandoned for wait in waits):
                break
            del requests[request]
        committing = [held for held in self._reads_committing
                      if not all(wait.abandoned for wait in held[2])]
        if len(committing) < len(self._reads_committing):
            heapq.heapify(committing)
            self._reads_committing = committing

    def _take_reads(self, now: float) -> None:
        waits: list[ReadIndexWait] = []
        while not self._reads.empty():
            waits.append(self._reads.get())
        request = next(self._request_ids)
        self._read_requests[request] = waits  # one read index for every read that came meanwhile
        self._take(self._node.read_index(request, now))

    def _settle_reads(self, ready_reads: tuple[tuple[int, int | None], ...]) -> None:
        for request, index in ready_reads:
            waits = self._read_requests.pop(request, None)
            if waits is None:
                continue  # an answer to an earlier life's request, or a repeat
            if index is None:
                for wait in waits:
                    wait.release(None)
            else:
                heapq.heappush(self._reads_committing, (index, request, waits))

    def _release_reads_committed(self) -> None:
        """Reads whose index this node has now committed (and written) are answered."""
        committed = min(self._node.commit_length, self._log.durable_length)
        while self._reads_committing and self._reads_committing[0][0] <= committed:
            index, _, waits = heapq.heappop(self._reads_committing)
            committed_id = self._log.first_id_at(index)
            for wait in waits:
                wait.release(index, committed_id)

    # -- node-io: retention ---------------------------------------------------------------

    def _retain(self, now: float) -> None:
        retention = self._settings.retention
        if not retention or self._node.role is not Role.PRIMARY:
            return
        target = self._log.retention_start(self._node.commit_length, time.time(), retention.messages,
                                           retention.size, retention.seconds)
        if target is not None:
            self._take(self._node.compact(target))
            self._flush(now)

    # -- node-io: handing over ------------------------------------------------------------

    def _hand_over_now(self, now: float) -> None:
        node = self._node
        if node.role is not Role.PRIMARY:
            self._handed_over.set()
        elif node.transferring_to is None:
            self._take(node.transfer_leadership(now))
            if node.transferring_to is None:
                self._handed_over.set()  # no one to hand over to
            else:
                log.info("stopping: handing the primary's role over to %s", node.transferring_to)

    # -- node-io: acting on the core's output -------------------------------------------

    def _take(self, ready: Ready, replying_to: str | None = None, identity: bytes | None = None) -> None:
        self._log.stage(ready)
        for to, message in ready.messages:
            route = identity if to == replying_to else None
            if route is None and self._fetch_route is not None and isinstance(message, FetchReply):
                fetcher, fetch_identity = self._fetch_route
                route = fetch_identity if to == fetcher else None
            self._outbox.append((to, message, route))
        if ready.reads:
            self._settle_reads(ready.reads)

    def _flush(self, now: float) -> None:
        """Write what the Readies taken since the last flush changed, then send."""
        outbox, self._outbox = self._outbox, []
        persisted = self._persist()
        self._log.set_committed(self._node.commit_length)
        self._peers.watch(self._node, now)
        self._note_election(self._node.term, self._node.primary)
        self._announce_run()
        if self._hand_over.is_set() and self._node.role is not Role.PRIMARY:
            self._handed_over.set()
        if self._settings.mode is not Mode.FIXED_PRIMARY or self._node.role is Role.PRIMARY:
            self.recovered.set()  # a fixed primary is primary once it has a log (maybe recovered)
        # Published before anything is answered: a client told that a node holds
        # a message finds it in that node's /health too.
        self.state = self._snapshot(now)
        with self._published:
            self._published.notify_all()
        self._offer_numbering()
        if persisted:
            for to, message, route in outbox:
                self._send(to, message, route)
        self._settle()
        self._release_reads_committed()

    def _offer_numbering(self) -> None:
        """A fixed primary with its log in memory lets request threads number
        w=1 appends (shared.node.proposals): it never steps down, and its writes
        never fail."""
        if (self._settings.mode is Mode.FIXED_PRIMARY and self._node.role is Role.PRIMARY
                and not self._log.durable and self._storage_error is None):
            self._proposals.offer(self._log.next_id, self._log.length())

    def _persist(self) -> bool:
        """Write the log; False while writes fail (see the module's docstring)."""
        try:
            self._log.persist()
        except StoreError as exc:
            if self._settings.mode is Mode.ELECTED:
                log.critical("cannot write the log: %s; stopping, since the node could not keep "
                             "what it would promise", exc)
                raise
            if self._storage_error is None:
                log.error("cannot store what arrived, answering 503 until writes succeed again: %s", exc)
            self._storage_error = str(exc)
            unwritten = [p for p in self._waiting if p.index >= self._log.durable_length and not p.duplicate]
            for proposal in unwritten:
                proposal.release(proposal.holders[1:], STORAGE)
            self._waiting = [p for p in self._waiting if p not in unwritten]
            return False
        if self._storage_error is not None:
            log.info("storage accepts writes again")
            self._storage_error = None
        return True

    def _send(self, to: str, message: Message, route: bytes | None) -> None:
        if (self._settings.drop_reply_fraction and isinstance(message, AppendReply)
                and self._rng.random() < self._settings.drop_reply_fraction):
            log.debug("fault injection: dropped an answer to %s", to)
            return
        frame = frames.encode(message, self._envelope)
        limit = self._peer_limit(to)
        if limit is not None and len(frame) > limit:
            oversized_log.error("cannot send %s a frame of %d bytes: it accepts %d; set the same "
                                "MAX_MESSAGE_BYTES on every node", to, len(frame), limit)
            return
        try:
            if route is None and to in self._dealers:
                self._dealers[to].send(frame, zmq.NOBLOCK)
            elif (route := route or self._routes.get(to)) is not None and self._router is not None:
                self._router.send_multipart([route, frame], zmq.NOBLOCK)
            else:
                log.debug("no route to %s yet: a message dropped", to)
        except zmq.ZMQError:
            pass  # not connected, or its queue is full: the core sends again when it is due

    def _peer_limit(self, to: str) -> int | None:
        if to in self._links_by_name and self._links_by_name[to].frame_limit is not None:
            return self._links_by_name[to].frame_limit
        envelope = self._envelopes.get(to)
        return envelope.frame_limit if envelope is not None else None

    # -- node-io: what request threads read ------------------------------------------------

    def _snapshot(self, now: float) -> NodeState:
        node = self._node
        primary = node.primary
        heard = self._envelopes.get(primary or "")
        primary_url = self._envelope.url if primary == node.name else heard and heard.url
        progress = node.progress()
        peers = {}
        for name in (p for p in self._settings.peers if p != node.name):
            envelope = self._envelopes.get(name)
            on_primary = self._peers.watching(name)
            peers[name] = PeerView(
                self._links_by_name[name].endpoint if name in self._links_by_name else None,
                envelope.public_url if envelope else None,
                self._peers.heard_at(name),
                self._peers.match_id(name) if name in progress and on_primary else None,
                self._peers.health(node, name, now) if on_primary else None,
                progress[name].diverged if name in progress else None,
                progress[name].timeouts if name in progress else 0,
            )
        recovery = node.recovery
        return NodeState(
            node.role, node.term, primary, primary_url, self._log.shown(committed=True),
            self._log.shown(), self._log.first_id(), now, node.caught_up, node.unheard, node.cluster,
            recovery is not None, peers, tuple(self._elections), self._elections_total,
            self._bad_frames.count, node.transferring_to is not None, self._storage_error)

    def _note_election(self, term: int, primary: str | None) -> None:
        if primary is None or self._known_primary == (term, primary):
            return
        self._known_primary = (term, primary)
        self._elections_total += 1
        self._elections = [*self._elections[-(ELECTIONS_KEPT - 1):], Election(term, primary, time.time())]
        if self._settings.mode is Mode.FIXED_SECONDARY:
            log.info("following primary run %d of %s", term, primary)
        elif self._settings.mode is Mode.FIXED_PRIMARY:
            # A new run: said once the cluster is named (a new one's first append names it).
            self._announced_cluster, self._run_from_id = None, self._log.next_id
        elif primary == self._node.name:
            log.info("elected primary of term %d", term)
        else:
            log.info("following %s, primary of term %d", primary, term)

    def _announce_run(self) -> None:
        """A fixed primary says which log it leads once it knows (a new cluster's
        first append names it)."""
        node = self._node
        if (self._settings.mode is Mode.FIXED_PRIMARY and node.role is Role.PRIMARY
                and node.cluster is not None and self._announced_cluster != node.cluster):
            self._announced_cluster = node.cluster
            log.info("leading history %s as run %d from id %d", node.cluster, node.term,
                     self._run_from_id)

    def _map_dealers(self) -> None:
        self._dealers = {link.name: dealer for dealer, link in self._links.dealers.items()}


def _with_port(url: str, port: int) -> str:
    """``url``, with a port 0 replaced by ``port``."""
    parts = urlsplit(url)
    if parts.port != 0:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))
