"""The failover mode's replication frames: Raft's messages, one zmq frame each.

This module owns their layout and the layout of a log entry's payload; the
messages themselves are shared/consensus/raft_messages.py. Pure: no sockets,
no state, callable from any thread. ``decode`` is strict: a frame that is
not exactly what ``encode`` writes raises ProtocolError, and the node logs
and drops it (shared.wire.bad_frames).

    <KIND> <header>[\\n<payload>\\n<payload>...]

    KIND        header (JSON object; every one also has "from", "term", "url", "public", "limit")
    PREVOTE     "last_log_term", "log_length"          a PreVoteRequest
    VOTE        "last_log_term", "log_length"          a VoteRequest
    VOTED       "granted", "pre_vote"                  a VoteReply
    REPLICATE   "prev_length", "prev_term",            an AppendEntries; its entries
                "prev_digest", "commit",               follow the header, one per line
                "terms": [[term, count], ...]
    REPLICATED  "success", "match", "retry"            an AppendReply

- Every frame carries the sender's term (Raft §5.1), so a deposed primary
  learns of the new term from the first reply it gets.
- "url" is the sender's ADVERTISED_URL, where its HTTP API is reached: how a
  secondary knows where to forward appends; "public" its PUBLIC_URL, where
  clients and browsers reach it (the dashboard's links). "limit" is the
  largest frame the sender accepts (its zmq.MAXMSGSIZE): a primary keeps
  its batches under it.
- "terms" gives the entries' terms as runs, since a batch is almost always
  of one term. An empty line is the no-op a new primary appends (thesis
  §6.4); every other payload is a client message as its JSON string literal
  (shared.wire.protocol.encode_entry), or, for the first message of an
  append made under an Idempotency-Key, ``@<key> <count> <literal>``: the
  key travels with its entries to every node, and is cut with them.
- Neither a literal nor a key holds a raw newline or space, so the first
  newline ends the header and each newline ends a payload.

Each node sends every message on its own DEALER to the addressee's ROUTER,
replies included: a Raft message names its sender and term, and a reply is
matched to what it answers by its term and lengths, so the frames need no
correlation id (docs/architecture.md, departures).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared.consensus.raft_messages import (
    AppendEntries, AppendReply, Entry, Message, PreVoteRequest, VoteReply, VoteRequest,
)
from shared.log.idempotency import KEY_PATTERN
from shared.wire.protocol import MAX_FRAME_ENTRIES, MAX_SEQ, ProtocolError, check_literals

PREVOTE, VOTE, VOTED = b"PREVOTE", b"VOTE", b"VOTED"
REPLICATE, REPLICATED = b"REPLICATE", b"REPLICATED"
#: What marks a keyed payload; a literal always starts with '"'.
KEYED = b"@"
_COMMON = ("from", "term", "url", "public", "limit")
_FIELDS = {
    PREVOTE: ("last_log_term", "log_length"),
    VOTE: ("last_log_term", "log_length"),
    VOTED: ("granted", "pre_vote"),
    REPLICATE: ("prev_length", "prev_term", "prev_digest", "commit", "terms"),
    REPLICATED: ("success", "match", "retry"),
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a frame says about its sender beside the Raft message."""

    url: str  # its ADVERTISED_URL
    frame_limit: int  # the largest frame it accepts
    public_url: str  # its PUBLIC_URL


@dataclass(frozen=True, slots=True)
class Payload:
    """A client message's entry, decoded: its literal, and the Idempotency-Key
    and message count of the append it starts, if it was made under one."""

    literal: bytes
    key: str | None = None
    count: int = 1


def encode_payload(literal: bytes, key: str | None = None, count: int = 1) -> bytes:
    if key is None:
        return literal
    return b"%s%s %d %s" % (KEYED, key.encode("ascii"), count, literal)


def decode_payload(payload: bytes) -> Payload:
    """The parts of a payload ``encode_payload`` made (already checked on arrival)."""
    if not payload.startswith(KEYED):
        return Payload(payload)
    key, count, literal = payload[1:].split(b" ", 2)
    return Payload(literal, key.decode("ascii"), int(count))


def encode(message: Message, envelope: Envelope) -> bytes:
    header = {"from": message.sender, "term": message.term, "url": envelope.url,
              "public": envelope.public_url, "limit": envelope.frame_limit}
    lines = b""
    match message:
        case PreVoteRequest() | VoteRequest():
            kind = PREVOTE if isinstance(message, PreVoteRequest) else VOTE
            header |= {"last_log_term": message.last_log_term, "log_length": message.log_length}
        case VoteReply():
            kind = VOTED
            header |= {"granted": message.granted, "pre_vote": message.pre_vote}
        case AppendEntries():
            kind = REPLICATE
            header |= {"prev_length": message.prev_length, "prev_term": message.prev_term,
                       "prev_digest": message.prev_digest, "commit": message.commit_length,
                       "terms": _term_runs(message.entries)}
            if message.entries:
                lines = b"\n" + b"\n".join(entry.payload or b"" for entry in message.entries)
        case AppendReply():
            kind = REPLICATED
            header |= {"success": message.success, "match": message.match_length,
                       "retry": message.retry_length}
        case _:
            raise TypeError(f"not a Raft message: {message!r}")
    return kind + b" " + json.dumps(header, separators=(",", ":")).encode() + lines


def decode(parts: list[bytes]) -> tuple[Message, Envelope]:
    """One message, given as the parts it arrived in (the ROUTER's identity
    already stripped). Raises ProtocolError for anything ``encode`` would not write."""
    try:
        return _decode(parts)
    except ProtocolError:
        raise
    except Exception as exc:  # RecursionError, a parser's surprise: a bad frame all the same
        raise ProtocolError(f"undecodable frame ({type(exc).__name__})") from None


def _decode(parts: list[bytes]) -> tuple[Message, Envelope]:
    if len(parts) != 1:
        raise ProtocolError(f"a message is one frame, got {len(parts)}")
    head, newline, raw_entries = parts[0].partition(b"\n")
    kind, _, raw_header = head.partition(b" ")
    if kind not in _FIELDS:
        raise ProtocolError("unknown message kind")
    header = _header(raw_header, _COMMON + _FIELDS[kind])
    sender, term = _name(header, "from"), _count(header, "term")
    envelope = Envelope(_url(header, "url"), _count(header, "limit", minimum=1), _url(header, "public"))
    if newline and kind != REPLICATE:
        raise ProtocolError(f"{kind.decode()} carries no entries")
    if kind in (PREVOTE, VOTE):
        request = PreVoteRequest if kind == PREVOTE else VoteRequest
        return request(sender, term, _count(header, "last_log_term"),
                       _count(header, "log_length")), envelope
    if kind == VOTED:
        return VoteReply(sender, term, _flag(header, "granted"), _flag(header, "pre_vote")), envelope
    if kind == REPLICATED:
        return AppendReply(sender, term, _flag(header, "success"), _count(header, "match"),
                           _count(header, "retry")), envelope
    terms = _terms(header["terms"])
    payloads = _payloads(raw_entries) if newline else []
    if len(payloads) != len(terms):
        raise ProtocolError(f"'terms' counts {len(terms)} entries, the frame holds {len(payloads)}")
    prev_length = _count(header, "prev_length")
    if prev_length + len(payloads) > MAX_SEQ:
        raise ProtocolError("the entries run past the largest index")
    entries = tuple(Entry(t, p) for t, p in zip(terms, payloads))
    digest = _count(header, "prev_digest")
    if digest >= 1 << 32:
        raise ProtocolError("'prev_digest' must be a CRC-32")
    return AppendEntries(sender, term, prev_length, _count(header, "prev_term"), entries,
                         _count(header, "commit"), digest), envelope


def _term_runs(entries: tuple[Entry, ...]) -> list[list[int]]:
    runs: list[list[int]] = []
    for entry in entries:
        if runs and runs[-1][0] == entry.term:
            runs[-1][1] += 1
        else:
            runs.append([entry.term, 1])
    return runs


def _header(raw: bytes, fields: tuple[str, ...]) -> dict:
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("the header is not JSON") from None
    if not isinstance(header, dict) or sorted(header) != sorted(fields):
        raise ProtocolError(f"the header must hold exactly {', '.join(fields)}")
    return header


def _count(header: dict, field: str, minimum: int = 0) -> int:
    value = header[field]
    if type(value) is not int or not minimum <= value <= MAX_SEQ:  # True is no count
        raise ProtocolError(f"{field!r} must be an integer in [{minimum}, 2**53]")
    return value


def _flag(header: dict, field: str) -> bool:
    if type(header[field]) is not bool:
        raise ProtocolError(f"{field!r} must be true or false")
    return header[field]


def _name(header: dict, field: str) -> str:
    value = header[field]
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise ProtocolError(f"{field!r} must be a node name")
    return value


def _url(header: dict, field: str) -> str:
    value = header[field]
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or len(value) > 256:
        raise ProtocolError(f"{field!r} must be an http(s) URL")
    return value


def _terms(runs: object) -> list[int]:
    if not isinstance(runs, list) or len(runs) > MAX_FRAME_ENTRIES:
        raise ProtocolError("'terms' must be a list of [term, count] runs")
    terms: list[int] = []
    for run in runs:
        if (not isinstance(run, list) or len(run) != 2 or any(type(n) is not int for n in run)
                or not 0 < run[0] <= MAX_SEQ or not 0 < run[1] <= MAX_FRAME_ENTRIES - len(terms)):
            raise ProtocolError("'terms' must be a list of [term, count] runs")
        terms.extend([run[0]] * run[1])
    return terms


def _payloads(raw: bytes) -> list[bytes | None]:
    if raw.count(b"\n") >= MAX_FRAME_ENTRIES:
        raise ProtocolError(f"more than {MAX_FRAME_ENTRIES} entries in one frame")
    payloads: list[bytes | None] = []
    literals = []
    for line in raw.split(b"\n"):
        if not line:
            payloads.append(None)  # the no-op
            continue
        if line.startswith(KEYED):
            parts = line[1:].split(b" ", 2)
            if (len(parts) != 3 or not KEY_PATTERN.match(parts[0].decode("latin-1"))
                    or not parts[1].isdigit() or not 0 < int(parts[1]) <= MAX_FRAME_ENTRIES
                    or len(parts[1]) > 6 or parts[1].startswith(b"0")):
                raise ProtocolError("a keyed entry must be @<key> <count> <literal>")
            literals.append(parts[2])
        else:
            literals.append(line)
        payloads.append(line)
    if literals:
        check_literals(literals)
    return payloads
