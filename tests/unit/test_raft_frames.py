"""shared.wire.raft_frames: every Raft message survives the wire, and nothing else is read."""

from __future__ import annotations

import json

import pytest

from shared.consensus.raft_messages import (
    AppendEntries, AppendReply, Entry, PreVoteRequest, VoteReply, VoteRequest,
)
from shared.wire.protocol import ProtocolError, encode_entry
from shared.wire.raft_frames import Envelope, Payload, decode, decode_payload, encode, encode_payload

ENVELOPE = Envelope("http://n1:8000", 1 << 20, "http://localhost:8001")
KEYED = encode_payload(encode_entry("first of two"), key="order-17", count=2)
MESSAGES = [
    PreVoteRequest("n1", 4, 3, 10),
    VoteRequest("n1", 4, 3, 10),
    VoteReply("n2", 4, True, False),
    VoteReply("n2", 5, False, True),
    AppendEntries("n1", 4, 9, 3, (), 9, 0xFFFFFFFF),
    AppendEntries("n1", 4, 9, 3, (Entry(3, encode_entry("a\nb")), Entry(4, None),
                                  Entry(4, KEYED), Entry(4, encode_entry("é"))), 9),
    AppendEntries("n1", 1, 0, 0, (Entry(1, None),), 0),
    AppendReply("n3", 4, True, match_length=12),
    AppendReply("n3", 4, False, retry_length=7),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_decodes_to_itself_with_its_envelope(message):
    assert decode([encode(message, ENVELOPE)]) == (message, ENVELOPE)


def test_a_keyed_payload_carries_its_key_and_count_and_a_plain_one_none():
    assert decode_payload(KEYED) == Payload(encode_entry("first of two"), "order-17", 2)
    assert decode_payload(encode_entry("x")) == Payload(encode_entry("x"))


def header_of(message) -> tuple[bytes, dict, bytes]:
    frame = encode(message, ENVELOPE)
    head, newline, rest = frame.partition(b"\n")
    kind, _, header = head.partition(b" ")
    return kind, json.loads(header), newline + rest


def rebuilt(kind: bytes, header: dict, rest: bytes = b"") -> list[bytes]:
    return [kind + b" " + json.dumps(header).encode() + rest]


@pytest.mark.parametrize("change, why", [
    (lambda h: h.pop("term"), "exactly"),
    (lambda h: h.update(extra=1), "exactly"),
    (lambda h: h.update(term=-1), "term"),
    (lambda h: h.update(term=True), "term"),
    (lambda h: h.update(term=2**60), "term"),
    (lambda h: h.update({"from": ""}), "from"),
    (lambda h: h.update(url="ftp://x"), "url"),
    (lambda h: h.update(public=7), "public"),
    (lambda h: h.update(limit=0), "limit"),
    (lambda h: h.update(terms=[[4, 3]]), "counts"),
    (lambda h: h.update(terms=[[0, 4]]), "runs"),
    (lambda h: h.update(terms="4"), "runs"),
    (lambda h: h.update(prev_digest=1 << 32), "CRC"),
])
def test_a_header_that_encode_would_not_write_is_refused(change, why):
    kind, header, rest = header_of(AppendEntries("n1", 4, 9, 3, (Entry(4, None),) * 4, 9))
    change(header)
    with pytest.raises(ProtocolError, match=why):
        decode(rebuilt(kind, header, rest))


@pytest.mark.parametrize("line", [
    b'"unterminated', b"not json", b'"a","b"', b"@key", b"@key 0 \"x\"", b"@key 01 \"x\"",
    b"@ke\x01y 1 \"x\"", b"@key 1 x", '"é"'.encode(),
])
def test_an_entry_that_is_not_a_literal_or_a_keyed_literal_is_refused(line):
    kind, header, _ = header_of(AppendEntries("n1", 4, 0, 0, (Entry(4, b'"x"'),), 0))
    with pytest.raises(ProtocolError):
        decode(rebuilt(kind, header, b"\n" + line))


@pytest.mark.parametrize("parts", [
    [], [b"VOTE {}", b"more"], [b"NOPE {}"], [b"VOTE not-json"], [b"VOTE []"],
    [b"VOTED " + json.dumps({"from": "a", "term": 1, "url": "http://a", "public": "http://a", "limit": 1,
                              "granted": 1, "pre_vote": False}).encode()],
    [encode(VoteRequest("n1", 1, 0, 0), ENVELOPE) + b"\n\"x\""],
    [b"VOTE " + b"[" * 100_000],
])
def test_other_frames_are_refused(parts):
    with pytest.raises(ProtocolError):
        decode(parts)
