"""The wire protocol: round trips, and every way a frame can be malformed."""

from __future__ import annotations

import json

import pytest

from shared import protocol
from shared.history import Run, Segment
from shared.protocol import ProtocolError

STATUS = protocol.Status("s1", "inc123", 7, "h1", Run(2, "ab"))
LEADER = protocol.Leader("h1", (Segment(1, "r1", 0), Segment(2, "ab", 5)))
HEADER = {"history": "h1", "segments": [[1, "r1", 0]]}


def test_append_round_trip_keeps_entries_byte_for_byte():
    entries = [protocol.encode_entry(m) for m in ["a", "é", "😀", "\x00", "\ud800", 'q"\n']]
    frames = protocol.encode_append("c0ffee", LEADER, 5, entries)
    decoded = protocol.decode(frames)
    assert decoded == protocol.Append("c0ffee", LEADER, 5, entries)
    assert decoded.leader.run == Run(2, "ab")
    assert [json.loads(e) for e in decoded.entries] == ["a", "é", "😀", "\x00", "\ud800", 'q"\n']
    assert all(e.isascii() for e in entries)


def test_ack_ping_pong_round_trip():
    ack = protocol.decode(protocol.encode_ack("abc", STATUS, [(0, 3), (5, 6)]))
    assert ack == protocol.Ack("abc", STATUS, [(0, 3), (5, 6)])
    assert protocol.decode(protocol.encode_ping("p1", LEADER)) == protocol.Ping("p1", LEADER)
    pong = protocol.encode_pong("p1", STATUS, LEADER.segments)
    assert protocol.decode(pong) == protocol.Pong("p1", STATUS, LEADER.segments)
    blank = protocol.Status("s2", "i", 0)  # holds no history yet
    assert protocol.decode(protocol.encode_pong("p2", blank, ())) == protocol.Pong("p2", blank)


def test_a_primary_with_nothing_appended_pings_with_no_history():
    nobody = protocol.Leader(None, ())
    ping = protocol.decode(protocol.encode_ping("p1", nobody))
    assert ping.leader.history is None and ping.leader.run is None


def test_fetch_and_entries_round_trip_including_an_empty_answer():
    assert protocol.decode(protocol.encode_fetch("f1", 42)) == protocol.Fetch("f1", 42)
    entries = [protocol.encode_entry(m) for m in ("a", "b")]
    assert protocol.decode(protocol.encode_entries("f1", 42, entries)) == protocol.Entries("f1", 42, entries)
    assert protocol.decode(protocol.encode_entries("f1", 42, [])) == protocol.Entries("f1", 42, [])


def test_to_ranges_collapses_runs():
    assert protocol.to_ranges([7, 1, 2, 3, 2]) == [(1, 4), (7, 8)]
    assert protocol.to_ranges([]) == []


def test_a_batch_is_one_frame_and_splits_back_into_its_entries():
    entries = [protocol.encode_entry(m) for m in ["one\ntwo", "x", ""]]
    frames = protocol.encode_append("c1", LEADER, 7, entries)
    assert len(frames) == 4
    assert protocol.decode(frames).entries == entries


def test_corr_ids_are_unique_and_valid_on_the_wire():
    ids = {protocol.new_corr_id() for _ in range(1000)}
    assert len(ids) == 1000
    frames = protocol.encode_ping(ids.pop(), LEADER)
    assert protocol.decode(frames)


def _ack_body(**overrides):
    body = {"node": "s1", "incarnation": "i", "length": 1, "acked": [[0, 1]]}
    body.update(overrides)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "frames, reason",
    [
        ([], "at least 3 frames"),
        ([b"ACK", b"c1"], "at least 3 frames"),
        ([b"NOPE", b"c1", b"{}"], "unknown message kind"),
        ([b"ACK", b"", _ack_body()], "corr_id"),
        ([b"ACK", b"x" * 65, _ack_body()], "corr_id"),
        ([b"ACK", b"c-1", _ack_body()], "corr_id"),
        ([b"ACK", b"c1", b"not json"], "not JSON"),
        ([b"ACK", b"c1", b"\xff\xfe"], "not JSON"),
        ([b"ACK", b"c1", b"[1, 2]"], "not a JSON object"),
        ([b"ACK", b"c1", _ack_body(), b"extra"], "needs 3 frames"),
        ([b"ACK", b"c1", _ack_body(length=-1)], "'length'"),
        ([b"ACK", b"c1", _ack_body(length=2**60)], "'length'"),
        ([b"ACK", b"c1", _ack_body(length=True)], "'length'"),
        ([b"ACK", b"c1", _ack_body(length=1.0)], "'length'"),
        ([b"ACK", b"c1", _ack_body(node="")], "'node'"),
        ([b"ACK", b"c1", _ack_body(acked="0-1")], "'acked'"),
        ([b"ACK", b"c1", _ack_body(acked=[[3, 3]])], "'acked'"),
        ([b"ACK", b"c1", _ack_body(acked=[[0, 1, 2]])], "'acked'"),
        ([b"ACK", b"c1", _ack_body(acked=[[-1, 2]])], "'acked'"),
        ([b"APPEND", b"c1", json.dumps(HEADER).encode(), b'"x"'], "'first'"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": -5}).encode(), b'"x"'], "'first'"),
        ([b"APPEND", b"c1", b'{"first": 0}', b'"x"'], "segments must be a list"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode(), b"x"], "entry is not JSON"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode(), b'"a"', b'"b"'], "needs 4 frames"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode()], "needs 4 frames"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode(), b""], "not a JSON string"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode(), b'"a","b"\n'], "entry is not JSON"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode(), b'"a","b"'], "not a JSON string"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode(), b'"a"]\n["b"'], "entry is not JSON"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode(), b'"a"\n["b"]'], "not a JSON string"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode(), b"42"], "not a JSON string"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode(), b"\xff"], "entry is not JSON"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 2**53}).encode(), b'"x"'], "past"),
        ([b"PING", b"c1", b'{"history": "h", "segments": []}'], "needs segments"),
        ([b"PING", b"c1", b'{"history": null, "segments": [[1, "r", 0]]}'], "needs segments"),
        ([b"PING", b"c1", b'{"history": "h", "segments": [[1, "r", 3]]}'], "start at id 0"),
        ([b"PING", b"c1", b'{"history": "h", "segments": [[2, "r", 0], [1, "s", 4]]}'], "ascending"),
        ([b"PING", b"c1", b'{"history": "h", "segments": [[1, "r"]]}'], "a segment must be"),
        ([b"PING", b"c1", b'{"history": "h", "segments": "x"}'], "segments must be a list"),
        ([b"PING", b"c1", b'{"history": 5, "segments": [[1, "r", 0]]}'], "'history'"),
        ([b"FETCH", b"c1", b'{"from": -1}'], "'from'"),
        ([b"ENTRIES", b"c1", b'{"first": 0}', b"x"], "entry is not JSON"),
        ([b"ACK", b"c1", _ack_body(run=[1])], "'run'"),
        ([b"ACK", b"c1", _ack_body(run=["1", "t"])], "'run'"),
        ([b"PING", b"c1", b"[" * 100_000 + b"]" * 100_000], "not JSON"),
        ([b"APPEND", b"c1", json.dumps({**HEADER, "first": 0}).encode(), b'"x"\n' * 70_000 + b'"x"'],
         "more than 65536 entries"),
        ([b"PONG", b"c1", json.dumps({"node": "s", "incarnation": "i", "length": 0,
                                      "segments": [[1, "t", 0]] * 2}).encode()], "ascending"),
    ],
)
def test_malformed_frames_raise_protocol_error(frames, reason):
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode(frames)


def test_errors_never_echo_what_could_be_a_message_body():
    with pytest.raises(ProtocolError) as error:
        protocol.decode([b"my private note", b"c1", b"{}"])
    assert "private" not in str(error.value) and "15 bytes" in str(error.value)
    with pytest.raises(ProtocolError, match="unknown message kind SYNC"):
        protocol.decode([b"SYNC", b"c1", b"{}"])
