"""shared.wire.frames: every Raft message survives the wire as one frame, and nothing else is read.

Round trips first (every kind, every optional value), then strictness: each
test builds a frame ``encode`` would not write and expects ProtocolError.
Then the bounds that tie the wire to the HTTP API (frame_limit, one entry
per batch), and last hypothesis, which throws arbitrary and mutated frames
at ``decode``.
"""

from __future__ import annotations

import json
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.consensus.raft import KEYS_PER_CHUNK, MAX_BATCH, MAX_TERM
from shared.consensus.raft_log import Entry, KeyRecord, LogStart, MemoryStorage, RaftLog, cut_to_size
from shared.consensus.raft_messages import (
    MAX_FETCH_PAGES, AppendEntries, AppendReply, FetchReply, FetchRequest, Heartbeat, HeartbeatReply,
    InstallSnapshot, Message, PreVoteRequest, ReadIndexReply, ReadIndexRequest, SnapshotReply, StateReply,
    StateRequest, TimeoutNow, VoteReply, VoteRequest,
)
from shared.log.idempotency import KEY_MAX_LENGTH
from shared.runtime.config import AppendingNodeConfig, ConfigError
from shared.web.append_request import parse_append
from shared.wire.frames import (
    MAX_BATCH_BYTES, MAX_ENTRY_MESSAGES, MAX_FRAME_ENTRIES, MAX_FRAME_KEYS, MAX_SEQ, Envelope,
    ProtocolError, _each_a_plain_literal, decode, encode, encode_entry, frame_limit,
)

ENVELOPE = Envelope("http://n1:8000", frame_limit(1 << 20), "https://log.example/n1")
START = LogStart(index=40, term=3, digest=0xFFFFFFFF, first_id=1234, offset=56789)
LARGEST_START = LogStart(MAX_SEQ, MAX_TERM, 2**32 - 1, MAX_SEQ, MAX_SEQ)
KEYS = (KeyRecord("order-17", 12, 300, 2, 0xFFFFFFFF), KeyRecord("~", 0, 0, MAX_ENTRY_MESSAGES, 0))


def body(*messages: str) -> bytes:
    """An entry's body: the messages' literals as a primary joins them."""
    return b",".join(map(encode_entry, messages))


ENTRIES = (
    Entry(3, body("a\nb"), 1),
    Entry(4),  # a new term's no-op: an empty line
    Entry(4, body("first of two", "é"), 2, "order-17"),  # a keyed batch
    Entry(4, body("\ud800", "😀", '"', "\x00", ""), 5),
    Entry(5, body("keyed"), 1, "k"),
)
MESSAGES = [
    PreVoteRequest("n1", MAX_TERM + 1, 3, 10),  # a pre-vote asks about the term above the largest
    VoteRequest("n1", 4, 3, 10),
    VoteRequest("n1", 4, 3, 10, transfer=True),
    VoteReply("n2", 4, True, False),
    VoteReply("n2", 5, False, True),
    AppendEntries("n1", 4, 9, 3, 2, 0xFFFFFFFF, (), 2),  # a probe
    AppendEntries("n1", 5, 10, 3, 2, 7, ENTRIES, 3, 1, "c0ffee", "life-2"),
    AppendEntries("n1", 1, 1, 0, 0, 0, (Entry(1),), 0),  # nothing but the no-op
    AppendReply("n3", 4, 9, True, match_length=12, incarnation="i1"),
    AppendReply("n3", 4, 9, False, retry_length=7, diverged="it keeps another log", caught_up=False,
                incarnation="life-2"),
    Heartbeat("n1", 4, 11, 8),
    Heartbeat("n1", 4, 11, 8, 2, "c0ffee", "life-2"),
    HeartbeatReply("n2", 4, 11, 9),
    HeartbeatReply("n2", 4, 11, 9, False, "life-3"),
    InstallSnapshot("n1", 4, 12, START, KEYS, 0, 3),  # the first chunk of keys
    InstallSnapshot("n1", 4, 13, START, (), 3, 3, "c0ffee"),  # past the last
    SnapshotReply("n2", 4, 12, 40, 2, True, "i"),
    SnapshotReply("n2", 4, 12, 40, 3, False, "life-4"),
    TimeoutNow("n1", 4),
    ReadIndexRequest("n2", 4, 77),
    ReadIndexReply("n1", 4, 77, 31),
    ReadIndexReply("n1", 4, 77, None),  # not confirmed
    StateRequest("p", 0),
    StateReply("s1", 4, 3, 40, START, "c0ffee"),
    StateReply("s1", 0, 0, 0, LogStart(), None),
    FetchRequest("p", 4, 40),
    FetchRequest("p", 4, 0, 10_000),
    FetchRequest("p", 4, 40, 0, MAX_FETCH_PAGES),
    FetchReply("s1", 4, 40, ENTRIES, prev_term=3, prev_digest=1234),
    FetchReply("s1", 4, 0, (), START, KEYS, 0, 2),  # before the start: the start and keys
    FetchReply("s1", 4, 40, (), prev_term=3, prev_digest=1234),  # the log ends there
    FetchReply("s1", 4, 40, ()),  # the source holds fewer entries
]


def frame_of(message: Message) -> bytes:
    return encode(message, ENVELOPE)


def split(frame: bytes) -> tuple[bytes, dict, bytes]:
    """The kind, the header as a dict, and the rest (the newline before the entries included)."""
    head, newline, lines = frame.partition(b"\n")
    kind, _, header = head.partition(b" ")
    return kind, json.loads(header), newline + lines


def rebuilt(kind: bytes, header: dict, rest: bytes = b"") -> list[bytes]:
    return [kind + b" " + json.dumps(header).encode() + rest]


def with_header(message: Message, **changes) -> list[bytes]:
    kind, header, rest = split(frame_of(message))
    return rebuilt(kind, header | changes, rest)


def with_lines(message: AppendEntries | FetchReply, *lines: bytes, **changes) -> list[bytes]:
    """``message``'s frame with other entry lines (and header fields changed, as "terms")."""
    kind, header, _ = split(frame_of(message))
    return rebuilt(kind, header | changes, b"".join(b"\n" + line for line in lines))


def refused(parts: list[bytes], why: str | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError, match=why) as error:
        decode(parts)
    return error.value


# -- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_decodes_to_itself_with_its_envelope(message):
    frame = frame_of(message)
    assert isinstance(frame, bytes)
    assert decode([frame]) == (message, ENVELOPE)


def test_the_cases_above_cover_every_message_type():
    assert {type(m) for m in MESSAGES} == set(typing.get_args(Message))


def test_entries_keep_their_terms_keys_counts_and_bytes():
    message, _ = decode([frame_of(FetchReply("s1", 5, 40, ENTRIES))])
    assert [(e.term, e.key, e.count) for e in message.entries] == [
        (3, None, 1), (4, None, 0), (4, "order-17", 2), (4, None, 5), (5, "k", 1)]
    assert [e.body for e in message.entries] == [e.body for e in ENTRIES]
    assert json.loads(b"[" + message.entries[3].body + b"]") == ["\ud800", "😀", '"', "\x00", ""]


def test_an_entry_is_one_line_and_its_literals_are_ascii():
    frame = frame_of(AppendEntries("n1", 5, 10, 3, 2, 7, ENTRIES, 3))
    _, header, rest = split(frame)
    assert header["terms"] == [[3, 1], [4, 3], [5, 1]]
    assert rest.split(b"\n")[1:] == [
        b'"a\\nb"', b"", b'@order-17 #2 "first of two","\\u00e9"',
        b'#5 "\\ud800","\\ud83d\\ude00","\\"","\\u0000",""', b'@k "keyed"']
    assert frame.isascii()


# -- strictness: the parts and the kind ------------------------------------------------------

@pytest.mark.parametrize("parts", [
    [],
    [frame_of(TimeoutNow("n1", 4)), b""],
    [frame_of(TimeoutNow("n1", 4))] * 2,
], ids=["none", "an-empty-second-part", "two-frames"])
def test_a_message_is_exactly_one_frame(parts):
    refused(parts, "one frame")


@pytest.mark.parametrize("kind", [b"NOPE", b"replicate", b"", b"REPLICATE\t", b"VOTE\x00", b"\xff"])
def test_an_unknown_kind_is_refused(kind):
    _, header, _ = split(frame_of(VoteRequest("n1", 4, 3, 10)))
    refused(rebuilt(kind, header), "unknown message kind")


@pytest.mark.parametrize("message", [m for m in MESSAGES if not isinstance(m, (AppendEntries, FetchReply))],
                         ids=lambda m: type(m).__name__)
def test_kinds_without_entries_carry_no_lines(message):
    refused([frame_of(message) + b"\n"], "carries no entries")
    refused([frame_of(message) + b'\n"x"'], "carries no entries")


@pytest.mark.parametrize("header", [b"", b"null", b"[]", b'"x"', b"{", b"\xff\xfe", b"[" * 100_000])
def test_a_header_that_is_not_a_json_object_is_refused(header):
    refused([b"VOTE " + header])


# -- strictness: the header's fields ----------------------------------------------------------

@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_each_kind_takes_exactly_its_fields(message):
    kind, header, rest = split(frame_of(message))
    for field in header:
        missing = {name: value for name, value in header.items() if name != field}
        refused(rebuilt(kind, missing, rest), "exactly")
    refused(rebuilt(kind, header | {"extra": 0}, rest), "exactly")
    other_kind = b"FETCHED" if kind == b"REPLICATE" else b"REPLICATE"
    refused(rebuilt(other_kind, header, rest), "exactly")


def json_type(value) -> str:
    return "bool" if isinstance(value, bool) else type(value).__name__


def _accepted_types() -> dict[tuple[bytes, str], set[str]]:
    """The JSON types each field of each kind holds in MESSAGES (which set every
    nullable field both ways): all that field may hold."""
    accepted: dict[tuple[bytes, str], set[str]] = {}
    for message in MESSAGES:
        kind, header, _ = split(frame_of(message))
        for field, value in header.items():
            accepted.setdefault((kind, field), set()).add(json_type(value))
    return accepted


ACCEPTED_TYPES = _accepted_types()
OTHER_VALUES = [True, False, 7, 1.5, 7.0, "7", "http://x", ["x"], [], {}, None]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_each_field_refuses_a_value_of_another_type(message):
    """True is no count, 7.0 no integer, "7" no number, null stands only where it may."""
    kind, header, rest = split(frame_of(message))
    for field in header:
        for value in OTHER_VALUES:
            if json_type(value) not in ACCEPTED_TYPES[kind, field]:
                refused(rebuilt(kind, header | {field: value}, rest))


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_count_is_refused_below_zero_and_above_2_53(message):
    kind, header, rest = split(frame_of(message))
    for field, value in header.items():
        if json_type(value) == "int":
            refused(rebuilt(kind, header | {field: -1}, rest), repr(field))
            refused(rebuilt(kind, header | {field: MAX_SEQ + 1}, rest), repr(field))


APPEND = AppendEntries("n1", 4, 9, 3, 2, 7, (Entry(4, body("x"), 1),) * 2, 3, 1, "c0ffee", "life-2")


@pytest.mark.parametrize("message, field, largest", [
    (PreVoteRequest("n1", 4, 3, 10), "term", MAX_TERM + 1),
    (APPEND, "term", MAX_TERM + 1),
    (APPEND, "seq", MAX_SEQ),
    (APPEND, "commit", MAX_SEQ),
    (APPEND, "limit", MAX_SEQ),
    (APPEND, "prev_digest", 2**32 - 1),
    (APPEND, "prev_length", MAX_SEQ - 2),  # its two entries end at the largest index
    (ReadIndexReply("n1", 4, 77, 31), "index", MAX_SEQ),
    (FetchRequest("p", 4, 40), "keys_offset", MAX_SEQ),
    (FetchRequest("p", 4, 40), "pages", MAX_FETCH_PAGES),
    (FetchReply("s1", 4, 40, (), prev_term=3), "prev_term", MAX_TERM),
    (FetchReply("s1", 4, 40, (), prev_term=3), "prev_digest", 2**32 - 1),
    # Terms a log holds: a recovery or a vote that took a larger one would stand above MAX_TERM.
    (APPEND, "prev_term", MAX_TERM),
    (PreVoteRequest("n1", 4, 3, 10), "last_log_term", MAX_TERM),
    (VoteRequest("n1", 4, 3, 10), "last_log_term", MAX_TERM),
    (StateReply("s1", 4, 3, 10, LogStart(), None), "last_log_term", MAX_TERM),
], ids=["pre-vote-term", "term", "seq", "commit", "limit", "prev_digest", "prev_length", "index",
        "keys_offset", "pages", "fetched-prev_term", "fetched-prev_digest", "prev_term",
        "pre-vote-last_log_term", "vote-last_log_term", "stated-last_log_term"])
def test_numbers_are_taken_up_to_their_bound_and_no_further(message, field, largest):
    decode(with_header(message, **{field: largest}))
    refused(with_header(message, **{field: largest + 1}), "must be an integer|largest index")


def test_a_fetch_asks_for_at_least_one_page():
    refused(with_header(FetchRequest("p", 4, 40), pages=0), "pages")


def test_a_frame_limit_is_at_least_one_byte():
    refused(with_header(TimeoutNow("n1", 4), limit=0), "'limit'")


@pytest.mark.parametrize("field, longest, empty_allowed", [
    ("from", 64, False), ("vouch", 64, True), ("cluster", 64, False),
])
def test_names_are_at_most_64_characters(field, longest, empty_allowed):
    decode(with_header(APPEND, **{field: "é" * longest}))
    refused(with_header(APPEND, **{field: "é" * (longest + 1)}), repr(field))
    if empty_allowed:
        decode(with_header(APPEND, **{field: ""}))
    else:
        refused(with_header(APPEND, **{field: ""}), repr(field))


def test_a_life_is_at_most_64_characters_and_a_divergence_1000():
    reply = AppendReply("n3", 4, 9, False, diverged="why", incarnation="life")
    for field, longest in (("life", 64), ("diverged", 1000)):
        decode(with_header(reply, **{field: "x" * longest}))
        refused(with_header(reply, **{field: "x" * (longest + 1)}), repr(field))


@pytest.mark.parametrize("url", ["ftp://n1", "n1:8000", "HTTP://n1", "", "http://" + "x" * 250])
def test_urls_are_http_or_https_and_at_most_256_characters(url):
    decode(with_header(APPEND, url="https://" + "x" * 248, public="http://" + "x" * 249))
    refused(with_header(APPEND, url=url), "'url'")
    refused(with_header(APPEND, public=url), "'public'")


@pytest.mark.parametrize("start", [
    [40, 3, 0, 1234], [40, 3, 0, 1234, 0, 0], {"index": 40}, "40",
    [-1, 3, 0, 0, 0], [40, MAX_TERM + 1, 0, 0, 0], [40, 3, 2**32, 0, 0], [40, 3, 0, MAX_SEQ + 1, 0],
    [40, 3, 0, 0, -1], [40, True, 0, 0, 0], [40.0, 3, 0, 0, 0],
])
def test_a_log_start_is_five_counts_its_term_and_digest_within_bounds(start):
    why = "'start'|'index'|'term'|'digest'|'first_id'|'offset'"
    refused(with_header(InstallSnapshot("n1", 4, 12, START, (), 0, 0), start=start), why)
    refused(with_header(StateReply("s1", 4, 3, 40, START, None), start=start), why)
    refused(with_header(FetchReply("s1", 4, 0, (), START, (), 0, 0), start=start), why)


def test_a_log_start_takes_the_largest_term_and_digest():
    message = StateReply("s1", 4, 3, 40, LARGEST_START, None)
    assert decode([frame_of(message)])[0] == message


@pytest.mark.parametrize("key", [
    "x", ["", 1, 1, 1, 1], ["a b", 1, 1, 1, 1], ["é", 1, 1, 1, 1], ["k" * (KEY_MAX_LENGTH + 1), 1, 1, 1, 1],
    [7, 1, 1, 1, 1], ["k", 1, 1, 1], ["k", 1, 1, 1, 1, 1], ["k", -1, 1, 1, 1], ["k", 1, 1, 0, 1],
    ["k", 1, 1, MAX_ENTRY_MESSAGES + 1, 1], ["k", 1, 1, 1, 2**32], ["k", 1, True, 1, 1],
])
def test_a_key_record_is_a_valid_key_and_four_counts_within_bounds(key):
    snapshot = InstallSnapshot("n1", 4, 12, START, KEYS, 0, 3)
    why = "a key must be|'index'|'first_id'|'count'|'digest'"
    refused(with_header(snapshot, keys=[key]), why)
    refused(with_header(FetchReply("s1", 4, 0, (), START, KEYS, 0, 2), keys=[key]), why)


def test_a_frame_carries_at_most_max_frame_keys():
    keys = tuple(KeyRecord(f"k{n}", n, n, 1, n) for n in range(MAX_FRAME_KEYS))
    snapshot = InstallSnapshot("n1", 4, 12, START, keys, 0, MAX_FRAME_KEYS)
    assert decode([frame_of(snapshot)])[0] == snapshot
    _, header, _ = split(frame_of(snapshot))
    refused(with_header(snapshot, keys=header["keys"] + [["one-more", 1, 1, 1, 1]]), "at most")


# -- strictness: entries -----------------------------------------------------------------------

TWO = AppendEntries("n1", 4, 9, 3, 2, 7, (Entry(4, body("a"), 1), Entry(4, body("b"), 1)), 3)


@pytest.mark.parametrize("terms", [
    [[4, 1]], [[4, 3]], [], [[4, 1], [4, 0], [4, 1]], [[0, 2]], [[MAX_TERM + 1, 2]], [[-4, 2]],
    [[4, 2, 0]], [[4]], [["4", 2]], [[True, 2]], [[4, True]], [[4.0, 2]], "4", {"4": 2}, [4, 2], None,
])
def test_term_runs_must_be_positive_and_count_the_lines_exactly(terms):
    refused(with_lines(TWO, b'"a"', b'"b"', terms=terms), "'terms'")


def test_entry_terms_go_up_to_the_largest_term():
    decode(with_lines(TWO, b'"a"', b'"b"', terms=[[MAX_TERM, 2]]))


def test_entries_on_a_frame_with_none_in_its_terms_are_refused():
    refused([frame_of(AppendEntries("n1", 4, 9, 3, 2, 7, (), 3)) + b"\n"], "'terms' counts 0")
    refused([frame_of(FetchReply("s1", 4, 40, ())) + b'\n"x"'], "'terms' counts 0")


def test_a_frame_of_max_frame_entries_is_taken_and_one_line_more_is_not():
    noops = AppendEntries("n1", 4, 9, 3, 2, 7, (Entry(4),) * MAX_FRAME_ENTRIES, 3)
    assert decode([frame_of(noops)])[0] == noops
    refused([frame_of(noops) + b"\n"], f"more than {MAX_FRAME_ENTRIES} entries")


def test_a_huge_frame_of_newlines_is_refused_by_its_line_count_before_any_parsing():
    head = frame_of(AppendEntries("n1", 4, 9, 3, 2, 7, (Entry(4),) * MAX_FRAME_ENTRIES, 3))
    head = head.partition(b"\n")[0]
    refused([head + b"\n" * (10 << 20)], f"more than {MAX_FRAME_ENTRIES} entries")


ONE = AppendEntries("n1", 4, 9, 3, 2, 7, (Entry(4, body("a"), 1),), 3)


@pytest.mark.parametrize("line", [
    b'#3 "a","b"', b'#2 "a","b","c"', b'"a","b"', b"#2 ", b"#2",
    b'#1 "a"', b'#02 "a","b"', b'#0 "a"', b'#+2 "a","b"', b'# 2 "a","b"', b'#2  "a","b"',
    b'#2\t"a","b"', '#٢ "a","b"'.encode(), b'#10000000 "a"', b'#1000001 "a"',
], ids=repr)
def test_an_entrys_count_must_be_written_as_encode_writes_it_and_agree_with_its_literals(line):
    refused(with_lines(ONE, line))


@pytest.mark.parametrize("line", [
    b'"\\u0061"',  # "a" escaped: the same string, other bytes
    b'"\\u00E9"',  # upper-case hex
    '"é"'.encode(),  # raw UTF-8
    b'"\\/"', b'"\\u0009"',  # escapes encode_entry does not write
    b'"a" ', b' "a"', b'"a",', b'"a"]', b"['a']", b'"a', b"a",
    b"42", b"null", b"true", b'["a"]', b'{"a": 1}', b"\xff", b'"\xff"',
    b'"\\ud83d\\ude00"'.replace(b"d83d", b"D83D"),
], ids=repr)
def test_a_literal_must_be_exactly_as_encode_entry_writes_it(line):
    refused(with_lines(ONE, line), "JSON")


def test_plain_messages_that_hold_marks_or_the_no_op_take_the_line_by_line_way_and_decode_alike():
    # Plain lines are made in one step only when no byte is a mark and no line is
    # empty: each of these frames must take the other way, and decode the same.
    plain = (Entry(4, body("a"), 1), Entry(4, body("b"), 1))
    for entries in [plain, (Entry(4, body("user@host"), 1), Entry(4, body("#2 is not a count"), 1)),
                    (Entry(4, body("a"), 1), Entry(4), Entry(4, body("b"), 1)),
                    (Entry(4, body("a"), 1), Entry(4, body("b", "c"), 2)),
                    (Entry(4, body("a"), 1, "k"), Entry(4, body("b"), 1))]:
        message = AppendEntries("n1", 4, 9, 3, 2, 7, entries, 3)
        assert decode([encode(message, ENVELOPE)])[0] == message
    refused(with_lines(TWO, b'"a"', b'"b","c"'), "as many JSON strings")  # no mark, yet two in one


def test_two_lines_that_parse_as_two_strings_when_joined_are_refused():
    # '"a' and 'b","c"' join into ["a,b", "c"]: two strings for two entries of one each.
    refused(with_lines(TWO, b'"a', b'b","c"'), "as a primary encodes them")
    refused(with_lines(TWO, b'#2 "a', b'b","c","d"', terms=[[4, 2]]))
    # '"a","' and '","b"' join into ["a", ",", "b"], every one as encode_entry writes it,
    # and as many as the entries say (2 + 1): yet the first line ends inside a string.
    refused(with_lines(TWO, b'#2 "a","', b'","b"', terms=[[4, 2]]), "as a primary encodes them")


@pytest.mark.parametrize("line", [
    b'@ "a"', b'@k y "a"', b"@k", b"@k ", b'@k\t"a"', b'@k\x7f "a"', '@ké "a"'.encode(),
    b"@" + b"k" * (KEY_MAX_LENGTH + 1) + b' "a"', b'#2 @k "a","b"', b'@k  "a"',
], ids=repr)
def test_a_keyed_entry_is_a_valid_key_a_space_then_its_messages(line):
    refused(with_lines(ONE, line))


def test_the_longest_key_is_taken():
    key = "~" * KEY_MAX_LENGTH
    message = AppendEntries("n1", 4, 9, 3, 2, 7, (Entry(4, body("a", "b"), 2, key),), 3)
    assert decode([frame_of(message)])[0] == message


def test_errors_never_echo_what_could_be_a_message_body():
    secret = "s3cr3t-payload"
    bad = [
        [secret.encode() + b" {}"],
        [frame_of(TimeoutNow("n1", 4)) + b'\n"' + secret.encode() + b'"'],
        with_lines(ONE, b'"' + secret.encode()),
        with_lines(ONE, b'"' + secret.encode() + b'",'),
        with_lines(ONE, b"@" + secret.encode() + b'\x01 "a"'),
        with_lines(ONE, b"#" + secret.encode() + b' "a"'),
        with_header(ONE, url=secret),
        [b"VOTE " + secret.encode()],
    ]
    for parts in bad:
        assert secret[:6] not in str(refused(parts))


# -- bounds shared with the HTTP API -------------------------------------------------------------

def largest_batch_body(limit: int) -> bytes:
    """The largest POST /messages body, as a batch of two messages whose
    characters take two bytes each in UTF-8 and six as escapes on the wire:
    the body that grows most on its way to a frame."""
    head, tail = b'{"messages":["', b'","x"]}'
    pairs, odd = divmod(limit - len(head) - len(tail), 2)
    return head + ("é" * pairs).encode() + b"a" * odd + tail


def largest_entry(limit: int, term: int = MAX_TERM) -> Entry:
    """The entry a primary makes of the largest body the HTTP API takes, under the longest key."""
    request = parse_append(largest_batch_body(limit), 3, max_batch=MAX_ENTRY_MESSAGES)
    literals = [encode_entry(message) for message in request.messages]
    return Entry(term, b",".join(literals), len(literals), "~" * KEY_MAX_LENGTH)


def worst_header_append(entries: tuple[Entry, ...]) -> AppendEntries:
    """An AppendEntries of ``entries`` whose header fields are all as long as they may be."""
    return AppendEntries("n" * 64, MAX_TERM, MAX_SEQ, MAX_SEQ - len(entries), MAX_TERM, 2**32 - 1, entries,
                         MAX_SEQ, MAX_SEQ, "c" * 64, "v" * 64)


WORST_ENVELOPE = Envelope("https://" + "u" * 248, MAX_SEQ, "https://" + "p" * 248)
DEFAULT_MAX_MESSAGE_BYTES = AppendingNodeConfig().max_body_bytes


@pytest.mark.parametrize("max_message_bytes", [DEFAULT_MAX_MESSAGE_BYTES, 8 << 20])
def test_the_largest_append_and_a_full_batch_after_it_fit_the_frame_limit(max_message_bytes):
    first = largest_entry(max_message_bytes)
    assert len(largest_batch_body(max_message_bytes)) == max_message_bytes
    assert len(first.body) > 2.99 * max_message_bytes  # the growth frame_limit allows for
    # MAX_BATCH_BYTES past the first entry, each in a term of its own (a term run each)
    filler = body("é" * 10_000)
    count = MAX_BATCH_BYTES // Entry(1, filler, 1, "~" * KEY_MAX_LENGTH).size
    rest = tuple(Entry(MAX_TERM - n, filler, 1, "~" * KEY_MAX_LENGTH) for n in range(count))
    assert sum(entry.size for entry in rest) > MAX_BATCH_BYTES - 100_000
    frame = encode(worst_header_append((first, *rest)), WORST_ENVELOPE)
    assert len(frame) <= frame_limit(max_message_bytes)
    assert decode([frame])[0].entries[0] == first


def small_keyed_entries(count: int) -> list[Entry]:
    """Entries of one short message under the longest key, each of another term:
    as many lines and term runs per byte as entries can make."""
    return [Entry(n + 1, body(""), 1, "~" * KEY_MAX_LENGTH) for n in range(count)]


@pytest.mark.parametrize("log", [
    lambda limit: [largest_entry(limit, term=2)] * 3,
    lambda limit: [Entry(1, body("a"), 1)] + [largest_entry(limit, term=2)] * 3,
    lambda limit: [largest_entry(limit, term=1)] + small_keyed_entries(2 * MAX_BATCH),
    lambda limit: small_keyed_entries(2 * MAX_BATCH),
], ids=["largest", "small-then-largest", "largest-then-small", "small"])
def test_what_the_core_cuts_into_one_append_fits_the_frame_limit(log):
    entries = log(DEFAULT_MAX_MESSAGE_BYTES)
    batch = tuple(RaftLog(MemoryStorage(entries=entries)).batch(0, MAX_BATCH, MAX_BATCH_BYTES))
    frame = encode(worst_header_append(batch), WORST_ENVELOPE)
    assert len(frame) <= frame_limit(DEFAULT_MAX_MESSAGE_BYTES)
    assert decode([frame])[0].entries == batch


@pytest.mark.parametrize("chunk", [
    lambda keys: InstallSnapshot("n" * 64, MAX_TERM, MAX_SEQ, LARGEST_START, keys, MAX_SEQ, MAX_SEQ,
                                 "c" * 64),
    lambda keys: FetchReply("n" * 64, MAX_TERM, 0, (), LARGEST_START, keys, MAX_SEQ, MAX_SEQ),
], ids=["InstallSnapshot", "FetchReply"])
def test_a_chunk_of_keys_the_core_sends_fits_the_smallest_frame_limit(chunk):
    keys = tuple(KeyRecord(f"{n:~<{KEY_MAX_LENGTH}}", MAX_SEQ, MAX_SEQ, MAX_ENTRY_MESSAGES, 2**32 - 1)
                 for n in range(KEYS_PER_CHUNK))
    message = chunk(keys)
    frame = encode(message, WORST_ENVELOPE)
    assert len(frame) <= frame_limit(1)  # MAX_MESSAGE_BYTES is at least 1
    assert decode([frame])[0] == message


def test_an_entry_holds_up_to_max_entry_messages_and_no_more():
    largest = Entry(1, body(*[""] * MAX_ENTRY_MESSAGES), MAX_ENTRY_MESSAGES)
    message = AppendEntries("n1", 1, 1, 0, 0, 0, (largest,), 0)
    assert decode([frame_of(message)])[0] == message
    too_many = Entry(1, largest.body + b',""', MAX_ENTRY_MESSAGES + 1)
    refused([frame_of(AppendEntries("n1", 1, 1, 0, 0, 0, (too_many,), 0))], "2 to 1000000 messages")
    # the right count for one literal too many is refused all the same
    refused(with_lines(ONE, b"#%d " % MAX_ENTRY_MESSAGES + largest.body + b',""'), "as many")


def test_every_batch_the_http_api_may_take_fits_in_one_entry():
    largest = AppendingNodeConfig.from_env({"MAX_BATCH_MESSAGES": str(MAX_ENTRY_MESSAGES)})
    assert largest.max_batch_messages == MAX_ENTRY_MESSAGES
    with pytest.raises(ConfigError, match="MAX_BATCH_MESSAGES"):
        AppendingNodeConfig.from_env({"MAX_BATCH_MESSAGES": str(MAX_ENTRY_MESSAGES + 1)})


# -- hypothesis ---------------------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=None)

names = st.text(min_size=1, max_size=64)
short_texts = st.text(max_size=64)
urls = st.builds(str.__add__, st.sampled_from(["http://", "https://"]), st.text(max_size=40))
counts = st.integers(0, MAX_SEQ) | st.sampled_from([0, 1, MAX_SEQ])
start_terms = st.integers(0, MAX_TERM) | st.just(MAX_TERM)
entry_terms = st.integers(1, MAX_TERM)
digests = st.integers(0, 2**32 - 1)
clusters = st.none() | names
keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=KEY_MAX_LENGTH)
message_texts = st.text(max_size=8) | st.sampled_from(["\ud800", "\udfff", "\n", '"', "\\", "\x00", "😀"])


@st.composite
def entries(draw) -> Entry:
    term = draw(entry_terms)
    messages = draw(st.lists(message_texts, max_size=4))
    if not messages:
        return Entry(term)
    return Entry(term, body(*messages), len(messages), draw(st.none() | keys))


entry_tuples = st.lists(entries(), max_size=6).map(tuple)
log_starts = st.builds(LogStart, counts, start_terms, digests, counts, counts)
key_records = st.builds(KeyRecord, keys, counts, counts, st.integers(1, MAX_ENTRY_MESSAGES), digests)
key_tuples = st.lists(key_records, max_size=4).map(tuple)
lives = short_texts
message_terms = st.integers(0, MAX_TERM + 1)

messages = st.one_of(
    st.builds(PreVoteRequest, names, message_terms, start_terms, counts),
    st.builds(VoteRequest, names, message_terms, start_terms, counts, st.booleans()),
    st.builds(VoteReply, names, message_terms, st.booleans(), st.booleans()),
    st.builds(AppendEntries, names, message_terms, counts, st.integers(0, MAX_SEQ - 6), start_terms, digests,
              entry_tuples, counts, counts, clusters, st.none() | short_texts),
    st.builds(AppendReply, names, message_terms, counts, st.booleans(), counts, counts,
              st.none() | st.text(max_size=1000), st.booleans(), lives),
    st.builds(Heartbeat, names, message_terms, counts, counts, counts, clusters, st.none() | short_texts),
    st.builds(HeartbeatReply, names, message_terms, counts, counts, st.booleans(), lives),
    st.builds(InstallSnapshot, names, message_terms, counts, log_starts, key_tuples, counts, counts,
              clusters),
    st.builds(SnapshotReply, names, message_terms, counts, counts, counts, st.booleans(), lives),
    st.builds(TimeoutNow, names, message_terms),
    st.builds(ReadIndexRequest, names, message_terms, counts),
    st.builds(ReadIndexReply, names, message_terms, counts, st.none() | counts),
    st.builds(StateRequest, names, message_terms),
    st.builds(StateReply, names, message_terms, start_terms, counts, log_starts, clusters),
    st.builds(FetchRequest, names, message_terms, counts, counts),
    st.builds(FetchReply, names, message_terms, counts, entry_tuples, st.none() | log_starts, key_tuples,
              counts, counts, st.none() | start_terms, digests),
)
envelopes = st.builds(Envelope, urls, st.integers(1, MAX_SEQ), urls)

json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=10) | st.integers(-(2**60), 2**60)
    | st.sampled_from([-1, 0, 1, 2**32 - 1, 2**32, MAX_TERM, MAX_TERM + 1, MAX_TERM + 2, MAX_SEQ,
                       MAX_SEQ + 1, "http://x", "https://", "~", "k y", [1, 2], [0, 0, 0, 0, 0], [[1, 1]],
                       [["k", 1, 1, 1, 1]]]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


def canonical(frame: bytes) -> tuple[bytes, str, bytes]:
    """What of a frame ``decode`` must be exact about: its kind, its header's
    values with their JSON types (not its spacing), and its entry lines byte for byte."""
    kind, header, rest = split(frame)
    return kind, json.dumps(header, sort_keys=True), rest


def assert_taken_only_as_encode_writes_it(frame: bytes) -> None:
    """Refused with ProtocolError (and nothing else), or taken as exactly what
    ``encode`` writes for what it decodes to."""
    try:
        message, envelope = decode([frame])
    except ProtocolError:
        return
    assert canonical(encode(message, envelope)) == canonical(frame)


@FAST
@given(st.lists(entries(), min_size=1, max_size=12), st.integers(0, 400))
def test_a_batch_is_cut_where_its_entries_sizes_add_up_past_the_bytes_asked_for(batch, max_bytes):
    kept = cut_to_size(batch, max_bytes)
    within = [n for n in range(1, len(batch) + 1) if sum(e.size for e in batch[:n]) <= max_bytes]
    assert kept == batch[:max(within, default=1)]


@FAST
@given(st.lists(st.lists(st.sampled_from([b"a", b"~", b" ", b'"', b"\\", b",", b"\x01", b"\xc3\xa9", b"u"]),
                         max_size=6).map(b"".join), min_size=1, max_size=4))
def test_the_scans_take_a_body_only_if_it_is_one_literal_as_encode_entry_writes_it(bodies):
    if _each_a_plain_literal(b",".join(bodies), bodies):
        for line in bodies:
            assert encode_entry(json.loads(line)) == line


def test_plain_messages_are_settled_by_the_scans_and_escaped_ones_are_not():
    plain = [encode_entry(text) for text in ("a", "", "it's ~ {x: [1]} @home #1", " ")]
    assert _each_a_plain_literal(b",".join(plain), plain)
    for text in ("a\nb", 'say "hi"', "back\\slash", "café", "\x7f", "\x00"):
        line = encode_entry(text)
        assert not _each_a_plain_literal(line, [line])
        assert decode(with_lines(ONE, line))[0].entries[0].body == line  # taken the other way


@FAST
@given(messages, envelopes)
def test_any_message_round_trips(message, envelope):
    assert decode([encode(message, envelope)]) == (message, envelope)


@FAST
@given(st.lists(st.binary(max_size=200), max_size=3)
       | st.binary(max_size=300).map(lambda frame: [frame])
       | st.tuples(st.sampled_from([b"REPLICATE ", b"FETCHED ", b"SNAPSHOT ", b"VOTE "]),
                   st.binary(max_size=300)).map(lambda parts: [b"".join(parts)]))
def test_arbitrary_bytes_raise_nothing_but_protocol_error(parts):
    try:
        decode(parts)
    except ProtocolError:
        pass


@FAST
@given(messages, envelopes, st.data())
def test_a_frame_with_one_byte_changed_is_refused_or_read_as_encode_writes_it(message, envelope, data):
    frame = bytearray(encode(message, envelope))
    position = data.draw(st.integers(0, len(frame) - 1))
    frame[position] = data.draw(st.integers(0, 255).filter(lambda byte: byte != frame[position]))
    assert_taken_only_as_encode_writes_it(bytes(frame))


@FAST
@given(messages, envelopes, st.data())
def test_a_frame_with_a_field_replaced_is_refused_or_read_as_encode_writes_it(message, envelope, data):
    kind, header, rest = split(encode(message, envelope))
    field = data.draw(st.sampled_from(sorted(header)))
    header[field] = data.draw(json_values)
    assert_taken_only_as_encode_writes_it(rebuilt(kind, header, rest)[0])
