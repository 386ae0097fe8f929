"""The replication frames: every Raft message (shared.consensus.raft_messages), one zmq frame each.

This module owns the layout of a frame and of a log entry's line in it.
Pure: no sockets, no state, callable from any thread. ``decode`` is strict:
a frame that is not exactly what ``encode`` writes raises ProtocolError,
and the node logs and drops it (shared.wire.bad_frames).

    <KIND> <header>[\\n<entry>\\n<entry>...]

The header is a JSON object. Every one holds "from" (the sender's name),
"term", "url" (its ADVERTISED_URL: where appends are forwarded while it is
primary), "public" (its PUBLIC_URL: where clients and browsers reach it)
and "limit" (the largest frame it accepts, its zmq.MAXMSGSIZE: what is
sent to it stays within). Beside them, by kind:

    PREVOTE, VOTE  last_log_term, log_length (VOTE: transfer)   vote requests
    VOTED          granted, pre_vote                            their answer
    REPLICATE      seq, prev_length, prev_term, prev_digest,    AppendEntries, its
                   commit, start, cluster, vouch, terms         entries one per line
    REPLICATED     seq, success, match, retry, diverged,
                   caught_up, life
    BEAT           seq, commit, start, cluster, vouch            Heartbeat
    BEATEN         seq, length, caught_up, life
    SNAPSHOT       seq, start, keys, keys_offset, keys_total, cluster
    SNAPSHOTTED    seq, start_index, keys_received, caught_up, life
    TIMEOUTNOW     (nothing more)                               stand at once
    READINDEX      request                                      read index
    READINDEXED    request, index
    STATE          (nothing more)                               a recovering fixed
    STATED         last_log_term, log_length, start, cluster    primary's questions
    FETCH          prev_length, keys_offset, pages
    FETCHED        prev_length, prev_term, prev_digest, start,  entries one per line
                   keys, keys_offset, keys_total, terms

- "terms" gives the entries' terms as runs ``[[term, count], ...]``: a batch
  is almost always of one term. "start" is a log's start
  ``[index, term, digest, first_id, offset]`` (REPLICATE and BEAT carry
  only its index); "keys" the Idempotency-Keys in force there,
  ``[[key, index, first_id, count, digest], ...]``. FETCHED's "prev_term"
  is null where the source holds fewer than "prev_length" entries, and on
  a page of its start.
- An entry's line is ``[@<key> ][#<count> ]<messages>``: the messages'
  JSON string literals joined by commas, as ``encode_entry`` writes each
  (ensure_ascii, so none holds a raw newline); ``#<count>`` when there is
  more than one, ``@<key>`` when the append carried an Idempotency-Key. An
  empty line is a new term's no-op. Each literal is checked on arrival:
  the messages parse as one JSON array of strings, and each, encoded
  again, gives back its bytes exactly.
- Terms are at most MAX_TERM + 1 (a pre-vote asks about its sender's term
  plus one), so a node can always stand above any term it took on.

Each node sends requests on its own DEALER to the addressee's ROUTER, and
answers on the connection a request came on (shared.node.node_io).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from operator import add, sub

from shared.consensus.raft import MAX_TERM
from shared.consensus.raft_log import (
    ENTRY_BODY, ENTRY_COUNT, ENTRY_KEY, ENTRY_TERM, Entry, KeyRecord, LogStart, make_entry,
)
from shared.consensus.raft_messages import (
    MAX_FETCH_PAGES, AppendEntries, AppendReply, FetchReply, FetchRequest, Heartbeat, HeartbeatReply,
    InstallSnapshot, Message, PreVoteRequest, ReadIndexReply, ReadIndexRequest, SnapshotReply, StateReply,
    StateRequest, TimeoutNow, VoteReply, VoteRequest,
)
from shared.log.idempotency import KEY_PATTERN
from shared.runtime.config import MAX_URL_LENGTH

#: Largest index, length, id or offset on the wire: JSON numbers stay exact below 2**53.
MAX_SEQ = 2**53
#: Bytes of entries one frame carries at most, past its first entry.
MAX_BATCH_BYTES = 4 << 20
#: Entries one frame may carry: far more than a node sends (4,096), and few
#: enough that decoding a hostile frame never costs much. Counted before parsing.
MAX_FRAME_ENTRIES = 65_536
#: Messages one entry (one append) may hold: MAX_BATCH_MESSAGES can be no larger.
MAX_ENTRY_MESSAGES = 1_000_000
#: Idempotency-Keys one frame may carry.
MAX_FRAME_KEYS = 20_000
#: Bytes of frame headers, generously.
FRAME_OVERHEAD_BYTES = 1 << 20

_COMMON = ("from", "term", "url", "public", "limit")
_FIELDS = {
    b"PREVOTE": ("last_log_term", "log_length"),
    b"VOTE": ("last_log_term", "log_length", "transfer"),
    b"VOTED": ("granted", "pre_vote"),
    b"REPLICATE": ("seq", "prev_length", "prev_term", "prev_digest", "commit", "start", "cluster",
                   "vouch", "terms"),
    b"REPLICATED": ("seq", "success", "match", "retry", "diverged", "caught_up", "life"),
    b"BEAT": ("seq", "commit", "start", "cluster", "vouch"),
    b"BEATEN": ("seq", "length", "caught_up", "life"),
    b"SNAPSHOT": ("seq", "start", "keys", "keys_offset", "keys_total", "cluster"),
    b"SNAPSHOTTED": ("seq", "start_index", "keys_received", "caught_up", "life"),
    b"TIMEOUTNOW": (),
    b"READINDEX": ("request",),
    b"READINDEXED": ("request", "index"),
    b"STATE": (),
    b"STATED": ("last_log_term", "log_length", "start", "cluster"),
    b"FETCH": ("prev_length", "keys_offset", "pages"),
    b"FETCHED": ("prev_length", "prev_term", "prev_digest", "start", "keys", "keys_offset", "keys_total",
                 "terms"),
}
_WITH_ENTRIES = (b"REPLICATE", b"FETCHED")
#: The header fields of each kind of message, as a set (what a header is checked against).
_HEADER_FIELDS = {kind: frozenset(_COMMON + fields) for kind, fields in _FIELDS.items()}


class ProtocolError(ValueError):
    """A frame that does not follow the layout above."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a frame says about its sender beside the Raft message."""

    url: str  # its ADVERTISED_URL
    frame_limit: int  # the largest frame it accepts
    public_url: str  # its PUBLIC_URL


def frame_limit(max_message_bytes: int) -> int:
    """The largest frame a replication socket accepts (zmq.MAXMSGSIZE); a peer
    that sends more is disconnected before anything is buffered. A batch of
    entries, plus one entry at the largest: a body of ``max_message_bytes``
    as JSON literals is at most three times that (a two-byte character
    becomes a six-byte escape)."""
    return 3 * max_message_bytes + MAX_BATCH_BYTES + FRAME_OVERHEAD_BYTES


def encode_entry(message: str) -> bytes:
    """Encode one message once, as the JSON literal every later copy reuses.

    ASCII only (what ``json.dumps`` writes by default, through the same C
    function), so strings that are not valid Unicode on their own (a lone
    surrogate from ``"\\ud800"``) still round-trip. One string has one such
    encoding, which is how a received entry is checked."""
    return encode_basestring_ascii(message).encode("ascii")


# -- encoding ------------------------------------------------------------------------------

def encode(message: Message, envelope: Envelope) -> bytes:
    header = {"from": message.sender, "term": message.term, "url": envelope.url,
              "public": envelope.public_url, "limit": envelope.frame_limit}
    kind, fields, entries = _parts(message)
    header |= fields
    head = kind + b" " + _HEADER_ENCODER.encode(header).encode()
    if entries is None:
        return head
    if set(map(ENTRY_COUNT, entries)) == {1} and not any(map(ENTRY_KEY, entries)):
        return b"\n".join([head, *map(ENTRY_BODY, entries)])  # one plain message each: the common case
    return b"\n".join([head, *map(_entry_line, entries)])


def _parts(message: Message) -> tuple[bytes, dict, tuple[Entry, ...] | None]:
    """The kind, the fields beside the common ones, and the entries (None: no entry lines)."""
    match message:
        case PreVoteRequest():
            return b"PREVOTE", {"last_log_term": message.last_log_term, "log_length": message.log_length}, None
        case VoteRequest():
            return b"VOTE", {"last_log_term": message.last_log_term, "log_length": message.log_length,
                             "transfer": message.transfer}, None
        case VoteReply():
            return b"VOTED", {"granted": message.granted, "pre_vote": message.pre_vote}, None
        case AppendEntries():
            return b"REPLICATE", {
                "seq": message.seq, "prev_length": message.prev_length, "prev_term": message.prev_term,
                "prev_digest": message.prev_digest, "commit": message.commit_length,
                "start": message.log_start, "cluster": message.cluster, "vouch": message.vouch,
                "terms": _term_runs(message.entries)}, message.entries
        case AppendReply():
            return b"REPLICATED", {"seq": message.seq, "success": message.success,
                                   "match": message.match_length, "retry": message.retry_length,
                                   "diverged": message.diverged, "caught_up": message.caught_up,
                                   "life": message.incarnation}, None
        case Heartbeat():
            return b"BEAT", {"seq": message.seq, "commit": message.commit_length, "start": message.log_start,
                             "cluster": message.cluster, "vouch": message.vouch}, None
        case HeartbeatReply():
            return b"BEATEN", {"seq": message.seq, "length": message.length,
                               "caught_up": message.caught_up, "life": message.incarnation}, None
        case InstallSnapshot():
            return b"SNAPSHOT", {"seq": message.seq, "start": _start(message.start),
                                 "keys": _keys(message.keys), "keys_offset": message.keys_offset,
                                 "keys_total": message.keys_total, "cluster": message.cluster}, None
        case SnapshotReply():
            return b"SNAPSHOTTED", {"seq": message.seq, "start_index": message.start_index,
                                    "keys_received": message.keys_received,
                                    "caught_up": message.caught_up, "life": message.incarnation}, None
        case TimeoutNow():
            return b"TIMEOUTNOW", {}, None
        case ReadIndexRequest():
            return b"READINDEX", {"request": message.request}, None
        case ReadIndexReply():
            return b"READINDEXED", {"request": message.request, "index": message.index}, None
        case StateRequest():
            return b"STATE", {}, None
        case StateReply():
            return b"STATED", {"last_log_term": message.last_log_term, "log_length": message.log_length,
                               "start": _start(message.start), "cluster": message.cluster}, None
        case FetchRequest():
            return b"FETCH", {"prev_length": message.prev_length, "keys_offset": message.keys_offset,
                              "pages": message.pages}, None
        case FetchReply():
            return b"FETCHED", {
                "prev_length": message.prev_length, "prev_term": message.prev_term,
                "prev_digest": message.prev_digest,
                "start": None if message.start is None else _start(message.start),
                "keys": _keys(message.keys), "keys_offset": message.keys_offset,
                "keys_total": message.keys_total, "terms": _term_runs(message.entries)}, message.entries
    raise TypeError(f"not a Raft message: {message!r}")


def _entry_line(entry: Entry) -> bytes:
    line = entry.body
    if entry.count > 1:
        line = b"#%d %s" % (entry.count, line)
    if entry.key is not None:
        line = b"@%s %s" % (entry.key.encode("ascii"), line)
    return line


def _term_runs(entries: tuple[Entry, ...]) -> list[list[int]]:
    return [[term, len(list(run))] for term, run in itertools.groupby(map(ENTRY_TERM, entries))]


def _start(start: LogStart) -> list[int]:
    return [start.index, start.term, start.digest, start.first_id, start.offset]


def _keys(keys: tuple[KeyRecord, ...]) -> list[list]:
    return [[k.key, k.index, k.first_id, k.count, k.digest] for k in keys]


# -- decoding ------------------------------------------------------------------------------

def decode(parts: list[bytes]) -> tuple[Message, Envelope]:
    """One message, given as the parts it arrived in (a ROUTER's identity
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
    if newline and kind not in _WITH_ENTRIES:
        raise ProtocolError(f"{kind.decode()} carries no entries")
    h = _Header(_header(raw_header, kind))
    sender = h.name("from")
    term = h.count("term", maximum=MAX_TERM + 1)
    envelope = Envelope(h.url("url"), h.count("limit", minimum=1), h.url("public"))
    message: Message
    match kind:
        case b"PREVOTE":
            message = PreVoteRequest(sender, term, h.term("last_log_term"), h.count("log_length"))
        case b"VOTE":
            message = VoteRequest(sender, term, h.term("last_log_term"), h.count("log_length"),
                                  h.flag("transfer"))
        case b"VOTED":
            message = VoteReply(sender, term, h.flag("granted"), h.flag("pre_vote"))
        case b"REPLICATE":
            entries = _entries(h.terms(), raw_entries if newline else None)
            prev_length = h.count("prev_length")
            if prev_length + len(entries) > MAX_SEQ:
                raise ProtocolError("the entries run past the largest index")
            message = AppendEntries(sender, term, h.count("seq"), prev_length, h.term("prev_term"),
                                    h.digest("prev_digest"), entries, h.count("commit"), h.count("start"),
                                    h.cluster(), h.optional_name("vouch"))
        case b"REPLICATED":
            message = AppendReply(sender, term, h.count("seq"), h.flag("success"), h.count("match"),
                                  h.count("retry"), h.optional_text("diverged"), h.flag("caught_up"),
                                  h.life())
        case b"BEAT":
            message = Heartbeat(sender, term, h.count("seq"), h.count("commit"), h.count("start"),
                                h.cluster(), h.optional_name("vouch"))
        case b"BEATEN":
            message = HeartbeatReply(sender, term, h.count("seq"), h.count("length"), h.flag("caught_up"),
                                     h.life())
        case b"SNAPSHOT":
            message = InstallSnapshot(sender, term, h.count("seq"), h.start("start"), h.keys(),
                                      h.count("keys_offset"), h.count("keys_total"), h.cluster())
        case b"SNAPSHOTTED":
            message = SnapshotReply(sender, term, h.count("seq"), h.count("start_index"),
                                    h.count("keys_received"), h.flag("caught_up"), h.life())
        case b"TIMEOUTNOW":
            message = TimeoutNow(sender, term)
        case b"READINDEX":
            message = ReadIndexRequest(sender, term, h.count("request"))
        case b"READINDEXED":
            index = None if h.raw["index"] is None else h.count("index")
            message = ReadIndexReply(sender, term, h.count("request"), index)
        case b"STATE":
            message = StateRequest(sender, term)
        case b"STATED":
            message = StateReply(sender, term, h.term("last_log_term"), h.count("log_length"),
                                 h.start("start"), h.cluster())
        case b"FETCH":
            message = FetchRequest(sender, term, h.count("prev_length"), h.count("keys_offset"),
                                   h.count("pages", minimum=1, maximum=MAX_FETCH_PAGES))
        case _:  # FETCHED
            entries = _entries(h.terms(), raw_entries if newline else None)
            start = None if h.raw["start"] is None else h.start("start")
            prev_term = None if h.raw["prev_term"] is None else h.term("prev_term")
            message = FetchReply(sender, term, h.count("prev_length"), entries, start, h.keys(),
                                 h.count("keys_offset"), h.count("keys_total"), prev_term,
                                 h.digest("prev_digest"))
    return message, envelope


def _header(raw: bytes, kind: bytes) -> dict:
    try:
        # ASCII, as encode writes it (json.loads alone would guess UTF-16 or -32).
        header = _HEADER_DECODER.decode(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("the header is not JSON") from None
    if not isinstance(header, dict) or header.keys() != _HEADER_FIELDS[kind]:
        raise ProtocolError(f"the header must hold exactly {', '.join(_COMMON + _FIELDS[kind])}")
    return header


def _no_repeated_field(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose every field is named once (else the last would win)."""
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise ProtocolError("a field is repeated")
    return fields


# Made once: json.dumps and json.loads build a new coder at every call given options.
_HEADER_ENCODER = json.JSONEncoder(separators=(",", ":"))
_HEADER_DECODER = json.JSONDecoder(object_pairs_hook=_no_repeated_field)


class _Header:
    """The header's fields, each checked as it is read."""

    def __init__(self, raw: dict) -> None:
        self.raw = raw

    def count(self, field: str, minimum: int = 0, maximum: int = MAX_SEQ) -> int:
        value = self.raw[field]
        if type(value) is not int or not minimum <= value <= maximum:  # True is no count
            raise ProtocolError(f"{field!r} must be an integer in [{minimum}, {maximum}]")
        return value

    def term(self, field: str) -> int:
        """A term a log may hold (a message's own term may be one more: see MAX_TERM)."""
        return self.count(field, maximum=MAX_TERM)

    def digest(self, field: str) -> int:
        return self.count(field, maximum=(1 << 32) - 1)

    def flag(self, field: str) -> bool:
        if type(self.raw[field]) is not bool:
            raise ProtocolError(f"{field!r} must be true or false")
        return self.raw[field]

    def name(self, field: str) -> str:
        value = self.raw[field]
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise ProtocolError(f"{field!r} must be a node name")
        return value

    def url(self, field: str) -> str:
        value = self.raw[field]
        if (not isinstance(value, str) or not value.startswith(("http://", "https://"))
                or len(value) > MAX_URL_LENGTH):
            raise ProtocolError(f"{field!r} must be an http(s) URL")
        return value

    def optional_text(self, field: str) -> str | None:
        value = self.raw[field]
        if value is not None and (not isinstance(value, str) or len(value) > 1000):
            raise ProtocolError(f"{field!r} must be text or null")
        return value

    def life(self) -> str:
        value = self.raw["life"]
        if not isinstance(value, str) or len(value) > 64:
            raise ProtocolError("'life' must be a name of at most 64 characters")
        return value

    def optional_name(self, field: str) -> str | None:
        value = self.raw[field]
        if value is not None and (not isinstance(value, str) or len(value) > 64):
            raise ProtocolError(f"{field!r} must be a name of at most 64 characters, or null")
        return value

    def cluster(self) -> str | None:
        value = self.raw["cluster"]
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 64):
            raise ProtocolError("'cluster' must be a name or null")
        return value

    def start(self, field: str) -> LogStart:
        value = self.raw[field]
        if not isinstance(value, list) or len(value) != 5:
            raise ProtocolError(f"{field!r} must be [index, term, digest, first_id, offset]")
        checked = _Header(dict(zip(("index", "term", "digest", "first_id", "offset"), value)))
        return LogStart(checked.count("index"), checked.term("term"),
                        checked.digest("digest"), checked.count("first_id"), checked.count("offset"))

    def keys(self) -> tuple[KeyRecord, ...]:
        value = self.raw["keys"]
        if not isinstance(value, list) or len(value) > MAX_FRAME_KEYS:
            raise ProtocolError(f"'keys' must be a list of at most {MAX_FRAME_KEYS} keys")
        records = []
        for item in value:
            if not isinstance(item, list) or len(item) != 5 or not isinstance(item[0], str) \
                    or not KEY_PATTERN.fullmatch(item[0]):
                raise ProtocolError("a key must be [key, index, first_id, count, digest]")
            checked = _Header(dict(zip(("index", "first_id", "count", "digest"), item[1:])))
            records.append(KeyRecord(item[0], checked.count("index"), checked.count("first_id"),
                                     checked.count("count", 1, MAX_ENTRY_MESSAGES), checked.digest("digest")))
        return tuple(records)

    def terms(self) -> list[int]:
        runs = self.raw["terms"]
        if not isinstance(runs, list) or len(runs) > MAX_FRAME_ENTRIES:
            raise ProtocolError("'terms' must be a list of [term, count] runs")
        terms: list[int] = []
        for run in runs:
            if (not isinstance(run, list) or len(run) != 2 or any(type(n) is not int for n in run)
                    or not 0 < run[0] <= MAX_TERM or not 0 < run[1] <= MAX_FRAME_ENTRIES - len(terms)
                    or (terms and terms[-1] == run[0])):  # one run per term, as encode writes them
                raise ProtocolError("'terms' must be a list of [term, count] runs")
            terms.extend([run[0]] * run[1])
        return terms


#: The first byte of a line that is not a plain message: a key, or a count.
_MARKS = b"@#"


def _entries(terms: list[int], raw: bytes | None) -> tuple[Entry, ...]:
    """The entries of a frame: one line each, their terms from the header."""
    if raw is None:
        lines: list[bytes] = []
    elif raw.count(b"\n") >= MAX_FRAME_ENTRIES:
        raise ProtocolError(f"more than {MAX_FRAME_ENTRIES} entries in one frame")
    else:
        lines = raw.split(b"\n")
    if len(lines) != len(terms):
        raise ProtocolError(f"'terms' counts {len(terms)} entries, the frame holds {len(lines)}")
    if raw is not None and b"@" not in raw and b"#" not in raw and b"" not in lines:
        # Surely one plain message a line (no mark anywhere, no no-op): the
        # common case, found by scans in C and each entry made in C. A
        # message that holds a mark only takes the frame line by line.
        entries = list(map(make_entry, zip(terms, lines, itertools.repeat(1), itertools.repeat(None))))
    else:
        entries = [Entry(term, line, 1) if line and line[0] not in _MARKS else _entry(term, line)
                   for term, line in zip(terms, lines)]
    check_bodies(entries)
    return tuple(entries)


def _entry(term: int, line: bytes) -> Entry:
    if not line:
        return Entry(term)  # the no-op
    key, count = None, 1
    if line.startswith(b"@"):
        raw_key, _, line = line[1:].partition(b" ")
        if not KEY_PATTERN.fullmatch(raw_key.decode("latin-1")):
            raise ProtocolError("a keyed entry must start with @<key> and a space")
        key = raw_key.decode("ascii")
    if line.startswith(b"#"):
        raw_count, _, line = line[1:].partition(b" ")
        if not raw_count.isdigit() or raw_count.startswith(b"0") or len(raw_count) > 7:
            raise ProtocolError("an entry's count must be #<n> and a space")
        count = int(raw_count)
        if not 1 < count <= MAX_ENTRY_MESSAGES:
            raise ProtocolError(f"an entry holds 2 to {MAX_ENTRY_MESSAGES} messages when it says how many")
    if not line:
        raise ProtocolError("an entry holds at least one message")
    return Entry(term, line, count, key)


#: The bytes a JSON string literal holds as themselves: printable ASCII.
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def _each_a_plain_literal(joined: bytes, bodies: list[bytes]) -> bool:
    """Whether each body is surely one JSON string as ``encode_entry`` writes
    it, with nothing escaped: printable ASCII without a backslash, a quote at
    each end and none between. Five scans in C, where parsing and encoding
    again cost three times as long; most messages are such."""
    quote = itertools.repeat(b'"')
    return (not joined.translate(None, _PRINTABLE_ASCII) and b"\\" not in joined
            and set(map(bytes.count, bodies, quote)) == {2}
            and all(map(bytes.startswith, bodies, quote)) and all(map(bytes.endswith, bodies, quote)))


def check_bodies(entries: list[Entry]) -> None:
    """Each entry's messages must be exactly its count of JSON strings, each as
    ``encode_entry`` writes it. The frame's bodies are parsed as one array and
    encoded again, each in one C loop, and must give back the same bytes; the
    values' count and types alone do not settle it (``"a`` and ``b","c"``
    join into two strings). Then each entry must end where its last message
    ends (``"a","`` and ``","b"`` join into three canonical strings, yet
    neither is one). Every step is a C loop over the frame: a secondary runs
    this on every frame, a recovering primary on every page; bodies of one
    message with nothing escaped are settled by scans alone."""
    counts = list(map(ENTRY_COUNT, entries))
    bodies = list(map(ENTRY_BODY, entries))
    if 0 in counts:  # the no-ops hold no message, and no text
        bodies = list(itertools.compress(bodies, counts))
        counts = list(filter(None, counts))
    if not counts:
        return
    joined = b",".join(bodies)
    if len(counts) == sum(counts) and _each_a_plain_literal(joined, bodies):
        return  # one message each, with nothing to escape: the common case, settled by scans
    try:
        values = json.loads(b"[" + joined + b"]")
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("an entry's messages are not JSON") from None
    if len(values) != sum(counts) or set(map(type, values)) != {str}:
        raise ProtocolError("an entry's messages are not as many JSON strings as it says")
    literals = list(map(encode_basestring_ascii, values))
    if ",".join(literals).encode("ascii") != joined:
        raise ProtocolError("an entry's messages are not JSON strings as a primary encodes them")
    literal_sizes = list(map(len, literals))
    if len(literals) == len(bodies):  # one message each (the common case): the same sizes
        ends_agree = literal_sizes == list(map(len, bodies))
    else:
        # Where each message, and each entry, ends in ``joined``: its length and
        # those before it, plus a comma after each one before it.
        message_ends = list(map(add, itertools.accumulate(literal_sizes), itertools.count()))
        entry_ends = list(map(add, itertools.accumulate(map(len, bodies)), itertools.count()))
        last_messages = map(sub, itertools.accumulate(counts), itertools.repeat(1))
        ends_agree = list(map(message_ends.__getitem__, last_messages)) == entry_ends
    if not ends_agree:
        raise ProtocolError("an entry's messages are not JSON strings as a primary encodes them")
