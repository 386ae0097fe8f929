"""Raft consensus as a pure state machine: elections, replication, commit, reads.

The rules are Raft's (Ongaro & Ousterhout 2014, §5.2-5.4 and §7) with the
thesis's PreVote (§9.6), leader stickiness and check quorum (§4.2.3), the
no-op a new primary appends (§6.4), leadership transfer (§3.10) and read
index (§6.4); docs/architecture.md writes each rule out, with why, and
names every departure. Membership is fixed.

One engine, three configurations (``Mode``):

- ``ELECTED`` (failover mode, PEERS): every node may stand; a majority of
  ``peers`` elects the primary of each term.
- ``FIXED_PRIMARY`` (the fixed roles' primary): it is primary of a new term
  from its start, with no vote: its terms number its runs. Without a log
  (in memory, or a lost DATA_DIR) it first recovers one from its
  secondaries (shared.consensus.raft_recovery). It never steps down.
- ``FIXED_SECONDARY``: it never stands and never votes; it follows the
  primary of the newest term that writes to it, whoever that is (it knows
  no peers), and keeps the log of one cluster only (``HardState.cluster``).

Sans-I/O, in etcd-raft's Ready style: the shell feeds a RaftNode the time
(``tick``), each message that arrives (``step``), client writes
(``propose``), reads (``read_index``) and a planned stop
(``transfer_leadership``); each call returns a Ready, which the shell acts
on in its fields' order: persist the hard state, then the log changes
(fsync), and only then send the messages, since a reply may promise what
was just persisted (a vote, an entry). Every Ready must be applied to the
storage before the node is called again (shared.consensus.raft_log). The
node never reads a clock, draws only from the ``random.Random`` it is
given, and does no I/O.

What another node claims that cannot be true (a second primary in a term,
an entry that contradicts a committed one, a reply to what was never sent)
raises ``Refused`` before anything changed: the shell logs it at ERROR and
drops the message. Only a broken rule of the node's *own* state raises
``SafetyViolation``, which stops the node.

Leader is called **primary** here, follower **secondary**, as in the rest of
the project. Thread: the owner's I/O thread only; values are immutable.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from shared.consensus.raft_log import (
    ENTRY_TERM, Entry, HardState, KeyRecord, LogStart, LogStorage, RaftLog, SafetyViolation, Snapshot,
    Unsaved, digests_after,
)
from shared.consensus.raft_messages import (
    AppendEntries, AppendReply, FetchReply, FetchRequest, Heartbeat, HeartbeatReply, InstallSnapshot,
    Message, PreVoteRequest, ReadIndexReply, ReadIndexRequest, SnapshotReply, StateReply, StateRequest,
    TimeoutNow, VoteReply, VoteRequest,
)
from shared.consensus.raft_progress import Progress, State
from shared.consensus.raft_recovery import Recovery

__all__ = [
    "AppendEntries", "AppendReply", "Entry", "HardState", "Message", "Mode", "NotPrimary", "RaftNode",
    "Ready", "Refused", "Role", "SafetyViolation", "VoteReply", "VoteRequest",
]

#: Entries one AppendEntries carries at most, unless the node is told otherwise.
MAX_BATCH = 4096
#: Bytes of entries one AppendEntries carries at most, past its first entry,
#: unless the node is told otherwise: a frame must fit its receiver's limit.
MAX_BATCH_BYTES = 4 << 20
#: Frames in flight to one secondary at most, and their bytes (raft_progress).
#: A busy primary sends a frame per pass, as small as one append: with a
#: round trip of 0.2 s (REPLICATION_DELAY) and 32 clients at w=3, a window
#: of 8 frames ran dry and held appends back a round trip (etcd allows 256).
WINDOW = 64
WINDOW_BYTES = 8 << 20
#: Idempotency-Keys one InstallSnapshot chunk carries at most.
KEYS_PER_CHUNK = 10_000
#: The largest term a node takes on: it must always be able to stand in the
#: next one, which the wire still carries (shared.wire.frames: 2**53).
MAX_TERM = 2**53 - 2
#: How far above its own term a frame may lead a node at once. Terms grow by
#: one per election, and PreVote keeps them from growing for nothing, so a
#: jump this large is a forged frame (plain mode): taken, it would leave the
#: cluster few terms to elect in.
MAX_TERM_JUMP = 2**32


class Role(str, enum.Enum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    CANDIDATE = "candidate"
    PRE_CANDIDATE = "pre-candidate"
    RECOVERING = "recovering"  # a fixed primary taking over a log from its secondaries


class Mode(str, enum.Enum):
    ELECTED = "elected"
    FIXED_PRIMARY = "fixed-primary"
    FIXED_SECONDARY = "fixed-secondary"


class NotPrimary(Exception):
    """Only the primary takes writes; ``primary`` names the one this node follows, if any."""

    def __init__(self, primary: str | None, why: str | None = None) -> None:
        super().__init__(why or f"not the primary (the primary is {primary or 'unknown'})")
        self.primary = primary


class Refused(ValueError):
    """A message claims what cannot be true (a forgery in plain mode, or another
    node's broken state); nothing was changed. str(error) says what."""


class Ready(NamedTuple):
    """What the shell must do after a call, in this order. A named tuple: one
    is made for every call, and a tuple is made in C."""

    hard_state: HardState | None  # persist first (fsync, always), when not None
    log: Unsaved  # then apply these changes to the log (fsync, under FSYNC)
    committed: int  # the commit length, maybe unchanged
    messages: tuple[tuple[str, Message], ...]  # (to, message): only once all above is durable
    proposed: range = range(0)  # the indexes propose() appended
    #: Reads confirmed or failed: (request, the commit length to wait for, or None).
    reads: tuple[tuple[int, int | None], ...] = ()
    #: step(): the sender counts as a current member (the message was of this
    #: node's term, accepted, and from its primary where that matters): only
    #: then may the shell believe what the frame says beside the message.
    heard: str | None = None
    #: step(): why the message was refused though it was answered (a frame of
    #: another cluster's primary): the shell logs it as a dropped frame.
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class _Read:
    """A read index request a primary holds: its number, who asked (None: this
    node's shell), and when it is failed if not confirmed by then."""

    request: int
    asked_by: str | None
    deadline: float


class RaftNode:
    """One member of a Raft cluster. See the module's docstring for how to drive it."""

    def __init__(self, name: str, peers: Sequence[str], rng: random.Random, *, storage: LogStorage,
                 hard_state: HardState = HardState(), election_timeout: float,
                 heartbeat_interval: float, mode: Mode = Mode.ELECTED, max_batch: int = MAX_BATCH,
                 max_batch_bytes: int = MAX_BATCH_BYTES, window: int = WINDOW,
                 window_bytes: int = WINDOW_BYTES, max_rto: float = 10.0, stands_at_once: bool = False,
                 recovery_timeout: float = 10.0, incarnation: str = "", run_floor: int = 0) -> None:
        """``peers`` names every node, this one included (a fixed secondary: only
        itself). ``stands_at_once``: the first tick starts a ballot instead of
        the election timer, and until a first term begins the node asks again
        at every heartbeat interval (the node a fresh cluster should elect first).
        ``run_floor``: the lowest term a fixed primary begins a run in once it
        recovered its log (the shell passes its clock: ``_run_after_recovery``)."""
        if name not in peers or len(set(peers)) != len(peers):
            raise ValueError(f"peers {peers!r} must name {name!r} once, and every node once")
        if not 0 < heartbeat_interval < election_timeout:
            raise ValueError("need 0 < heartbeat_interval < election_timeout")
        self.name, self.peers, self.mode = name, tuple(peers), mode
        self._incarnation = incarnation  # this life's name, in every reply (AppendReply)
        self._others = tuple(peer for peer in peers if peer != name)
        self._majority = len(peers) // 2 + 1
        self._rng = rng
        self._election_timeout = election_timeout
        self._heartbeat_interval = heartbeat_interval
        self._recovery_timeout = recovery_timeout
        self._run_floor = run_floor
        # How long a primary holds a read it cannot confirm before it fails it: at
        # least as long as its own shell waits for one (shared.node.linearizable).
        self._read_timeout = 2 * election_timeout
        self._max_batch, self._max_batch_bytes = max_batch, max_batch_bytes
        self._window, self._window_bytes, self._max_rto = window, window_bytes, max_rto
        self._stands_at_once = stands_at_once
        self._term, self._voted_for = hard_state.term, hard_state.voted_for
        self._caught_up, self._vote_floor = hard_state.caught_up, hard_state.vote_floor
        self._cluster = hard_state.cluster
        self._saved_hard_state = self._hard_state_fields()
        self._log = RaftLog(storage)
        self._role = Role.SECONDARY
        self._primary: str | None = None
        self._heard_from_primary_at: float | None = None
        #: A secondary: (term, length): its first ``length`` entries are known to
        #: be those of the primary of ``term``, as a frame of that primary showed
        #: in this life. It commits no further (``_matched_length``).
        self._matched = (self._term, 0)
        self._election_deadline: float | None = None  # set by the first tick: the clock starts then
        self._votes: set[str] = set()  # a pre-candidate's or candidate's, its own included
        #: What the ballot under way asks every peer (a pre-candidate's or candidate's).
        self._ballot_request: PreVoteRequest | VoteRequest | None = None
        self._progress: dict[str, Progress] = {}
        self._seq = 0  # the last seq this primary sent in its term
        self._heartbeat_due = 0.0
        self._outbox: list[tuple[str, Message]] = []
        self._reads_done: list[tuple[int, int | None]] = []
        #: On the primary: reads waiting for a majority to answer a seq sent
        #: after them: (seq, commit length at arrival, read), in the order they
        #: came, so by seq and by deadline: both are settled from the front.
        self._reads_confirming: deque[tuple[int, int, _Read]] = deque()
        #: Reads that came before this term's first entry was committed, in order.
        self._reads_waiting_commit: deque[_Read] = deque()
        self._transferee: str | None = None
        self._transfer_deadline = 0.0
        #: A node that is not caught up: each peer's term and log (last term,
        #: length) as it last told them since this node's start, and the
        #: highest term any peer spoke in (its vote floor, once caught up).
        self._heard_logs: dict[str, tuple[int, int, int]] = {}
        self._highest_term_heard = self._term
        #: Peers it must hear to vote again: all but (majority - 2) of them, so
        #: that it hears at least one of any majority that counted it before.
        self._enough_heard = len(self._others) - (self._majority - 2)
        self._heard_a_primary = False
        self._started_at: float | None = None  # the first tick: when its clock began
        #: A secondary: the snapshot whose chunks it receives: its start, key count, keys so far.
        self._snapshot_in: tuple[LogStart, int, list[KeyRecord]] | None = None
        #: The snapshot whose keys a recovering fixed primary pages through, and who it is.
        self._snapshot_lent: tuple[str, Snapshot] | None = None
        #: The pages of a fetch still to send: to whom, where the next begins, how many.
        self._pages_lent: tuple[str, int, int] | None = None
        self._recovery: Recovery | None = None
        self._vouched = False  # a primary said this node holds every committed entry
        self._next_term_query = 0.0  # when a node that is not caught up asks the unheard again
        self._heard: str | None = None
        self._refusal: str | None = None

    # -- What the shell may read --------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def voted_for(self) -> str | None:
        return self._voted_for

    @property
    def primary(self) -> str | None:
        """The primary of the current term, when this node knows it."""
        return self._primary

    @property
    def caught_up(self) -> bool:
        """False for a node started from an empty data directory until it may vote
        (docs/architecture.md, "A node that lost its disk")."""
        return self._caught_up

    @property
    def unheard(self) -> tuple[str, ...]:
        """While not caught up: the peers it has not heard from since its start."""
        return () if self._caught_up else tuple(p for p in self._others if p not in self._heard_logs)

    @property
    def cluster(self) -> str | None:
        return self._cluster

    @property
    def commit_length(self) -> int:
        return self._log.commit_length

    @property
    def log_length(self) -> int:
        return len(self._log)

    @property
    def log_start(self) -> LogStart:
        return self._log.start

    @property
    def recovery(self) -> Recovery | None:
        """A fixed primary's recovery while it runs."""
        return self._recovery

    @property
    def transferring_to(self) -> str | None:
        return self._transferee

    def next_timer(self) -> float | None:
        """When a tick next has work; None before the first tick."""
        if self._pages_lent is not None:
            return 0.0  # the next page of a fetch: at once
        if self._role is Role.PRIMARY:
            deadlines = [self._heartbeat_due]
            deadlines += [d for p in self._progress.values() if (d := p.retransmit_deadline()) is not None]
            return min(deadlines)
        if self._role is Role.RECOVERING:
            return self._recovery.deadline()
        if self.mode is Mode.FIXED_SECONDARY:
            return None  # it never stands: no timer of its own (a past deadline would spin its shell)
        if not self._caught_up and self._election_deadline is not None:
            return min(self._election_deadline, self._next_term_query)
        return self._election_deadline

    def progress(self) -> dict[str, Progress]:
        """On the primary, what it knows of each secondary (read-only use); else empty."""
        return dict(self._progress)

    def match_lengths(self) -> dict[str, int]:
        """On the primary, how many of its entries each secondary is known to
        hold (durably: it answers only once it has stored them); else empty."""
        return {peer: progress.match for peer, progress in self._progress.items()
                if progress.diverged is None}

    # -- The calls that drive it ----------------------------------------------

    def tick(self, now: float) -> Ready:
        """Lets the timers run: heartbeats, resends and check quorum on a primary,
        the election timeout elsewhere, a fixed primary's start; and sends the
        next page of a fetch a recovering primary asked this node for."""
        if self._started_at is None:
            self._started_at = now
        if self._pages_lent is not None:
            self._lend_next_page()
        if self._role is Role.PRIMARY:
            self._tick_as_primary(now)
        elif self._role is Role.RECOVERING:
            self._step_recovery(now)
        elif self.mode is Mode.FIXED_PRIMARY:
            self._start_fixed_primary(now)
        elif self.mode is Mode.FIXED_SECONDARY:
            pass  # it never stands
        else:
            self._tick_election_timer(now)
        return self._ready()

    def _tick_election_timer(self, now: float) -> None:
        if not self._caught_up and now >= self._next_term_query:
            self._ask_unheard(now)
        if self._election_deadline is None and self._stands_at_once:
            self._campaign(now)
        elif self._election_deadline is None:
            self._start_first_timer(now)
        elif now >= self._election_deadline:
            self._campaign(now)

    def step(self, message: Message, now: float) -> Ready:
        """Takes one message from another node. Raises Refused (nothing changed)
        for a message that claims what cannot be true."""
        self._check_sender(message)
        self._check_term(message)
        self._check_entry_terms(message)
        self._heard = self._refusal = None
        self._check_no_committed_conflict(message)
        if self._keeps_another_cluster(message) and self._may_join_another_cluster(message):
            self._join_another_cluster(message)
        if self._keeps_another_cluster(message):
            self._refuse_other_cluster(message)
        elif isinstance(message, (StateRequest, FetchRequest)):
            self._answer_recovery(message)  # a question that changes nothing, whatever its term
        elif isinstance(message, (StateReply, FetchReply)):
            self._on_recovery_reply(message, now)
        elif self.mode is Mode.FIXED_PRIMARY and message.term > self._term:
            self._on_newer_term_as_fixed_primary(message)
        elif (self.mode is Mode.FIXED_PRIMARY and message.term < self._term
              and isinstance(message, AppendReply) and message.diverged is not None):
            self._on_other_cluster_kept(message)
        elif message.term > self._term and self._adopts_term_of(message, now):
            self._become_secondary(message.term, now)
            self._dispatch_current(message, now)
        elif message.term < self._term:
            self._answer_stale(message)
        else:
            self._dispatch_current(message, now)
        if not self._caught_up:
            self._note_heard(message)
            self._maybe_caught_up()
        return self._ready(heard=self._heard, refusal=self._refusal)

    def _on_newer_term_as_fixed_primary(self, message: Message) -> None:
        """A fixed primary never steps down: a secondary that follows a newer
        primary (another cluster's, or a forger's) is written to no more."""
        if isinstance(message, (AppendReply, HeartbeatReply, SnapshotReply)) and message.sender in self._progress:
            self._progress[message.sender].diverged = f"it follows a newer primary (term {message.term})"
        elif isinstance(message, ReadIndexRequest):
            self._send(message.sender, ReadIndexReply(self.name, self._term, message.request, None))

    def _on_other_cluster_kept(self, reply: AppendReply) -> None:
        """A secondary that keeps another cluster's log answers in its own term,
        which may be below this run's (a run after a recovery that did not hear
        it is numbered by the clock): not stale for that, it is written to no
        more. (In this run's term, ``_on_reply`` says the same.) Unless the
        refusal comes from a life of it that has ended: emptied, it may have
        joined this cluster since."""
        progress = self._progress.get(reply.sender)
        if self._role is not Role.PRIMARY or progress is None:
            return
        if reply.incarnation in progress.retired_incarnations:
            return
        if reply.incarnation != progress.incarnation:
            self._new_life(progress, reply)  # so that a later life retires this one
        progress.diverged = reply.diverged

    def propose(self, entries: Sequence[Entry], now: float) -> Ready:
        """Appends ``entries`` (their terms are set here) to this primary's log;
        ``Ready.proposed`` holds their indexes. They are committed once
        ``Ready.committed`` passes them. Raises NotPrimary on any other node, and
        while the primary hands its role over."""
        if self._role is not Role.PRIMARY:
            raise NotPrimary(self._primary)
        if self._transferee is not None:
            raise NotPrimary(None, f"the primary is handing its role over to {self._transferee}")
        start = len(self._log)
        self._log.append([Entry(self._term, e.body, e.count, e.key) for e in entries])
        self._replicate(now)
        self._advance_commit(now)
        return self._ready(proposed=range(start, len(self._log)))

    def read_index(self, request: int, now: float) -> Ready:
        """Asks for the commit length a linearizable read must wait for (thesis
        §6.4): ``Ready.reads`` gives it once a majority has confirmed this node
        (or its primary) is still primary, or None if that cannot be had here."""
        if self._role is Role.PRIMARY:
            self._take_read(self._new_read(request, None, now), now)
        elif self._primary is not None and self.mode is not Mode.FIXED_PRIMARY:
            self._send(self._primary, ReadIndexRequest(self.name, self._term, request))
        else:
            self._reads_done.append((request, None))
        return self._ready()

    def compact(self, length: int) -> Ready:
        """Moves the log's start to ``length`` (retention), at most the commit
        length. The secondaries follow: the start rides on every frame."""
        if length > self._log.start.index:
            self._log.compact(min(length, self._log.commit_length))
        return self._ready()

    def peer_connected(self, peer: str, now: float) -> Ready:
        """A connection to ``peer`` came up (or back): what waits for it goes now,
        rather than at the next heartbeat or retransmission timeout. A primary
        probes it again at once: what was in flight may be lost with the old
        connection, and a secondary that restarted commits only what a frame of
        this primary matched in its new life (``_commit_matched``), so it needs
        one even when no write comes. Not a timeout: none is counted, and the
        retransmission timeout does not grow. A ballot under way asks it too."""
        progress = self._progress.get(peer)
        if self._role is Role.PRIMARY and progress is not None:
            self._send(peer, Heartbeat(self.name, self._term, self._next_seq(),
                                       min(progress.match, self._log.commit_length), self._log.start.index,
                                       self._cluster, self._vouches_for(progress)))
            progress.reprobe(self._seq + 1)
            self._send_to(peer, progress, now)
        elif self._role is Role.RECOVERING:
            self._recovery.ask_again(peer, now)
            self._step_recovery(now)
        else:
            if self._role in (Role.PRE_CANDIDATE, Role.CANDIDATE) and peer not in self._votes:
                # Its ballot's request was refused while the link was down: a node
                # that stood before its peers listened (a fresh cluster's first)
                # asks at once, not at its next try.
                self._send(peer, self._ballot_request)
            if not self._caught_up and peer in self.unheard:
                self._send(peer, StateRequest(self.name, self._term))
        return self._ready()

    def transfer_leadership(self, now: float) -> Ready:
        """A primary about to stop hands its role to the most up-to-date secondary
        (thesis §3.10): it takes no more writes, catches that secondary up, and
        tells it to stand at once. Abandoned after an election timeout."""
        if self._role is Role.PRIMARY and self.mode is Mode.ELECTED and self._others:
            target = max(self._others, key=lambda p: (self._progress[p].match, self._progress[p].heard_at))
            self._transferee, self._transfer_deadline = target, now + self._election_timeout
            self._maybe_time_out_transferee()
        return self._ready()

    # -- The rules that a test may break, one at a time -------------------------

    def _log_is_up_to_date(self, last_log_term: int, log_length: int) -> bool:
        """§5.4.1, the election restriction: a voter's log must not be more up to
        date than the candidate's (later last term, or same term and longer), so
        that whoever wins holds every committed entry."""
        return (last_log_term, log_length) >= (self._log.last_term, len(self._log))

    def _takes_page(self, page: FetchReply) -> bool:
        """A recovering fixed primary takes a page (entries, or the news that the
        source's log ends there) only where the source's log before it is the
        one recovered so far: same length, last term and checksum (§5.3's check
        of AppendEntries). Else the source restarted without its log since it
        answered, or holds another log than the one taken, and is passed over."""
        return page.prev_term is not None and self._log.holds(page.prev_length, page.prev_term,
                                                              page.prev_digest)

    def _commit_point(self) -> int:
        """The longest prefix of the log that a majority holds, this node included."""
        lengths = sorted([len(self._log), *self.match_lengths().values()], reverse=True)
        return lengths[self._majority - 1] if len(lengths) >= self._majority else 0

    def _may_commit(self, length: int) -> bool:
        """§5.4.2: a primary commits by counting replicas only up to an entry of its
        own term; the entries before it are committed with it. An older term's
        entry held by a majority may still be overwritten (the paper's Figure 8)."""
        return self._log.term_at(length) == self._term

    def _campaigns_with_pre_vote(self) -> bool:
        """§9.6: ask first whether a majority would vote, without raising the term,
        so that a node that was cut off cannot depose a healthy primary on return."""
        return True

    def _vouches_for(self, progress: Progress) -> str | None:
        """Whether a secondary that started from an empty disk now holds every
        entry committed so far, those its lost acknowledgements counted for
        included: it holds this primary's commit length, and that ends in an
        entry of this term (so, by leader completeness, it covers every
        earlier term's). This primary stopped counting that secondary's old
        acknowledgements when it first heard it was not caught up
        (``_forget_lost_acknowledgements``), so whatever it committed after
        that counted the secondary's new life only."""
        commit = self._log.commit_length
        vouched = progress.lost_disk and progress.match >= commit and self._log.term_at(commit) == self._term
        return progress.incarnation if vouched else None

    def _hard_state(self) -> HardState:
        """What a restart must not forget."""
        return HardState(*self._hard_state_fields())

    def _hard_state_fields(self) -> tuple:
        """HardState's fields as a plain tuple: what every Ready compares with
        the last one saved (cheaper than a HardState, and the state is rarely new)."""
        return self._term, self._voted_for, self._caught_up, self._vote_floor, self._cluster

    # -- Elections --------------------------------------------------------------

    def _reset_election_timer(self, now: float) -> None:
        # Random in [T, 2T], so that one node usually times out well before the others.
        self._election_deadline = now + self._rng.uniform(self._election_timeout,
                                                          2 * self._election_timeout)

    def _start_first_timer(self, now: float) -> None:
        """A node just started that was in a cluster before (a term above 0)
        stands after a random time in [T/5, 2T/5], not [T, 2T] (a departure:
        docs/architecture.md, "A node's first timeout"). PreVote and the sticky
        primary keep it from disturbing a primary that is alive: whoever hears
        that primary grants no pre-vote, so the early ballot changes no one's
        term. Where no primary is alive (the whole cluster restarted), the
        first election begins that much sooner. A node of a new cluster waits
        [T, 2T]: the node that stands at once is to be its first primary, and
        its ballot succeeds only once its peers have heard one another."""
        if self._term == 0:
            self._reset_election_timer(now)
        else:
            self._election_deadline = now + self._rng.uniform(self._election_timeout / 5,
                                                              2 * self._election_timeout / 5)

    def _campaign(self, now: float, transfer: bool = False) -> None:
        self._reset_election_timer(now)  # if this ballot fails, the next one starts then
        if self._stands_at_once and self._term == 0:
            # A fresh cluster's first node asks again each heartbeat: its peers
            # may not be listening yet. Pre-votes change no one's state.
            self._election_deadline = now + self._heartbeat_interval
        if not self._caught_up and not self._may_vote_before_caught_up(
                PreVoteRequest(self.name, self._term_to_stand_in(), self._log.last_term, len(self._log)), now):
            # It started from nothing: it stands once it would vote for itself.
            # Its primary was silent for an election timeout all the same: it
            # names none, as a ballot would, so nothing is forwarded to a dead one.
            if not transfer:
                self._primary, self._heard_from_primary_at = None, None
            return
        if transfer or not self._campaigns_with_pre_vote():
            self._start_candidacy(now, transfer)
        else:
            self._start_ballot(Role.PRE_CANDIDATE, now)

    def _term_to_stand_in(self) -> int:
        """The term a ballot of this node asks for: the next above its own term and
        its vote floor (it may have voted in any term up to the floor before it
        lost its disk), and, while it is not caught up, above every term it
        heard (it votes in none of those, for itself neither)."""
        highest = max(self._term, self._vote_floor)
        if not self._caught_up:
            highest = max(highest, self._highest_term_heard)
        return highest + 1

    def _start_candidacy(self, now: float, transfer: bool = False) -> None:
        self._term = self._term_to_stand_in()
        self._voted_for = self.name
        self._start_ballot(Role.CANDIDATE, now, transfer)

    def _start_ballot(self, role: Role, now: float, transfer: bool = False) -> None:
        self._role, self._primary, self._heard_from_primary_at = role, None, None
        self._votes = {self.name}
        last_term, length = self._log.last_term, len(self._log)
        if role is Role.PRE_CANDIDATE:
            self._ballot_request = PreVoteRequest(self.name, self._term_to_stand_in(), last_term, length)
        else:
            self._ballot_request = VoteRequest(self.name, self._term, last_term, length, transfer)
        for peer in self._others:
            self._send(peer, self._ballot_request)
        self._count_votes(now)

    def _count_votes(self, now: float) -> None:
        if len(self._votes) < self._majority:
            return
        if self._role is Role.PRE_CANDIDATE:
            self._start_candidacy(now)
        else:
            self._become_primary(now)

    def _in_lease(self, now: float) -> bool:
        """§4.2.3: while this node believes a primary is alive, it votes for no one
        else, so a node that merely lost touch cannot depose a healthy primary."""
        if self._role is Role.PRIMARY:
            return True
        heard_at = self._heard_from_primary_at
        return heard_at is not None and now - heard_at < self._election_timeout

    def _may_vote_for(self, candidate: str, term: int) -> bool:
        """At most one vote per term: a later term is open, the current one only
        if this node has not voted, or voted for ``candidate`` (a repeated
        request); never a term at or below the vote floor (a lost disk's)."""
        if term <= self._vote_floor:
            return False
        return term > self._term or self._voted_for in (None, candidate)

    def _grants(self, request: PreVoteRequest | VoteRequest, now: float) -> bool:
        transfer = isinstance(request, VoteRequest) and request.transfer
        return (self.mode is Mode.ELECTED
                and (transfer or not self._in_lease(now))
                and (self._caught_up or self._may_vote_before_caught_up(request, now))
                and self._may_vote_for(request.sender, request.term)
                and self._log_is_up_to_date(request.last_log_term, request.log_length))

    def _may_vote_before_caught_up(self, request: PreVoteRequest | VoteRequest, now: float) -> bool:
        """A node that started from an empty data directory may have lost a disk
        on which it voted, in any term up to the highest its peers are in, and
        acknowledged committed entries it no longer holds. It votes when:

        - the cluster is new: the candidate stands in the first term with an
          empty log, and this node and every node it heard are as new (term
          0, nothing held); or
        - it has heard enough peers (all but majority - 2: at least one of any
          majority that counted it before) and votes in a term above every term
          they spoke in, for a candidate whose log is at least as up to date as
          every log they told it of. A committed entry it helped commit is held
          by one of them, and a log at least as up to date holds it (§5.4.3)."""
        candidate = (request.last_log_term, request.log_length)
        if self._is_a_first_election(request, now):
            return True
        return (len(self._heard_logs) >= self._enough_heard and request.term > self._highest_term_heard
                and all(candidate >= log[1:] for log in self._heard_logs.values()))

    def _is_a_first_election(self, request: PreVoteRequest | VoteRequest, now: float) -> bool:
        """The first term's candidate, with nothing held, and nothing this node heard
        in an election timeout since its start says that the cluster ever had a
        primary: no log, no primary's frame, no term but the first (the one being
        asked about, or voted in). A primary would have been heard by then."""
        new = (0, 0, 0)
        return (request.term == 1 and (request.last_log_term, request.log_length) == (0, 0)
                and self._term <= 1 and len(self._log) == 0 and not self._heard_a_primary
                and self._started_at is not None and now - self._started_at >= self._election_timeout
                and all(log == new for peer, log in self._heard_logs.items() if peer != request.sender))

    def _on_pre_vote_request(self, request: PreVoteRequest, now: float) -> None:
        granted = self._grants(request, now)
        term = request.term if granted else self._term
        self._send(request.sender, VoteReply(self.name, term, granted, pre_vote=True))

    def _on_vote_request(self, request: VoteRequest, now: float) -> None:
        granted = self._grants(request, now)
        if granted:
            self._voted_for = request.sender  # persisted by this same Ready, before the reply
            self._reset_election_timer(now)
        self._send(request.sender, VoteReply(self.name, self._term, granted, pre_vote=False))

    def _on_vote_reply(self, reply: VoteReply, now: float) -> None:
        if reply.granted and self._counts_for_this_ballot(reply):
            self._votes.add(reply.sender)
            self._count_votes(now)

    def _counts_for_this_ballot(self, reply: VoteReply) -> bool:
        """A late reply to an earlier ballot must not count towards this one."""
        if reply.pre_vote:
            return self._role is Role.PRE_CANDIDATE and reply.term == self._term_to_stand_in()
        return self._role is Role.CANDIDATE and reply.term == self._term

    # -- A node that lost its disk ----------------------------------------------------

    def _on_recovery_reply(self, reply: StateReply | FetchReply, now: float) -> None:
        """A recovering fixed primary takes the answer; a node that is not caught up
        moves to a later term a peer tells it of (``_adopts_term_told``)."""
        if self._role is Role.RECOVERING:
            self._recovery.take(reply, now)
            self._step_recovery(now)
        elif self._adopts_term_told(reply):
            self._become_secondary(reply.term, now)

    def _adopts_term_told(self, reply: StateReply | FetchReply) -> bool:
        """A node that is not caught up takes on, as a secondary with no vote, a
        later term a peer's StateReply names. It votes, for itself too, only in
        terms above every term it heard, so it must stand above that one
        (``_term_to_stand_in``); taking it on makes its term say so, to its
        peers too. Before, a cluster whose nodes all restarted not caught up
        (FSYNC=off) in different terms, the longest log in a lower one, elected
        no one: the node that would win could not stand above the term it
        heard, and the node that could stand lacked its log. Safe: a term taken
        without a vote promises nothing, and the node still votes only above
        the highest term it heard."""
        return (self.mode is Mode.ELECTED and not self._caught_up and isinstance(reply, StateReply)
                and reply.term > self._term)

    def _note_heard(self, message: Message) -> None:
        """A node that is not caught up keeps track of the logs its peers hold,
        and of the highest term any spoke in: it will not vote in that term or below."""
        if isinstance(message, StateReply):
            self._heard_logs[message.sender] = (message.term, message.last_log_term, message.log_length)
        elif isinstance(message, (PreVoteRequest, VoteRequest)):  # the candidate's term before it stood
            self._heard_logs[message.sender] = (message.term - 1, message.last_log_term, message.log_length)
        if not _carries_a_term_asked_about(message):  # no one spoke in such a term yet
            self._highest_term_heard = max(self._highest_term_heard, message.term)
        if isinstance(message, (AppendEntries, Heartbeat, InstallSnapshot)):
            self._heard_a_primary = True

    def _ask_unheard(self, now: float) -> None:
        """Secondaries do not speak to one another: ask those not heard from yet
        what they hold (a question that changes nothing), to learn their terms."""
        self._next_term_query = now + self._heartbeat_interval
        for peer in self.unheard:
            self._send(peer, StateRequest(self.name, self._term))

    def _maybe_caught_up(self) -> None:
        """Vouched for by its primary, and heard from enough peers (see
        ``_may_vote_before_caught_up``): it may vote again, in terms above any
        it may have voted in before it lost its disk (each such vote went to a
        node of a majority whose terms are now at least that high, one of
        which it heard)."""
        if self._caught_up or not self._vouched or len(self._heard_logs) < self._enough_heard:
            return
        self._caught_up = True
        self._vote_floor = max(self._vote_floor, self._highest_term_heard, self._term)
        self._heard_logs = {}

    # -- Terms and roles ----------------------------------------------------------

    def _check_term(self, message: Message) -> None:
        asked_about = _carries_a_term_asked_about(message)
        if not 0 <= message.term <= MAX_TERM + asked_about:
            raise Refused(f"term {message.term} is out of range")
        if message.term > self._term + MAX_TERM_JUMP:
            raise Refused(f"term {message.term} is implausibly far above this node's {self._term}")

    @staticmethod
    def _check_entry_terms(message: Message) -> None:
        """Entries as a log holds them: their terms never fall, the first is at least
        the term of the entry before it, and (from a primary) none is above the
        frame's term, since a node takes a term before it holds an entry of it.
        Anything else is a forgery or a broken node, and taken it would leave this
        log's last term, which elections compare, wrong for good (one entry of a
        term far above every real one outranks every log)."""
        if not isinstance(message, (AppendEntries, FetchReply)) or not message.entries:
            return
        terms = list(map(ENTRY_TERM, message.entries))
        first, last = terms[0], terms[-1]
        ceiling = message.term if isinstance(message, AppendEntries) else MAX_TERM
        if terms != sorted(terms) or first < (message.prev_term or 0) or last > ceiling:
            raise Refused(f"{message.sender}'s entries are not as a log holds them: terms from "
                          f"{first} to {last} after term {message.prev_term}, in a frame of term "
                          f"{message.term}")

    def _keeps_another_cluster(self, message: Message) -> bool:
        """A primary's frame of another cluster than the one this node keeps. (A
        StateReply names its sender's cluster too, for a recovery to count.)"""
        return (isinstance(message, (AppendEntries, Heartbeat, InstallSnapshot))
                and message.cluster is not None and self._cluster not in (None, message.cluster))

    def _may_join_another_cluster(self, message: Message) -> bool:
        """A fixed secondary that never held an entry has no log to keep: it may
        join the cluster of the primary that writes to it, in that primary's
        term (a new in-memory primary that did not hear it while recovering
        named a new cluster). Safe: it never votes, so the term it leaves
        promised nothing, and it holds nothing that could conflict."""
        return (self.mode is Mode.FIXED_SECONDARY and not len(self._log)
                and isinstance(message, (AppendEntries, Heartbeat, InstallSnapshot)))

    def _join_another_cluster(self, message: AppendEntries | Heartbeat | InstallSnapshot) -> None:
        """Takes the frame's term and forgets the cluster it kept: the frame, taken
        as usual next, names the new one (``_may_join_another_cluster``)."""
        self._cluster, self._term, self._primary = None, message.term, None
        self._matched = (message.term, 0)

    def _refuse_other_cluster(self, message: AppendEntries | Heartbeat | InstallSnapshot) -> None:
        """A fixed secondary keeps one cluster's log: a primary of another is told
        so (it stops writing here), and nothing changes, its term included."""
        why = (f"it keeps the log of cluster {self._cluster} ({len(self._log)} entries), "
               f"not {message.cluster}'s")
        self._refusal = f"a frame of {message.sender}, primary of another cluster: {why}"
        self._send(message.sender, AppendReply(self.name, self._term, message.seq, False, diverged=why,
                                               incarnation=self._incarnation))

    def _check_sender(self, message: Message) -> None:
        if message.sender == self.name:
            raise Refused(f"a message claims to come from this node, {self.name}")
        if self.mode is not Mode.FIXED_SECONDARY and message.sender not in self._others:
            raise Refused(f"{message.sender!r} is not a peer of {self.name!r}")

    def _adopts_term_of(self, message: Message, now: float) -> bool:
        """Whether a message of a later term moves this node to that term."""
        if _carries_a_term_asked_about(message):
            return False  # a term no one stands in yet, not the sender's
        if isinstance(message, VoteRequest):
            # §4.2.3: refused without a term change, unless its primary asked it to stand.
            return self.mode is Mode.ELECTED and (message.transfer or not self._in_lease(now))
        if isinstance(message, (ReadIndexRequest, ReadIndexReply, TimeoutNow)):
            return False  # only a primary's own frames, or a vote, can start a term here
        return True

    def _answer_stale(self, message: Message) -> None:
        """A message of an earlier term: tell its sender the current term, so that a
        deposed primary or a lagging candidate catches up. Replies need no answer.
        An answer names this node's life, as every answer does: the same node
        may be primary again in this term by the time it comes (re-elected, the
        frame held back by REPLICATION_DELAY or queued while a link was down),
        and an answer naming no life would look like a new one, retiring the
        real life, whose answers that primary would then ignore all term."""
        if isinstance(message, AppendEntries):
            self._send(message.sender, AppendReply(self.name, self._term, message.seq, False,
                                                   retry_length=len(self._log), caught_up=self._caught_up,
                                                   incarnation=self._incarnation))
        elif isinstance(message, (Heartbeat, InstallSnapshot)):
            self._send(message.sender, HeartbeatReply(self.name, self._term, message.seq, len(self._log),
                                                      self._caught_up, self._incarnation))
        elif isinstance(message, (PreVoteRequest, VoteRequest)):
            pre_vote = isinstance(message, PreVoteRequest)
            self._send(message.sender, VoteReply(self.name, self._term, False, pre_vote))
        elif isinstance(message, ReadIndexRequest):
            self._send(message.sender, ReadIndexReply(self.name, self._term, message.request, None))

    def _dispatch_current(self, message: Message, now: float) -> None:
        match message:
            case PreVoteRequest():
                self._on_pre_vote_request(message, now)
            case VoteRequest():
                self._on_vote_request(message, now)
            case VoteReply():
                self._on_vote_reply(message, now)
            case AppendEntries() | Heartbeat() | InstallSnapshot():
                self._on_primary_frame(message, now)
            case AppendReply() | HeartbeatReply() | SnapshotReply():
                self._on_reply(message, now)
            case TimeoutNow():
                if message.sender == self._primary and self.mode is Mode.ELECTED:
                    self._campaign(now, transfer=True)
            case ReadIndexRequest():
                self._on_read_index_request(message, now)
            case ReadIndexReply():
                self._reads_done.append((message.request, message.index))
        if message.term == self._term and not isinstance(message, (AppendEntries, Heartbeat, InstallSnapshot)):
            self._heard = message.sender

    def _become_secondary(self, term: int, now: float) -> None:
        if term > self._term:
            self._term, self._voted_for = term, None
            if self.mode is Mode.FIXED_SECONDARY:
                self._log.forget_commit()
        if self._role is Role.PRIMARY:
            self._fail_reads()
        self._role, self._primary, self._heard_from_primary_at = Role.SECONDARY, None, None
        self._votes = set()
        self._progress = {}
        self._transferee = None
        self._reset_election_timer(now)

    def _become_primary(self, now: float) -> None:
        self._role, self._primary = Role.PRIMARY, self.name
        self._caught_up = True  # elected, it holds every committed entry (§5.4.1)
        self._votes = set()
        self._seq = 0
        self._progress = {peer: Progress(len(self._log), now, self._window, self._window_bytes,
                                         self._max_rto)
                          for peer in self._others}
        # §6.4: an entry of the new term, so that the earlier terms' entries get
        # committed (§5.4.2) without waiting for a client's write.
        self._log.append((Entry(self._term),))
        self._broadcast_heartbeat(now)
        self._replicate(now)
        self._advance_commit(now)

    # -- A fixed primary ------------------------------------------------------------

    def _start_fixed_primary(self, now: float) -> None:
        """At its first tick: a new term at once if it kept a log (or has no
        secondaries to ask); otherwise, first recover one from them."""
        if len(self._log) or self._term or not self._others:
            self._begin_fixed_term(self._term + 1, now)
        else:
            self._role = Role.RECOVERING
            self._recovery = Recovery(self.name, self._others, now, self._heartbeat_interval,
                                      self._recovery_timeout, self._takes_page)
            self._step_recovery(now)

    def _begin_fixed_term(self, term: int, now: float) -> None:
        if self._cluster is None:  # a new cluster: named as its first run begins
            self._cluster = f"{self._rng.getrandbits(64):016x}"
        self._term, self._voted_for = term, self.name
        self._become_primary(now)

    def _step_recovery(self, now: float) -> None:
        """Ask, fetch, and once recovery ends begin the new term (VR §4.3)."""
        recovery = self._recovery
        for peer, request in recovery.requests(now):
            self._send(peer, request)
        snapshot, entries = recovery.take_recovered()
        if snapshot is not None:
            self._log.install(snapshot)
        if entries:
            self._log.append(entries)
        if recovery.done:
            self._recovery = None
            self._cluster = recovery.cluster or self._cluster
            self._log.commit_to(len(self._log))  # what it took over is what the cluster holds
            self._begin_fixed_term(self._run_after_recovery(recovery), now)

    def _run_after_recovery(self, recovery: Recovery) -> int:
        """The term of the run a fixed primary begins after recovering its log,
        above every run before it, which the next recovery's choice of a log
        rests on (shared.consensus.raft_recovery): above every term it heard,
        which, once every secondary answered, is every run any of them heard
        of; otherwise at least ``run_floor`` too, its clock, since a run that
        only a silent secondary heard of would not be above the terms heard.
        (A fresh cluster, every secondary empty, begins at 1.)"""
        floor = 0 if recovery.heard_everyone else self._run_floor
        return max(self._term + 1, recovery.highest_term + 1, floor)

    def _answer_recovery(self, message: StateRequest | FetchRequest) -> None:
        """A recovering fixed primary asks what this node holds: tell it."""
        if isinstance(message, StateRequest):
            self._send(message.sender, StateReply(self.name, self._term, self._log.last_term,
                                                  len(self._log), self._log.start, self._cluster))
        elif message.prev_length < self._log.start.index:
            self._pages_lent = None  # it asks afresh
            self._send_start_page(message)
        else:
            # The pages asked for, back to back, one a tick (``next_timer`` asks
            # for the ticks at once): each goes as soon as it is cut, while the
            # primary takes the one before, where cutting them all first kept
            # the primary waiting for the last. A new fetch replaces an old one.
            self._pages_lent = (message.sender, message.prev_length, message.pages)
            self._lend_next_page()

    def _lend_next_page(self) -> None:
        """The next page of the fetch being answered. An empty one says the log ends
        there; should the start pass the page (it cannot while the primary
        recovers), the fetch ends, and the primary asks again."""
        requester, start, pages = self._pages_lent
        if start < self._log.start.index:
            self._pages_lent = None
            return
        entries = self._log.batch(start, self._max_batch, self._max_batch_bytes)
        holds = start <= len(self._log)
        self._send(requester, FetchReply(self.name, self._term, start, tuple(entries),
                                         prev_term=self._log.term_at(start) if holds else None,
                                         prev_digest=self._log.digest_at(start) if holds else 0))
        more = entries and pages > 1
        self._pages_lent = (requester, start + len(entries), pages - 1) if more else None

    def _send_start_page(self, request: FetchRequest) -> None:
        """The log's start, whole (the storage's: its message count and bytes
        place the recovered primary's ids), and a page of the keys in force."""
        snapshot = self._snapshot_lent_to(request.sender, request.keys_offset)
        offset = request.keys_offset
        page = snapshot.keys[offset:offset + KEYS_PER_CHUNK]
        if offset + len(page) >= len(snapshot.keys):
            self._snapshot_lent = None  # its last page: a repeated request takes a new copy
        self._send(request.sender, FetchReply(self.name, self._term, request.prev_length, (),
                                              snapshot.start, page, offset, len(snapshot.keys)))

    def _snapshot_lent_to(self, requester: str, keys_offset: int) -> Snapshot:
        """The snapshot ``requester`` pages through: one copy, taken at its first
        page, so that keys new keyed appends evict meanwhile do not shift the
        later pages (raft_recovery also starts over if the copy changes)."""
        lent = self._snapshot_lent
        if (keys_offset == 0 or lent is None or lent[0] != requester
                or lent[1].start.index != self._log.start.index):
            lent = self._snapshot_lent = (requester, self._log.snapshot())
        return lent[1]

    # -- Replication: the secondary's side ---------------------------------------

    def _follow(self, primary: str, now: float) -> None:
        """``primary`` speaks for this node's term: follow it."""
        if self._role is Role.PRIMARY:
            raise Refused(f"{primary} claims to be primary of term {self._term}, which is this node's")
        if self._primary is not None and self._primary != primary:
            raise Refused(f"{primary} claims to be primary of term {self._term}, whose primary "
                          f"{self._primary} this node follows: a broken vote, or a forged frame")
        if self._role is not Role.SECONDARY:
            self._become_secondary(self._term, now)  # a candidate hears of its term's primary
        self._primary, self._heard_from_primary_at = primary, now
        self._reset_election_timer(now)
        self._heard = primary

    def _on_primary_frame(self, message: AppendEntries | Heartbeat | InstallSnapshot, now: float) -> None:
        self._follow(message.sender, now)
        if message.cluster is not None and self._cluster is None:
            self._cluster = message.cluster  # persisted by this Ready, before the reply
        if isinstance(message, (AppendEntries, Heartbeat)) and message.vouch == self._incarnation:
            self._vouched = True
        match message:
            case AppendEntries():
                self._on_append_entries(message)
            case Heartbeat():
                self._commit_matched(message.commit_length)
                self._follow_start(message.log_start)
                self._send(message.sender, HeartbeatReply(self.name, self._term, message.seq,
                                                          len(self._log), self._caught_up, self._incarnation))
            case InstallSnapshot():
                self._on_install_snapshot(message)

    def _check_no_committed_conflict(self, message: Message) -> None:
        """An entry or a start that contradicts what this node knows to be committed
        is another node's lie (or broken state): refuse the frame before anything
        changes, its term included. (A fixed secondary's commit length does not
        outlive its primary's run: see RaftLog.forget_commit.) A frame of an
        earlier term is not judged: it is answered as stale and changes nothing,
        and a primary deposed while paused sends such frames, whose entries the
        next primary may well have committed otherwise."""
        if message.term < self._term or (self.mode is Mode.FIXED_SECONDARY and message.term > self._term):
            return
        if isinstance(message, InstallSnapshot):
            start = message.start
            if (self._log.start.index < start.index <= self._log.commit_length
                    and not self._log.holds(start.index, start.term, start.digest)):
                raise Refused(f"{message.sender}'s start {start.index} contradicts this node's "
                              f"committed entries")
        elif isinstance(message, AppendEntries) and message.entries:
            self._check_entries_against_committed(message)

    def _check_entries_against_committed(self, request: AppendEntries) -> None:
        start = max(request.prev_length, self._log.start.index)
        if start >= self._log.commit_length or not self._log.holds(
                request.prev_length, request.prev_term, request.prev_digest):
            return
        digests = digests_after(request.prev_digest, request.entries)
        conflict = self._log.first_conflict(request.prev_length, digests)
        if conflict is not None and conflict < self._log.commit_length:
            raise Refused(f"{request.sender}'s entry {conflict} contradicts this node's committed "
                          f"entry there (committed length {self._log.commit_length})")

    def _on_append_entries(self, request: AppendEntries) -> None:
        """§5.3's check, then the entries. A frame that begins before the commit
        length is taken from the commit length on: the entries before it are
        committed, so held here as the primary holds them (leader
        completeness; one that contradicts them was refused before,
        ``_check_no_committed_conflict``), and are not written again; the
        frame's checksum chain over them must still reach this node's
        checksum there. A frame that ends at or before the commit length is
        answered with it, as etcd answers it. So neither a stale frame nor a
        forged one reaches below the commit length, compacted entries
        included; and a frame queued while the secondary was down, delivered
        after its restart, does not make the primary send its entries twice."""
        prev, entries = request.prev_length, request.entries
        prev_term, prev_digest = request.prev_term, request.prev_digest
        committed = self._log.commit_length
        if prev < committed:
            skip = committed - prev
            if skip >= len(entries):
                self._reply_match(request, committed)
                return
            prev_digest = digests_after(prev_digest, entries[:skip])[-1]
            prev, prev_term, entries = committed, entries[skip - 1].term, entries[skip:]
        if not self._log.holds(prev, prev_term, prev_digest):
            hint = self._log.retry_hint(prev, prev_term)
            self._send(request.sender, AppendReply(self.name, self._term, request.seq, False,
                                                   retry_length=hint, caught_up=self._caught_up,
                                                   incarnation=self._incarnation))
            return
        digests = digests_after(prev_digest, entries)
        conflict = self._log.first_conflict(prev, digests)
        if conflict is not None:
            self._log.truncate(conflict)  # at or above prev: never below the commit length
        held = len(self._log) - prev
        if held < len(entries):
            self._log.append(entries[held:], digests[held:])
        match_length = prev + len(entries)
        self._note_matched(match_length, conflict)
        self._commit_matched(request.commit_length)
        self._follow_start(request.log_start)
        self._reply_match(request, match_length)

    def _note_matched(self, length: int, truncated_from: int | None = None) -> None:
        """A frame of this term's primary showed that this node's first ``length``
        entries are that primary's (what was truncated, from ``truncated_from``,
        is not). Within a term and a life they stay so: the primary never
        contradicts its own entries."""
        matched = self._matched_length()
        if truncated_from is not None:
            matched = min(matched, truncated_from)
        self._matched = (self._term, max(matched, length))

    def _matched_length(self) -> int:
        """How many leading entries are known to be this term's primary's, in this life."""
        term, length = self._matched
        return length if term == self._term else 0

    def _commit_matched(self, primary_commit: int) -> None:
        """Commits what the primary says is committed, but only as far as this
        node's log is known to be that primary's (etcd's rule, made explicit:
        a heartbeat carries at most the primary's ``match`` for this node, which
        may describe the node's previous life; FSYNC=off, a power cut): past
        it may lie an older primary's entries that this one will overwrite."""
        self._log.commit_to(min(primary_commit, self._matched_length(), len(self._log)))

    def _reply_match(self, request: AppendEntries, match_length: int) -> None:
        self._send(request.sender, AppendReply(self.name, self._term, request.seq, True,
                                               match_length=match_length, caught_up=self._caught_up,
                                               incarnation=self._incarnation))

    def _follow_start(self, primary_start: int) -> None:
        """Retention: drop what the primary dropped, as far as it is committed here."""
        length = min(primary_start, self._log.commit_length)
        if length > self._log.start.index:
            self._log.compact(length)

    def _on_install_snapshot(self, message: InstallSnapshot) -> None:
        """Gathers the chunks of one snapshot, named by its start and its count
        of keys (the keys in force at a start drop only their oldest, so the
        count tells one copy of them from another), and installs it with the last."""
        start = message.start
        received = self._snapshot_in
        if received is None or received[:2] != (start, message.keys_total):
            received = self._snapshot_in = (start, message.keys_total, [])
        keys = received[2]
        if message.keys_offset == len(keys):
            keys.extend(message.keys)
        keys_received = len(keys)
        if keys_received >= message.keys_total and start.index > self._log.start.index:
            self._snapshot_in = None
            if self._log.holds(start.index, start.term, start.digest):
                # Raft §7: it holds the entry the start follows: keep what follows too.
                self._log.commit_to(start.index)
                self._log.compact(start.index)
            else:
                self._log.install(Snapshot(start, tuple(keys)))
            self._note_matched(start.index)
        self._send(message.sender, SnapshotReply(self.name, self._term, message.seq, start.index,
                                                 keys_received, self._caught_up, self._incarnation))

    # -- Replication: the primary's side ----------------------------------------

    def _tick_as_primary(self, now: float) -> None:
        if self.mode is Mode.ELECTED and not self._hears_from_a_majority(now):
            self._become_secondary(self._term, now)  # check quorum: cut off, it cannot commit
            return
        if self._transferee is not None and now >= self._transfer_deadline:
            self._transferee = None  # the transfer failed: carry on as primary
        self._expire_reads(now)
        for peer, progress in self._progress.items():
            deadline = progress.retransmit_deadline()
            if deadline is not None and now >= deadline:
                progress.on_timeout(self._seq + 1)
        if now >= self._heartbeat_due:
            self._broadcast_heartbeat(now)
        self._replicate(now)

    def _hears_from_a_majority(self, now: float) -> bool:
        recent = sum(now - p.heard_at < self._election_timeout for p in self._progress.values())
        return 1 + recent >= self._majority

    def _broadcast_heartbeat(self, now: float) -> None:
        for peer, progress in self._progress.items():
            commit = min(progress.match, self._log.commit_length)
            self._send(peer, Heartbeat(self.name, self._term, self._next_seq(), commit,
                                       self._log.start.index, self._cluster, self._vouches_for(progress)))
        self._heartbeat_due = now + self._heartbeat_interval

    def _replicate(self, now: float) -> None:
        """Send each secondary what its flow control lets through."""
        for peer, progress in self._progress.items():
            self._send_to(peer, progress, now)

    def _send_to(self, peer: str, progress: Progress, now: float) -> None:
        if progress.state is not State.SNAPSHOT and progress.next < self._log.start.index:
            progress.need_snapshot(self._log.snapshot(), self._seq + 1)
        if progress.may_send_snapshot_chunk():
            self._send_snapshot_chunk(peer, progress, now)
            return
        while progress.may_send_entries(len(self._log)):
            start = progress.next
            # A probe carries no entries: it finds where the secondary's log matches
            # this one, and only then are entries streamed (a secondary that does
            # not answer is sent nothing big, however long it stays away).
            entries = [] if progress.state is State.PROBE else self._log.batch(
                start, self._max_batch, self._max_batch_bytes)
            seq = self._next_seq()
            self._send(peer, AppendEntries(
                self.name, self._term, seq, start, self._log.term_at(start), self._log.digest_at(start),
                tuple(entries), self._log.commit_length, self._log.start.index, self._cluster,
                self._vouches_for(progress)))
            progress.sent(seq, start, start + len(entries), sum(e.size for e in entries) + 64, now)
            if not entries:
                break

    def _send_snapshot_chunk(self, peer: str, progress: Progress, now: float) -> None:
        """The next chunk of the snapshot being installed there, cut from the copy
        taken when the install began: the keys in force now may have lost their
        oldest to new keyed appends, which would shift every offset. Should the
        start move on before the secondary took a chunk (it was away), the
        install begins again from the new start, so that it does not take an
        old start only to be sent the next; once it took one, the install ends
        at its own start (so that a start moving under load cannot keep it
        from ending), and the next one sends the new start."""
        if progress.keys_acked == 0 and progress.snapshot.start.index != self._log.start.index:
            progress.need_snapshot(self._log.snapshot(), self._seq + 1)
        snapshot = progress.snapshot
        offset = progress.keys_acked
        chunk = snapshot.keys[offset:offset + KEYS_PER_CHUNK]
        seq = self._next_seq()
        self._send(peer, InstallSnapshot(self.name, self._term, seq, snapshot.start, chunk, offset,
                                         len(snapshot.keys), self._cluster))
        progress.sent(seq, offset, snapshot.start.index, 64 + 64 * len(chunk), now)

    def _progress_of(self, peer: str) -> Progress:
        progress = self._progress.get(peer)
        if progress is None:
            raise Refused(f"a reply from {peer}, to a primary that sent it nothing")
        return progress

    def _on_reply(self, reply: AppendReply | HeartbeatReply | SnapshotReply, now: float) -> None:
        if self._role is not Role.PRIMARY:
            return
        progress = self._progress_of(reply.sender)
        if reply.seq > self._seq:
            raise Refused(f"{reply.sender} answers frame {reply.seq}, which was never sent")
        if isinstance(reply, AppendReply) and (reply.match_length > len(self._log)
                                               or reply.retry_length > len(self._log)):
            raise Refused(f"{reply.sender} claims entries this primary never sent")
        if reply.incarnation in progress.retired_incarnations:
            return  # from a life of the secondary that has ended: stale, whatever it says
        if reply.incarnation != progress.incarnation:
            self._new_life(progress, reply)
        current = progress.heard(reply.seq, now)
        self._heard = reply.sender
        match reply:
            case AppendReply(diverged=str(why)):
                progress.diverged = why
            case AppendReply(success=True):  # true however late: see raft_progress
                progress.diverged = None
                if progress.on_success(reply.seq, reply.match_length, now):
                    self._advance_commit(now)
            case AppendReply(success=False) if current:
                progress.on_reject(reply.seq, reply.retry_length, self._seq + 1)
            case HeartbeatReply() if reply.length < progress.match:
                # It holds less than it acknowledged (FSYNC=off, or a lost disk).
                progress.on_reject(reply.seq, reply.length, self._seq + 1)
            case SnapshotReply() if current:
                progress.on_snapshot_reply(reply.seq, reply.start_index, reply.keys_received, now)
        self._confirm_reads()
        self._maybe_time_out_transferee()
        self._send_to(reply.sender, progress, now)

    def _new_life(self, progress: Progress, reply: AppendReply | HeartbeatReply | SnapshotReply) -> None:
        """A reply from a life of the secondary this primary has not heard from yet.
        If it cannot vouch for what it holds (it is not caught up: a new disk,
        a log in memory, FSYNC=off), what it acknowledged before no longer
        counts, and no reply sent before this one does either. A diverged one is
        written to again: if it still keeps another cluster, it says so again."""
        if progress.incarnation is not None:
            progress.retired_incarnations.add(progress.incarnation)
        progress.incarnation = reply.incarnation
        progress.diverged = None  # it may have started afresh, as the ERROR advised: probe it again
        if not reply.caught_up:
            holds = min(_length_claimed(reply), len(self._log))
            before = progress.sent_after(reply.seq) if isinstance(reply, AppendReply) and reply.success else None
            if before is not None:
                # It answers a frame sent before it restarted: it held what came
                # before that frame's entries (those are counted as acknowledged next).
                holds = min(holds, before)
            progress.forget_acknowledgements(holds, self._seq + 1)

    def _advance_commit(self, now: float) -> None:
        length = self._commit_point()
        if length > self._log.commit_length and self._may_commit(length):
            self._log.commit_to(length)
            self._release_reads_waiting_commit(now)

    def _maybe_time_out_transferee(self) -> None:
        target = self._transferee
        if target is not None and self._progress[target].match == len(self._log):
            self._send(target, TimeoutNow(self.name, self._term))

    # -- Reads (thesis §6.4) ------------------------------------------------------------

    def _on_read_index_request(self, request: ReadIndexRequest, now: float) -> None:
        if self._role is Role.PRIMARY:
            self._take_read(self._new_read(request.request, request.sender, now), now)
        else:
            self._send(request.sender, ReadIndexReply(self.name, self._term, request.request, None))

    def _new_read(self, request: int, asked_by: str | None, now: float) -> _Read:
        """A read that came now: failed unless confirmed within the read timeout."""
        return _Read(request, asked_by, now + self._read_timeout)

    def _take_read(self, read: _Read, now: float) -> None:
        if self._log.term_at(self._log.commit_length) != self._term:
            # Its commit length may still lag the last term's: wait for this
            # term's first entry to be committed (etcd's committedEntryInCurrentTerm).
            self._reads_waiting_commit.append(read)
            return
        if not self._others:
            self._answer_read(read, self._log.commit_length)
            return
        # A majority must answer a frame sent after this read arrived.
        self._reads_confirming.append((self._seq + 1, self._log.commit_length, read))
        self._broadcast_heartbeat(now)

    def _release_reads_waiting_commit(self, now: float) -> None:
        if self._reads_waiting_commit and self._log.term_at(self._log.commit_length) == self._term:
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, deque()
            for read in waiting:
                self._take_read(read, now)

    def _confirm_reads(self) -> None:
        """Answers the reads a majority has confirmed: those sent before the seq a
        majority echoed. They are in seq order: they go from the front."""
        if not self._reads_confirming:
            return
        acked = sorted((p.acked_seq for p in self._progress.values() if p.diverged is None),
                       reverse=True)
        confirmed_seq = acked[self._majority - 2] if len(acked) >= self._majority - 1 else 0
        reads = self._reads_confirming
        while reads and reads[0][0] <= confirmed_seq:
            _, index, read = reads.popleft()
            self._answer_read(read, index)

    def _expire_reads(self, now: float) -> None:
        """Fails the reads held past their deadline: a primary that cannot reach a
        majority (a fixed primary never steps down) holds none for longer than
        the read timeout, after which no client waits for it. Both queues are
        in the order the reads came, so by deadline: they go from the front."""
        confirming, waiting = self._reads_confirming, self._reads_waiting_commit
        while confirming and confirming[0][2].deadline <= now:
            self._answer_read(confirming.popleft()[2], None)
        while waiting and waiting[0].deadline <= now:
            self._answer_read(waiting.popleft(), None)

    def _answer_read(self, read: _Read, index: int | None) -> None:
        if read.asked_by is None:
            self._reads_done.append((read.request, index))
        else:
            self._send(read.asked_by, ReadIndexReply(self.name, self._term, read.request, index))

    def _fail_reads(self) -> None:
        for _, _, read in self._reads_confirming:
            self._answer_read(read, None)
        for read in self._reads_waiting_commit:
            self._answer_read(read, None)
        self._reads_confirming, self._reads_waiting_commit = deque(), deque()

    # -- Output ---------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, to: str, message: Message) -> None:
        self._outbox.append((to, message))

    def _ready(self, proposed: range = range(0), heard: str | None = None,
               refusal: str | None = None) -> Ready:
        fields = self._hard_state_fields()
        unsaved_hard_state = None
        if fields != self._saved_hard_state:
            unsaved_hard_state, self._saved_hard_state = self._hard_state(), fields
        messages, self._outbox = tuple(self._outbox), []
        reads, self._reads_done = tuple(self._reads_done), []
        return Ready(unsaved_hard_state, self._log.take_unsaved(), self._log.commit_length,
                     messages, proposed, reads, heard, refusal)


def _carries_a_term_asked_about(message: Message) -> bool:
    """A pre-vote request, and a granted pre-vote, carry the term the ballot
    asks about (the candidate's plus one, or more: ``_term_to_stand_in``),
    not a term their sender is in: no one took it yet."""
    return isinstance(message, PreVoteRequest) or (
        isinstance(message, VoteReply) and message.pre_vote and message.granted)


def _length_claimed(reply: AppendReply | HeartbeatReply | SnapshotReply) -> int:
    """How many entries a reply says its sender holds, about (where to probe it from)."""
    if isinstance(reply, HeartbeatReply):
        return reply.length
    if isinstance(reply, AppendReply):
        return reply.match_length if reply.success else reply.retry_length
    return reply.start_index
