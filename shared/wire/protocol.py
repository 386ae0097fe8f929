"""Replication wire protocol between the primary (DEALER) and a secondary (ROUTER).

This module owns the frame layout (the messages it carries are
shared/consensus/messages.py). It is pure: no sockets, no state, callable
from any thread. Structured parts are UTF-8 JSON, never pickle. Neither end
is REQ/REP, so there is no empty delimiter frame.

Every message is **one frame**: a kind, a corr_id and one more field,
separated by single spaces; APPEND and ENTRIES then carry their entries
after a newline, one per line.

    primary -> secondary                       secondary -> primary
    ---------------------------------------    ---------------------------------------
    APPEND <corr_id> <first> <leader>\n        ACK <corr_id> <status>
      <entries>                                  status: {"node": str,
        line i holds seq first + i                        "incarnation": str,
                                                          "length": int,
                                                          "history": str|null,
                                                          "run": [n, token]|null,
                                                          "frame_limit": int,
                                                          "acked": [[start, stop], ...]}
    PING <corr_id> <leader>                    PONG <corr_id> <status>
      leader: {"history": str|null,              status: as in ACK, without "acked",
               "segments": [...]}                        plus "segments": [...]
    FETCH <corr_id> <from> <frame_limit>       ENTRIES <corr_id> <first>\n<entries>
      (a primary recovering its log)             nothing after the newline if it
                                                 holds no ``from``

``first`` and ``from`` are decimal seqs. The ROUTER sees one more frame in
front, the DEALER's identity; only the secondary's receiver adds or strips it.

- One frame, because every frame sent or received costs a release and a
  re-take of the GIL in pyzmq, and each release lets another thread in: on
  the primary, whose request threads share one GIL with the replicator,
  that was measured in throughput (docs/benchmarks.md).
- corr_id routes a reply to what is waiting for it. Each attempt of a batch
  has its own corr_id; the primary accepts an ACK of any of them, and
  learns from which one it is exactly how long that round trip took.
- seq is a message's position in the total order, 0-based, for the life of
  the cluster. Secondaries order and deduplicate by seq, never by corr_id.
- Entries are encoded once, with ensure_ascii, so no literal holds a raw
  newline and "\n" can separate them. JSON written by ``json.dumps`` holds
  no raw newline either, so the first newline ends the header.
- history names the cluster's log (shared.consensus.history); null from a primary
  that has appended nothing yet. segments name the runs of primaries that
  wrote it, the last one the sender's own run (shared.consensus.history).
- incarnation names a secondary's state: new when it starts without its
  data. A new incarnation tells the primary to resend from ``length``.
- length is the secondary's contiguous prefix: it holds every seq below it.
- acked lists half-open ranges of seqs this ACK confirms as stored.
- frame_limit is the largest frame its sender accepts (its zmq.MAXMSGSIZE,
  ``frame_limit``): a larger one would end the connection. Each end keeps
  what it sends within the other's (``fitting``). Optional, in the status
  and in FETCH alike: a node that does not say is sent frames of any size.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii

from shared.consensus import history as hist
# The messages themselves are the consensus core's types; this module only
# encodes and decodes them, and its callers name them through it.
from shared.consensus.messages import (  # noqa: F401 (re-exported)
    Ack, Append, Entries, Fetch, Leader, Message, Ping, Pong, Status, new_corr_id,
)

APPEND = b"APPEND"
ACK = b"ACK"
PING = b"PING"
PONG = b"PONG"
FETCH = b"FETCH"
ENTRIES = b"ENTRIES"

#: Largest seq or length accepted on the wire: JSON numbers stay exact below 2**53.
MAX_SEQ = 2**53
#: Correlation ids are short ASCII tokens; anything longer is a bad frame.
MAX_CORR_ID_BYTES = 64
#: Bytes of entries one APPEND or ENTRIES frame carries at most, past its first entry.
MAX_BATCH_BYTES = 4 << 20
#: Entries one APPEND or ENTRIES frame may carry: far more than either end
#: sends (batches of about a thousand), and few enough that decoding a
#: hostile frame can never cost much memory. Counted before anything is parsed.
MAX_FRAME_ENTRIES = 65_536
#: Bytes of frame headers, corr_ids and statuses, generously.
FRAME_OVERHEAD_BYTES = 1 << 20
#: Separates the entries of an APPEND, and the header from them; it never
#: occurs inside an entry or a header.
ENTRY_SEPARATOR = b"\n"
#: Separates the header's fields; never inside a kind, corr_id or number.
FIELD_SEPARATOR = b" "
#: The most digits a seq written in decimal can need (2**53 has 16).
MAX_SEQ_DIGITS = 16

class ProtocolError(ValueError):
    """A frame list that does not follow the layout above."""


def frame_limit(max_message_bytes: int) -> int:
    """The largest message a replication socket accepts (zmq.MAXMSGSIZE);
    a peer that sends more is disconnected before anything is buffered.

    One batch of entries, plus one entry at the largest: a message of
    ``max_message_bytes`` as JSON encodes to at most three times that
    (a two-byte character becomes a six-byte escape)."""
    return 3 * max_message_bytes + MAX_BATCH_BYTES + FRAME_OVERHEAD_BYTES


def encode_entry(message: str) -> bytes:
    """Encode one message once, as the JSON literal every later copy reuses.

    ASCII only (what ``json.dumps`` writes by default, through the same C
    function), so strings that are not valid Unicode on their own (a lone
    surrogate from ``"\\ud800"``) still round-trip. One string has one such
    encoding, which is how a received entry is checked (``check_literals``).
    """
    return encode_basestring_ascii(message).encode("ascii")


def encode_append(corr_id: str, leader: Leader, first: int, entries: list[bytes]) -> bytes:
    """An APPEND of ``entries`` (from ``encode_entry``, at least one) from seq ``first``."""
    head = b"%s %s %d %s" % (APPEND, corr_id.encode(), first, leader.wire)
    return ENTRY_SEPARATOR.join([head, *entries])  # one copy of the entries, not two


def encode_ping(corr_id: str, leader: Leader) -> bytes:
    return b"%s %s %s" % (PING, corr_id.encode(), leader.wire)


def encode_fetch(corr_id: str, start: int, frame_limit: int | None = None) -> bytes:
    head = b"%s %s %d" % (FETCH, corr_id.encode(), start)
    return head if frame_limit is None else b"%s %d" % (head, frame_limit)


def encode_ack(corr_id: str, status: Status, acked: list[tuple[int, int]]) -> bytes:
    body = _status_dict(status)
    body["acked"] = [list(r) for r in acked]
    return b"%s %s %s" % (ACK, corr_id.encode(), json.dumps(body).encode())


def encode_pong(corr_id: str, status: Status, segments: hist.Segments) -> bytes:
    body = _status_dict(status)
    body["segments"] = hist.to_wire(segments)
    return b"%s %s %s" % (PONG, corr_id.encode(), json.dumps(body).encode())


def encode_entries(corr_id: str, first: int, entries: list[bytes]) -> bytes:
    return b"%s %s %d\n%s" % (ENTRIES, corr_id.encode(), first, ENTRY_SEPARATOR.join(entries))


def append_overhead(corr_id: str, leader: Leader, first: int) -> int:
    """Bytes of an APPEND frame besides its entries, each of which adds its
    length and a separator: ``len(encode_append(...))``, without encoding it."""
    return len(APPEND) + len(corr_id) + _decimal_digits(first) + len(leader.wire) + 3


def entries_overhead(corr_id: str, first: int) -> int:
    """Bytes of an ENTRIES frame besides its entries (at least one), as ``append_overhead``."""
    return len(ENTRIES) + len(corr_id) + _decimal_digits(first) + 2


def fitting(entries: list[bytes], room: int) -> list[bytes]:
    """The longest prefix of ``entries`` that takes at most ``room`` bytes of a
    frame, each entry with its separator; maybe none."""
    size = 0
    for count, entry in enumerate(entries):
        size += len(entry) + len(ENTRY_SEPARATOR)
        if size > room:
            return entries[:count]
    return entries


def _decimal_digits(number: int) -> int:
    return len(b"%d" % number)


def decode(parts: list[bytes]) -> Message:
    """Parse one message, given as the parts it arrived in (the ROUTER's
    identity already stripped): exactly one frame. Raise ProtocolError.

    Nothing else escapes: whatever a frame provokes in the parsers (deep
    nesting, a huge number, memory) is a bad frame too."""
    try:
        return _decode(parts)
    except ProtocolError:
        raise
    except Exception as exc:  # RecursionError, MemoryError's cousins, a parser bug
        raise ProtocolError(f"undecodable frame ({type(exc).__name__})") from None


def _decode(parts: list[bytes]) -> Message:
    if len(parts) != 1:
        raise ProtocolError(f"a message is one frame, got {len(parts)}")
    head, newline, raw_entries = parts[0].partition(ENTRY_SEPARATOR)
    kind, _, rest = head.partition(FIELD_SEPARATOR)
    raw_corr, _, field = rest.partition(FIELD_SEPARATOR)
    if kind not in _KINDS:
        raise ProtocolError(f"unknown message kind {_describe_kind(kind)}")
    corr_id = _decode_corr_id(raw_corr)
    if kind in (APPEND, ENTRIES):
        if not newline:
            raise ProtocolError(f"{kind.decode()} needs its entries after a newline")
        if kind == ENTRIES:
            first = _decimal_seq(field, "first")  # and nothing after it
            return Entries(corr_id, first, _decode_entries(raw_entries, first, allow_empty=True))
        raw_first, _, raw_leader = field.partition(FIELD_SEPARATOR)
        first = _decimal_seq(raw_first, "first")
        entries = _decode_entries(raw_entries, first, allow_empty=False)
        return Append(corr_id, _decode_leader(_decode_json_object(raw_leader)), first, entries)
    if newline:
        raise ProtocolError(f"{kind.decode()} carries no entries")
    if kind == FETCH:
        raw_from, limited, raw_limit = field.partition(FIELD_SEPARATOR)
        start = _decimal_seq(raw_from, "from")
        return Fetch(corr_id, start, _frame_limit(_decimal_seq(raw_limit, "frame_limit")) if limited else None)
    body = _decode_json_object(field)
    if kind == PING:
        return Ping(corr_id, _decode_leader(body))
    if kind == ACK:
        return Ack(corr_id, _decode_status(body), _decode_ranges(body.get("acked")))
    return Pong(corr_id, _decode_status(body), _decode_segments(body.get("segments")))


_KINDS = (APPEND, ACK, PING, PONG, FETCH, ENTRIES)


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
    body = {"node": status.node, "incarnation": status.incarnation, "length": status.length,
            "history": status.history, "run": None if status.run is None else list(status.run)}
    if status.frame_limit is not None:
        body["frame_limit"] = status.frame_limit
    return body


def _decode_status(body: dict) -> Status:
    history = _optional_text(body, "history")
    run = body.get("run")
    if run is not None:
        if (not isinstance(run, list) or len(run) != 2 or type(run[0]) is not int
                or not 0 <= run[0] < MAX_SEQ or not isinstance(run[1], str) or not 0 < len(run[1]) <= 64):
            raise ProtocolError("'run' must be [number, token] or null")
        run = hist.Run(run[0], run[1])
    limit = _frame_limit(_seq(body, "frame_limit")) if "frame_limit" in body else None
    return Status(_text(body, "node"), _text(body, "incarnation"), _seq(body, "length"), history, run,
                  limit)


def _frame_limit(value: int) -> int:
    if value == 0:  # nothing fits in no bytes: a broken peer, not a tight one
        raise ProtocolError("'frame_limit' must be a positive integer")
    return value


def _decode_leader(body: dict) -> Leader:
    history = _optional_text(body, "history")
    segments = _decode_segments(body.get("segments"))
    if (history is None) != (not segments):
        raise ProtocolError("a history needs segments, and segments a history")
    return Leader(history, segments)


def _decode_segments(value: object) -> hist.Segments:
    try:
        return hist.from_wire(value)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def _decode_entries(raw: bytes, first: int, allow_empty: bool) -> list[bytes]:
    if not raw and allow_empty:
        return []
    if raw.count(ENTRY_SEPARATOR) >= MAX_FRAME_ENTRIES:
        raise ProtocolError(f"more than {MAX_FRAME_ENTRIES} entries in one frame")
    entries = raw.split(ENTRY_SEPARATOR)
    if first + len(entries) > MAX_SEQ:
        raise ProtocolError("the entries run past the largest seq")
    check_literals(entries)
    return entries


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
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"body is not JSON: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise ProtocolError("body is not a JSON object")
    return body


def check_literals(entries: list[bytes]) -> None:
    """Each entry must be exactly one JSON string, as ``encode_entry`` writes it.

    Parsed as one array, in a single C call rather than one per entry; then
    each value, encoded again, must give back its entry byte for byte. The
    values' count and types alone do not settle it: the entries ``"a`` and
    ``b","c"`` join into the two strings "a,b" and "c", and a secondary
    that kept them would hold two entries that are not JSON."""
    try:
        values = json.loads(b"[" + b",".join(entries) + b"]")
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("an entry is not JSON") from None
    if len(values) != len(entries) or not all(type(value) is str for value in values):
        raise ProtocolError("an entry is not a JSON string")
    if not all([encode_entry(value) == entry for value, entry in zip(values, entries)]):
        raise ProtocolError("an entry is not a JSON string as the primary encodes one")


def _decimal_seq(raw: bytes, name: str) -> int:
    """A seq written in decimal ASCII digits, as APPEND, FETCH and ENTRIES carry it."""
    if not raw or len(raw) > MAX_SEQ_DIGITS or not raw.isascii() or not raw.isdigit():
        raise ProtocolError(f"{name!r} must be an integer in [0, 2**53]")
    value = int(raw)
    if value > MAX_SEQ:
        raise ProtocolError(f"{name!r} must be an integer in [0, 2**53]")
    return value


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


def _optional_text(body: dict, key: str) -> str | None:
    return None if body.get(key) is None else _text(body, key)


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
