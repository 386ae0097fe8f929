"""The messages Raft nodes send one another (shared.consensus.raft), as values.

Each carries its sender and the sender's term (§5.1: every message does).
Lengths rather than indexes: ``prev_length`` entries precede the ones an
AppendEntries carries, and ``prev_term`` is the term of the last of them
(0 when there are none).

``seq`` numbers what a primary sends in its term (AppendEntries, Heartbeat,
InstallSnapshot), and each reply echoes it: the primary matches a reply to
what it answers, measures the round trip, ignores a reply older than its
latest change of mind about that secondary, and confirms reads (thesis
§6.4: a read is confirmed once a majority answered a seq sent after it).

Thread: any (immutable values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from shared.consensus.raft_log import Entry, KeyRecord, LogStart


@dataclass(frozen=True, slots=True)
class PreVoteRequest:
    """Would you vote for me in ``term``? Changes no one's term (thesis §9.6)."""

    sender: str
    term: int  # the term the sender would stand in: its own plus one
    last_log_term: int
    log_length: int


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """``transfer``: the primary asked the sender to stand (TimeoutNow, thesis
    §3.10), so a voter grants it even while it hears from that primary."""

    sender: str
    term: int
    last_log_term: int
    log_length: int
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteReply:
    """The answer to either request. A granted pre-vote carries the term asked
    about; anything else carries the voter's term."""

    sender: str
    term: int
    granted: bool
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """``entries`` go at index ``prev_length`` on, after an entry of ``prev_term``
    (0 when ``prev_length`` is 0), where the first ``prev_length`` entries have
    the checksum ``prev_digest`` (shared.consensus.raft_log.digest_after).
    ``log_start`` is where the primary's log starts (retention): a secondary
    drops its entries before it, as far as they are committed. ``cluster``
    names a fixed-role cluster's log (None in failover mode)."""

    sender: str
    term: int
    seq: int
    prev_length: int
    prev_term: int
    prev_digest: int
    entries: tuple[Entry, ...]
    commit_length: int
    log_start: int = 0
    cluster: str | None = None
    #: To a secondary that lost its disk: the life (AppendReply.incarnation) of
    #: it that now holds every entry committed so far (docs/architecture.md,
    #: "A node that lost its disk"); a frame late for another life says nothing.
    vouch: str | None = None


@dataclass(frozen=True, slots=True)
class AppendReply:
    """On success, the sender's log matches the primary's for ``match_length``
    entries; on failure, the primary should back up to ``retry_length``.
    ``diverged`` says why the sender will take nothing from this primary (it
    keeps another cluster's log)."""

    sender: str
    term: int
    seq: int
    success: bool
    match_length: int = 0
    retry_length: int = 0
    diverged: str | None = None
    caught_up: bool = True  # False while the sender has not been caught up since it lost its disk
    #: Names the sender's life: new at each start unless its log survives it
    #: whole (DATA_DIR, FSYNC=always). A new one that is not caught up tells the
    #: primary the sender lost what it acknowledged; replies of an older one are stale.
    incarnation: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The primary is alive: no entries, no log matching. ``commit_length`` is
    at most what the secondary is known to hold (etcd: "the leader MUST NOT
    forward the follower's commit to an unmatched index")."""

    sender: str
    term: int
    seq: int
    commit_length: int
    log_start: int = 0
    cluster: str | None = None
    vouch: str | None = None  # see AppendEntries


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    sender: str
    term: int
    seq: int
    length: int  # the sender's log length: a primary probing it learns it is behind
    caught_up: bool = True
    incarnation: str = ""  # see AppendReply


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """The primary's log starts past the end of the secondary's (Raft §7): take
    this start instead of the entries before it. The Idempotency-Keys in force
    there come in chunks, ``keys`` being those from ``keys_offset`` on of
    ``keys_total``; the secondary installs the start with the last chunk."""

    sender: str
    term: int
    seq: int
    start: LogStart
    keys: tuple[KeyRecord, ...]
    keys_offset: int
    keys_total: int
    cluster: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotReply:
    """How many of the snapshot's keys the sender holds now; all of them once installed."""

    sender: str
    term: int
    seq: int
    start_index: int
    keys_received: int
    caught_up: bool = True
    incarnation: str = ""  # see AppendReply


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """The primary asks the sender's addressee to stand for election at once
    (thesis §3.10): it hands its role over before it stops."""

    sender: str
    term: int


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A secondary asks its primary for a read index (thesis §6.4)."""

    sender: str
    term: int
    request: int


@dataclass(frozen=True, slots=True)
class ReadIndexReply:
    """The commit length a read must wait for; None: the primary could not
    confirm it (it is not, or no longer, primary)."""

    sender: str
    term: int
    request: int
    index: int | None


@dataclass(frozen=True, slots=True)
class StateRequest:
    """A fixed primary that starts without its log asks what each secondary
    holds (Viewstamped Replication's recovery, §4.3). Changes nothing."""

    sender: str
    term: int


@dataclass(frozen=True, slots=True)
class StateReply:
    sender: str
    term: int
    last_log_term: int
    log_length: int
    start: LogStart
    cluster: str | None


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """A recovering fixed primary asks for the entries from ``prev_length`` on
    (and, when that lies before the log's start, for the start and its keys
    from ``keys_offset`` on), in up to ``pages`` FetchReplies sent one after
    the other, each beginning where the one before ended."""

    sender: str
    term: int
    prev_length: int
    keys_offset: int = 0
    pages: int = 1


#: The most pages one FetchRequest may ask for.
MAX_FETCH_PAGES = 16


@dataclass(frozen=True, slots=True)
class FetchReply:
    """Entries from ``prev_length`` on, and what the source's log holds before
    them: ``prev_term`` and ``prev_digest`` at ``prev_length`` (None: it holds
    fewer entries); no entry says the log ends there. Or, when ``prev_length``
    lay before the log's start, the start and a chunk of its keys (as
    InstallSnapshot)."""

    sender: str
    term: int
    prev_length: int
    entries: tuple[Entry, ...]
    start: LogStart | None = None
    keys: tuple[KeyRecord, ...] = ()
    keys_offset: int = 0
    keys_total: int = 0
    prev_term: int | None = None
    prev_digest: int = 0


Request = Union[PreVoteRequest, VoteRequest, AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow,
                ReadIndexRequest, StateRequest, FetchRequest]
Reply = Union[VoteReply, AppendReply, HeartbeatReply, SnapshotReply, ReadIndexReply, StateReply,
              FetchReply]
Message = Union[Request, Reply]
