"""Replication wire protocol between the primary (DEALER) and a secondary (ROUTER).

This module owns the frame layout. It is pure: no sockets, no state, callable
from any thread. Every frame is bytes; structured parts are UTF-8 JSON, never
pickle. Neither end is REQ/REP, so there is no empty delimiter frame.

    primary -> secondary                      secondary -> primary
    ------------------------------------      --------------------------------------
    APPEND                                    ACK
      0  b"APPEND"                              0  b"ACK"
      1  corr_id     ascii, echoed in ACK       1  corr_id     of the APPEND acked
      2  header      {"epoch": str,             2  status      {"node": str,
                      "first": int}                              "incarnation": str,
      3  entries     the messages as JSON                        "length": int,
                     string literals, one per                    "acked": [[start, stop], ...]}
                     line: line i has seq first+i
    PING                                      PONG
      0  b"PING"                                0  b"PONG"
      1  corr_id                                1  corr_id     of the PING answered
      2  header      {"epoch": str}             2  status      {"node", "incarnation", "length"}

The ROUTER sees one more frame in front of these, the DEALER's identity;
only the secondary's receiver adds or strips it.

- corr_id routes an ACK to the batch that is waiting for it. Each attempt
  of a batch has its own corr_id; the primary accepts an ACK of any of them,
  and learns from which one it is exactly how long that round trip took.
- seq is a message's position in the total order, 0-based. Secondaries order
  and deduplicate by seq, never by corr_id.
- Entries are encoded once, with ensure_ascii, so no literal holds a raw
  newline and "\n" can separate them: a batch of any size is one frame.
- epoch names one run of the primary. A secondary that sees a new epoch knows
  the primary restarted with an empty log.
- incarnation names one run of a secondary. A new incarnation tells the
  primary the secondary restarted, so it must resend from ``length``.
- length is the secondary's contiguous prefix: it holds every seq below it.
- acked lists half-open ranges of seqs this ACK confirms as stored.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from typing import Union

APPEND = b"APPEND"
ACK = b"ACK"
PING = b"PING"
PONG = b"PONG"

#: Largest seq or length accepted on the wire: JSON numbers stay exact below 2**53.
MAX_SEQ = 2**53
#: Correlation ids are short ASCII tokens; anything longer is a bad frame.
MAX_CORR_ID_BYTES = 64
#: Separates the entries of an APPEND; it never occurs inside one.
ENTRY_SEPARATOR = b"\n"

# A process-wide prefix and a counter: unique across restarts, and far
# cheaper than a uuid4 per frame.
_CORR_PREFIX = uuid.uuid4().hex[:12]
_corr_counter = itertools.count()


class ProtocolError(ValueError):
    """A frame list that does not follow the layout above."""


@dataclass(frozen=True)
class Append:
    corr_id: str
    epoch: str
    first: int
    entries: list[bytes]  # each a JSON string literal, validated


@dataclass(frozen=True)
class Ping:
    corr_id: str
    epoch: str


@dataclass(frozen=True)
class Status:
    """What a secondary says about itself in every ACK and PONG."""

    node: str
    incarnation: str
    length: int


@dataclass(frozen=True)
class Ack:
    corr_id: str
    status: Status
    acked: list[tuple[int, int]]


@dataclass(frozen=True)
class Pong:
    corr_id: str
    status: Status


Message = Union[Append, Ping, Ack, Pong]


def new_corr_id() -> str:
    """A fresh correlation id. Thread: any (itertools.count is atomic)."""
    return f"{_CORR_PREFIX}{next(_corr_counter):x}"


def encode_entry(message: str) -> bytes:
    """Encode one message once, as the JSON literal every later copy reuses.

    ensure_ascii keeps the bytes pure ASCII, so strings that are not valid
    Unicode on their own (a lone surrogate from ``"\\ud800"``) still round-trip.
    """
    return json.dumps(message).encode("ascii")


def encode_append(corr_id: str, epoch: str, first: int, entries: list[bytes]) -> list[bytes]:
    """An APPEND of ``entries`` (from ``encode_entry``, at least one) from seq ``first``."""
    header = json.dumps({"epoch": epoch, "first": first}).encode()
    return [APPEND, corr_id.encode(), header, ENTRY_SEPARATOR.join(entries)]


def encode_ping(corr_id: str, epoch: str) -> list[bytes]:
    return [PING, corr_id.encode(), json.dumps({"epoch": epoch}).encode()]


def encode_ack(corr_id: str, status: Status, acked: list[tuple[int, int]]) -> list[bytes]:
    body = _status_dict(status)
    body["acked"] = [list(r) for r in acked]
    return [ACK, corr_id.encode(), json.dumps(body).encode()]


def encode_pong(corr_id: str, status: Status) -> list[bytes]:
    return [PONG, corr_id.encode(), json.dumps(_status_dict(status)).encode()]


def decode(frames: list[bytes]) -> Message:
    """Parse one message (identity frame already stripped); raise ProtocolError."""
    if len(frames) < 3:
        raise ProtocolError(f"expected at least 3 frames, got {len(frames)}")
    kind, raw_corr, raw_body = frames[0], frames[1], frames[2]
    corr_id = _decode_corr_id(raw_corr)
    body = _decode_json_object(raw_body)
    if kind == APPEND:
        _expect_frame_count(kind, frames, 4)
        first = _seq(body, "first")
        entries = frames[3].split(ENTRY_SEPARATOR)
        if first + len(entries) > MAX_SEQ:
            raise ProtocolError("APPEND runs past the largest seq")
        _check_entries(entries)
        return Append(corr_id, _text(body, "epoch"), first, entries)
    _expect_frame_count(kind, frames, 3)
    if kind == PING:
        return Ping(corr_id, _text(body, "epoch"))
    if kind == ACK:
        return Ack(corr_id, _decode_status(body), _decode_ranges(body.get("acked")))
    if kind == PONG:
        return Pong(corr_id, _decode_status(body))
    raise ProtocolError(f"unknown message kind {_describe_kind(kind)}")


def to_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Collapse seqs into sorted half-open ranges: [1, 2, 3, 7] -> [(1, 4), (7, 8)]."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and ranges[-1][1] == seq:
            ranges[-1] = (ranges[-1][0], seq + 1)
        else:
            ranges.append((seq, seq + 1))
    return ranges


def _status_dict(status: Status) -> dict:
    return {"node": status.node, "incarnation": status.incarnation, "length": status.length}


def _decode_status(body: dict) -> Status:
    return Status(_text(body, "node"), _text(body, "incarnation"), _seq(body, "length"))


def _expect_frame_count(kind: bytes, frames: list[bytes], count: int) -> None:
    if len(frames) != count:
        raise ProtocolError(f"{_describe_kind(kind)} needs {count} frames, got {len(frames)}")


def _describe_kind(kind: bytes) -> str:
    # A name like b"SYNC" helps whoever reads the log; anything else could be
    # a misplaced message body, which must not reach a log line.
    if kind.isascii() and kind.isalpha() and kind.isupper() and len(kind) <= 10:
        return kind.decode()
    return f"({len(kind)} bytes)"


def _decode_corr_id(raw: bytes) -> str:
    if not raw or len(raw) > MAX_CORR_ID_BYTES or not raw.isascii() or not raw.isalnum():
        raise ProtocolError("corr_id must be 1-64 ASCII letters or digits")
    return raw.decode("ascii")


def _decode_json_object(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("body is not a JSON object")
    return body


def _check_entries(entries: list[bytes]) -> None:
    """Each entry must be exactly one JSON string.

    Parsed as one array, in a single C call rather than one per entry: an
    entry with a comma of its own between two values would add a value, and
    only an empty entry could make up for it, which makes the array invalid;
    so the count of values and their types settle it."""
    try:
        values = json.loads(b"[" + b",".join(entries) + b"]")
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("an entry is not JSON") from None
    if len(values) != len(entries) or not all(type(value) is str for value in values):
        raise ProtocolError("an entry is not a JSON string")


def _seq(body: dict, key: str) -> int:
    value = body.get(key)
    # bool is an int subclass; True is not a seq.
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise ProtocolError(f"{key!r} must be an integer in [0, 2**53]")
    return value


def _text(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise ProtocolError(f"{key!r} must be a non-empty string")
    return value


def _decode_ranges(value: object) -> list[tuple[int, int]]:
    if not isinstance(value, list):
        raise ProtocolError("'acked' must be a list of [start, stop] pairs")
    ranges = []
    for pair in value:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or any(type(n) is not int for n in pair)
            or not 0 <= pair[0] < pair[1] <= MAX_SEQ
        ):
            raise ProtocolError("'acked' must be a list of [start, stop] pairs with start < stop")
        ranges.append((pair[0], pair[1]))
    return ranges
