"""The messages Raft nodes send one another (shared.consensus.raft), as values.

Each carries its sender and the sender's term (§5.1: every message does).
Lengths rather than indexes: ``prev_length`` entries precede the ones an
AppendEntries carries, and ``prev_term`` is the term of the last of them
(0 when there are none).

Thread: any (immutable values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from shared.consensus.raft_log import Entry


@dataclass(frozen=True, slots=True)
class PreVoteRequest:
    """Would you vote for me in ``term``? Changes no one's term (thesis §9.6)."""

    sender: str
    term: int  # the term the sender would stand in: its own plus one
    last_log_term: int
    log_length: int


@dataclass(frozen=True, slots=True)
class VoteRequest:
    sender: str
    term: int
    last_log_term: int
    log_length: int


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
    Empty entries make a heartbeat."""

    sender: str
    term: int
    prev_length: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit_length: int
    prev_digest: int = 0  # the checksum of no entries


@dataclass(frozen=True, slots=True)
class AppendReply:
    """On success, the sender's log matches the primary's for ``match_length``
    entries; on failure, the primary should back up to ``retry_length``."""

    sender: str
    term: int
    success: bool
    match_length: int = 0
    retry_length: int = 0


Message = Union[PreVoteRequest, VoteRequest, VoteReply, AppendEntries, AppendReply]
