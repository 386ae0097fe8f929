"""Raft consensus as a pure state machine: elections, replication and commit.

The rules are Raft's (Ongaro & Ousterhout 2014, §5.2-5.4) with the thesis's
PreVote (§9.6), leader stickiness and check quorum (§4.2.3), and the no-op a
new primary appends (§6.4). Membership is fixed: ``peers`` names every node,
this one included, and a majority is more than half of them.

Sans-I/O, in etcd-raft's Ready style: the shell feeds a RaftNode the time
(``tick``), each message that arrives (``step``) and client writes
(``propose``); each call returns a Ready, which the shell acts on in its
fields' order: persist the hard state, then the log changes (fsync), then
apply ``committed``, and only then send the messages, since a reply may
promise what was just persisted (a vote, an entry). The node never reads a
clock, draws only from the ``random.Random`` it is given, and does no I/O.

Leader is called **primary** here, follower **secondary**, as in the rest of
the project. Log indexes are 0-based; see shared.consensus.raft_log.

Thread: the owner's I/O thread only; values are immutable.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass

from shared.consensus.raft_log import Entry, HardState, PersistedState, RaftLog, SafetyViolation
from shared.consensus.raft_messages import (
    AppendEntries, AppendReply, Message, PreVoteRequest, VoteReply, VoteRequest,
)

__all__ = [
    "AppendEntries", "AppendReply", "Entry", "HardState", "Message", "NotPrimary", "PersistedState",
    "PreVoteRequest", "RaftNode", "Ready", "Role", "SafetyViolation", "VoteReply", "VoteRequest",
]

#: Entries one AppendEntries carries at most, unless the node is told otherwise.
MAX_BATCH = 64
#: Bytes of payloads one AppendEntries carries at most, past its first entry,
#: unless the node is told otherwise: a frame must fit its receiver's limit.
MAX_BATCH_BYTES = 4 << 20


class Role(str, enum.Enum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    CANDIDATE = "candidate"
    PRE_CANDIDATE = "pre-candidate"


class NotPrimary(Exception):
    """Only the primary takes writes; ``primary`` names the one this node follows, if any."""

    def __init__(self, primary: str | None) -> None:
        super().__init__(f"not the primary (the primary is {primary or 'unknown'})")
        self.primary = primary


@dataclass(frozen=True, slots=True)
class Ready:
    """What the shell must do after a call, in this order."""

    hard_state: HardState | None  # persist (fsync) first, when not None
    truncate_from: int | None  # then drop the log's entries from here on
    append: tuple[Entry, ...]  # and append these (fsync)
    committed: int  # the commit length, maybe unchanged
    messages: tuple[tuple[str, Message], ...]  # (to, message): sent only once all above is durable
    proposed: range = range(0)  # the indexes propose() appended


@dataclass(slots=True)
class _Progress:
    """What the primary knows of one secondary (§5.3)."""

    next_length: int  # the next AppendEntries starts at this index
    heard_at: float  # when a reply of this term last came: check quorum counts it
    match_length: int = 0  # the secondary's log matches this many of the primary's entries


class RaftNode:
    """One member of a Raft cluster. See the module's docstring for how to drive it."""

    def __init__(self, name: str, peers: tuple[str, ...], rng: random.Random, *,
                 election_timeout: float, heartbeat_interval: float,
                 persisted: PersistedState | None = None, max_batch: int = MAX_BATCH,
                 max_batch_bytes: int = MAX_BATCH_BYTES, stands_at_once: bool = False) -> None:
        """``stands_at_once``: the first tick starts a ballot instead of the
        election timer, and until a first term begins the node asks again at
        every heartbeat interval (the node a fresh cluster should elect first)."""
        if name not in peers or len(set(peers)) != len(peers):
            raise ValueError(f"peers {peers!r} must name {name!r} once, and every node once")
        if not 0 < heartbeat_interval < election_timeout:
            raise ValueError("need 0 < heartbeat_interval < election_timeout")
        state = persisted or PersistedState()
        self.name, self.peers = name, tuple(peers)
        self._others = tuple(peer for peer in peers if peer != name)
        self._majority = len(peers) // 2 + 1
        self._rng = rng
        self._election_timeout = election_timeout
        self._heartbeat_interval = heartbeat_interval
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._stands_at_once = stands_at_once
        self._term, self._voted_for, self._caught_up = state.term, state.voted_for, state.caught_up
        self._saved_hard_state = HardState(state.term, state.voted_for, state.caught_up)
        self._log = RaftLog(state.entries)
        self._role = Role.SECONDARY
        self._primary: str | None = None
        self._heard_from_primary_at: float | None = None
        self._election_deadline: float | None = None  # set by the first tick: the clock starts then
        self._votes: set[str] = set()  # a pre-candidate's or candidate's, its own included
        self._progress: dict[str, _Progress] = {}
        self._heartbeat_due = 0.0
        self._outbox: list[tuple[str, Message]] = []

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
        """False for a node started from an empty data directory until a primary
        has caught it up (see PersistedState): until then it votes only for an
        empty log."""
        return self._caught_up

    @property
    def commit_length(self) -> int:
        return self._log.commit_length

    @property
    def log(self) -> tuple[Entry, ...]:
        return self._log.entries

    def next_timer(self) -> float | None:
        """When a tick next has work: the heartbeat (and check quorum) on a
        primary, the election timeout elsewhere; None before the first tick."""
        return self._heartbeat_due if self._role is Role.PRIMARY else self._election_deadline

    def match_lengths(self) -> dict[str, int]:
        """On the primary, how many of its entries each secondary is known to
        hold (durably: it answers only once it has stored them); else empty."""
        return {peer: progress.match_length for peer, progress in self._progress.items()}

    # -- The calls that drive it ----------------------------------------------

    def tick(self, now: float) -> Ready:
        """Lets the timers run: heartbeats and check quorum on a primary, the
        election timeout on the others."""
        if self._role is Role.PRIMARY:
            self._tick_as_primary(now)
        elif self._election_deadline is None and self._stands_at_once:
            self._campaign(now)
        elif self._election_deadline is None:
            self._reset_election_timer(now)
        elif now >= self._election_deadline:
            self._campaign(now)
        return self._ready()

    def step(self, message: Message, now: float) -> Ready:
        """Takes one message from another node."""
        if message.sender not in self._others:
            raise ValueError(f"{message.sender!r} is not a peer of {self.name!r}")
        if message.term > self._term and self._adopts_term_of(message, now):
            self._become_secondary(message.term, now)
        if message.term < self._term:
            self._answer_stale(message)
        else:
            self._dispatch(message, now)
        return self._ready()

    def propose(self, payloads: Iterable[bytes]) -> Ready:
        """Appends ``payloads`` as entries of this primary's term; ``Ready.proposed``
        holds their indexes. They are committed once ``Ready.committed`` passes them.
        Raises NotPrimary on any other node."""
        if self._role is not Role.PRIMARY:
            raise NotPrimary(self._primary)
        entries = tuple(Entry(self._term, payload) for payload in payloads)
        if not all(isinstance(entry.payload, bytes) for entry in entries):
            raise TypeError("payloads must be bytes (None is the primary's own no-op)")
        start = len(self._log)
        self._log.append(entries)
        for peer, progress in self._progress.items():
            if progress.next_length == start:  # the others are sent more when they answer
                self._send_append(peer)
        self._advance_commit()
        return self._ready(proposed=range(start, len(self._log)))

    # -- The rules that a test may break, one at a time -------------------------

    def _log_is_up_to_date(self, last_log_term: int, log_length: int) -> bool:
        """§5.4.1, the election restriction: a voter's log must not be more up to
        date than the candidate's (later last term, or same term and longer), so
        that whoever wins holds every committed entry."""
        return (last_log_term, log_length) >= (self._log.last_term, len(self._log))

    def _commit_point(self) -> int:
        """The longest prefix of the log that a majority holds, this node included."""
        lengths = sorted([len(self._log), *(p.match_length for p in self._progress.values())],
                         reverse=True)
        return lengths[self._majority - 1]

    def _may_commit(self, length: int) -> bool:
        """§5.4.2: a primary commits by counting replicas only up to an entry of its
        own term; the entries before it are committed with it. An older term's
        entry held by a majority may still be overwritten (the paper's Figure 8)."""
        return self._log.term_at(length) == self._term

    def _campaigns_with_pre_vote(self) -> bool:
        """§9.6: ask first whether a majority would vote, without raising the term,
        so that a node that was cut off cannot depose a healthy primary on return."""
        return True

    def _hard_state(self) -> HardState:
        """What a restart must not forget: the term, the vote given in it, and
        whether a node that started from nothing has been caught up yet."""
        return HardState(self._term, self._voted_for, self._caught_up)

    # -- Elections --------------------------------------------------------------

    def _reset_election_timer(self, now: float) -> None:
        # Random in [T, 2T], so that one node usually times out well before the others.
        self._election_deadline = now + self._rng.uniform(self._election_timeout,
                                                          2 * self._election_timeout)

    def _campaign(self, now: float) -> None:
        self._reset_election_timer(now)  # if this ballot fails, the next one starts then
        if self._stands_at_once and self._term == 0:
            # A fresh cluster's first node asks again each heartbeat: its peers
            # may not be listening yet. Pre-votes change no one's state.
            self._election_deadline = now + self._heartbeat_interval
        if not self._caught_up and len(self._log):
            return  # it started from nothing: it stands again once a primary caught it up
        if self._campaigns_with_pre_vote():
            self._start_ballot(Role.PRE_CANDIDATE, now)
        else:
            self._start_candidacy(now)

    def _start_candidacy(self, now: float) -> None:
        self._term += 1
        self._voted_for = self.name
        self._start_ballot(Role.CANDIDATE, now)

    def _start_ballot(self, role: Role, now: float) -> None:
        self._role, self._primary, self._heard_from_primary_at = role, None, None
        self._votes = {self.name}
        pre_vote = role is Role.PRE_CANDIDATE
        request = PreVoteRequest if pre_vote else VoteRequest
        term = self._term + 1 if pre_vote else self._term
        for peer in self._others:
            self._send(peer, request(self.name, term, self._log.last_term, len(self._log)))
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
        if this node has not voted, or voted for ``candidate`` (a repeated request)."""
        return term > self._term or self._voted_for in (None, candidate)

    def _grants(self, request: PreVoteRequest | VoteRequest, now: float) -> bool:
        return (not self._in_lease(now)
                and (self._caught_up or request.log_length == 0)  # see PersistedState
                and self._may_vote_for(request.sender, request.term)
                and self._log_is_up_to_date(request.last_log_term, request.log_length))

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
            return self._role is Role.PRE_CANDIDATE and reply.term == self._term + 1
        return self._role is Role.CANDIDATE and reply.term == self._term

    # -- Terms and roles ----------------------------------------------------------

    def _adopts_term_of(self, message: Message, now: float) -> bool:
        """Whether a message of a later term moves this node to that term."""
        if isinstance(message, PreVoteRequest):
            return False  # asks about a term no one stands in yet
        if isinstance(message, VoteReply) and message.pre_vote and message.granted:
            return False  # carries the term this node asked about, not the voter's
        if isinstance(message, VoteRequest):
            return not self._in_lease(now)  # §4.2.3: refused without a term change
        return True

    def _answer_stale(self, message: Message) -> None:
        """A message of an earlier term: tell its sender the current term, so that a
        deposed primary or a lagging candidate catches up. Replies need no answer."""
        if isinstance(message, AppendEntries):
            self._send(message.sender, AppendReply(self.name, self._term, success=False,
                                                   retry_length=len(self._log)))
        elif isinstance(message, (PreVoteRequest, VoteRequest)):
            pre_vote = isinstance(message, PreVoteRequest)
            self._send(message.sender, VoteReply(self.name, self._term, False, pre_vote))

    def _dispatch(self, message: Message, now: float) -> None:
        match message:
            case PreVoteRequest():
                self._on_pre_vote_request(message, now)
            case VoteRequest():
                self._on_vote_request(message, now)
            case VoteReply():
                self._on_vote_reply(message, now)
            case AppendEntries():
                self._on_append_entries(message, now)
            case AppendReply():
                self._on_append_reply(message, now)

    def _become_secondary(self, term: int, now: float) -> None:
        if term > self._term:
            self._term, self._voted_for = term, None
        self._role, self._primary, self._heard_from_primary_at = Role.SECONDARY, None, None
        self._votes = set()
        self._progress = {}
        self._reset_election_timer(now)

    def _become_primary(self, now: float) -> None:
        self._role, self._primary = Role.PRIMARY, self.name
        self._caught_up = True  # elected, it holds every committed entry (§5.4.1)
        self._votes = set()
        self._progress = {peer: _Progress(next_length=len(self._log), heard_at=now)
                          for peer in self._others}
        # §6.4: an entry of the new term, so that the earlier terms' entries get
        # committed (§5.4.2) without waiting for a client's write.
        self._log.append((Entry(self._term, None),))
        self._broadcast_append(now)
        self._advance_commit()

    # -- Replication: the secondary's side ---------------------------------------

    def _follow(self, primary: str, now: float) -> None:
        if self._role is Role.PRIMARY:
            raise SafetyViolation(f"{self.name} and {primary} are both primary of term {self._term}")
        if self._role is not Role.SECONDARY:
            self._become_secondary(self._term, now)  # a candidate hears of its term's primary
        self._primary, self._heard_from_primary_at = primary, now
        self._reset_election_timer(now)

    def _on_append_entries(self, request: AppendEntries, now: float) -> None:
        self._follow(request.sender, now)
        if not self._log.holds(request.prev_length, request.prev_term, request.prev_digest):
            hint = self._log.retry_hint(request.prev_length, request.prev_term)
            self._send(request.sender, AppendReply(self.name, self._term, False, retry_length=hint))
            return
        match_length = self._log.merge(request.prev_length, request.entries)
        # Only the prefix checked against this primary's log counts as committed:
        # entries past it may be an older primary's that this one will overwrite.
        self._log.commit_to(min(request.commit_length, match_length))
        if not self._caught_up and match_length >= request.commit_length:
            # It holds all this primary has committed: it votes again from the
            # next term on, having as good as voted for this primary in this one.
            self._caught_up = True
            self._voted_for = self._voted_for or request.sender
        self._send(request.sender, AppendReply(self.name, self._term, True, match_length=match_length))

    # -- Replication: the primary's side ----------------------------------------

    def _tick_as_primary(self, now: float) -> None:
        if not self._hears_from_a_majority(now):
            self._become_secondary(self._term, now)  # check quorum: cut off, it cannot commit
        elif now >= self._heartbeat_due:
            self._broadcast_append(now)

    def _hears_from_a_majority(self, now: float) -> bool:
        recent = sum(now - p.heard_at < self._election_timeout for p in self._progress.values())
        return 1 + recent >= self._majority

    def _broadcast_append(self, now: float) -> None:
        for peer in self._others:
            self._send_append(peer)
        self._heartbeat_due = now + self._heartbeat_interval

    def _send_append(self, peer: str) -> None:
        start = self._progress[peer].next_length
        entries = self._log.batch(start, self._max_batch, self._max_batch_bytes)
        self._send(peer, AppendEntries(self.name, self._term, start, self._log.term_at(start),
                                       entries, self._log.commit_length, self._log.digest_at(start)))

    def _on_append_reply(self, reply: AppendReply, now: float) -> None:
        if self._role is not Role.PRIMARY:
            return
        if reply.match_length > len(self._log) or reply.retry_length > len(self._log):
            raise ValueError(f"{reply.sender} claims entries this primary never sent")
        progress = self._progress[reply.sender]
        progress.heard_at = now
        # Replies may come late, twice or out of order: only news moves progress,
        # and only news is answered with more entries.
        if reply.success and reply.match_length > progress.match_length:
            progress.match_length = reply.match_length
            progress.next_length = max(progress.next_length, reply.match_length)
            self._advance_commit()
            if progress.next_length < len(self._log):
                self._send_append(reply.sender)
        elif not reply.success and reply.retry_length < progress.match_length:
            # It holds less than it acknowledged: it lost a tail it had not
            # made durable (FSYNC=off) or its DATA_DIR. Resend from what it has.
            progress.match_length = progress.next_length = reply.retry_length
            self._send_append(reply.sender)
        elif not reply.success:
            backed_up = min(progress.next_length, reply.retry_length)
            if backed_up < progress.next_length:
                progress.next_length = backed_up
                self._send_append(reply.sender)

    def _advance_commit(self) -> None:
        length = self._commit_point()
        if length > self._log.commit_length and self._may_commit(length):
            self._log.commit_to(length)

    # -- Output ---------------------------------------------------------------------

    def _send(self, to: str, message: Message) -> None:
        self._outbox.append((to, message))

    def _ready(self, proposed: range = range(0)) -> Ready:
        hard_state = self._hard_state()
        unsaved_hard_state = hard_state if hard_state != self._saved_hard_state else None
        self._saved_hard_state = hard_state
        truncate_from, append = self._log.take_unsaved()
        messages, self._outbox = tuple(self._outbox), []
        return Ready(unsaved_hard_state, truncate_from, append, self._log.commit_length,
                     messages, proposed)
