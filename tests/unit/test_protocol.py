"""The wire protocol: round trips, and every way a frame can be malformed."""

from __future__ import annotations

import json

import pytest

from shared.consensus.history import Run, Segment
from shared.wire import protocol
from shared.wire.protocol import ProtocolError

STATUS = protocol.Status("s1", "inc123", 7, "h1", Run(2, "ab"))
LEADER = protocol.Leader("h1", (Segment(1, "r1", 0), Segment(2, "ab", 5)))


def test_append_round_trip_keeps_entries_byte_for_byte():
    entries = [protocol.encode_entry(m) for m in ["a", "é", "😀", "\x00", "\ud800", 'q"\n']]
    frame = protocol.encode_append("c0ffee", LEADER, 5, entries)
    decoded = protocol.decode([frame])
    assert decoded == protocol.Append("c0ffee", LEADER, 5, entries)
    assert decoded.leader.run == Run(2, "ab")
    assert [json.loads(e) for e in decoded.entries] == ["a", "é", "😀", "\x00", "\ud800", 'q"\n']
    assert all(e.isascii() for e in entries)


def test_ack_ping_pong_round_trip():
    ack = protocol.decode([protocol.encode_ack("abc", STATUS, [(0, 3), (5, 6)])])
    assert ack == protocol.Ack("abc", STATUS, [(0, 3), (5, 6)])
    assert protocol.decode([protocol.encode_ping("p1", LEADER)]) == protocol.Ping("p1", LEADER)
    pong = protocol.encode_pong("p1", STATUS, LEADER.segments)
    assert protocol.decode([pong]) == protocol.Pong("p1", STATUS, LEADER.segments)
    blank = protocol.Status("s2", "i", 0)  # holds no history yet
    assert protocol.decode([protocol.encode_pong("p2", blank, ())]) == protocol.Pong("p2", blank)


def test_a_primary_with_nothing_appended_pings_with_no_history():
    nobody = protocol.Leader(None, ())
    ping = protocol.decode([protocol.encode_ping("p1", nobody)])
    assert ping.leader.history is None and ping.leader.run is None


def test_fetch_and_entries_round_trip_including_an_empty_answer():
    assert protocol.decode([protocol.encode_fetch("f1", 42)]) == protocol.Fetch("f1", 42)
    entries = [protocol.encode_entry(m) for m in ("a", "b")]
    assert protocol.decode([protocol.encode_entries("f1", 42, entries)]) == protocol.Entries("f1", 42, entries)
    assert protocol.decode([protocol.encode_entries("f1", 42, [])]) == protocol.Entries("f1", 42, [])


def test_to_ranges_collapses_runs():
    assert protocol.to_ranges([7, 1, 2, 3, 2]) == [(1, 4), (7, 8)]
    assert protocol.to_ranges([]) == []


def test_every_message_is_one_frame_and_a_batch_splits_back_into_its_entries():
    entries = [protocol.encode_entry(m) for m in ["one\ntwo", "x", ""]]
    frame = protocol.encode_append("c1", LEADER, 7, entries)
    assert isinstance(frame, bytes)
    assert protocol.decode([frame]).entries == entries
    for other in (protocol.encode_ping("p", LEADER), protocol.encode_ack("a", STATUS, [(0, 1)]),
                  protocol.encode_pong("p", STATUS, ()), protocol.encode_fetch("f", 3),
                  protocol.encode_entries("f", 3, entries)):
        assert isinstance(other, bytes)


def test_corr_ids_are_unique_and_valid_on_the_wire():
    ids = {protocol.new_corr_id() for _ in range(1000)}
    assert len(ids) == 1000
    frame = protocol.encode_ping(ids.pop(), LEADER)
    assert protocol.decode([frame])


def _ack_body(**overrides):
    body = {"node": "s1", "incarnation": "i", "length": 1, "acked": [[0, 1]]}
    body.update(overrides)
    return json.dumps(body).encode()


def _ack(**overrides):
    return [b"ACK c1 " + _ack_body(**overrides)]


def _append(first: bytes | int, entries: bytes, leader: bytes = LEADER.wire):
    return [b"APPEND c1 %s %s\n%s" % (str(first).encode() if isinstance(first, int) else first,
                                       leader, entries)]


@pytest.mark.parametrize(
    "parts, reason",
    [
        ([], "one frame, got 0"),
        ([b"ACK c1 " + _ack_body(), b"extra"], "one frame, got 2"),
        ([b"NOPE c1 {}"], "unknown message kind"),
        ([b"ACK"], "corr_id"),
        ([b"ACK  " + _ack_body()], "corr_id"),
        ([b"ACK " + b"x" * 65 + b" " + _ack_body()], "corr_id"),
        ([b"ACK c-1 " + _ack_body()], "corr_id"),
        ([b"ACK c1 not json"], "not JSON"),
        ([b"ACK c1 \xff\xfe"], "not JSON"),
        ([b"ACK c1 [1, 2]"], "not a JSON object"),
        ([b"ACK c1 " + _ack_body() + b'\n"x"'], "carries no entries"),
        (_ack(length=-1), "'length'"),
        (_ack(length=2**60), "'length'"),
        (_ack(length=True), "'length'"),
        (_ack(length=1.0), "'length'"),
        (_ack(node=""), "'node'"),
        (_ack(acked="0-1"), "'acked'"),
        (_ack(acked=[[3, 3]]), "'acked'"),
        (_ack(acked=[[0, 1, 2]]), "'acked'"),
        (_ack(acked=[[-1, 2]]), "'acked'"),
        (_ack(run=[1]), "'run'"),
        (_ack(run=["1", "t"]), "'run'"),
        (_append(b"x", b'"x"'), "'first'"),
        (_append(b"-5", b'"x"'), "'first'"),
        (_append(b"+5", b'"x"'), "'first'"),
        (_append(b"", b'"x"'), "'first'"),
        (_append(b"1" * 17, b'"x"'), "'first'"),
        (_append(2**53 + 1, b'"x"'), "'first'"),
        (_append(0, b'"x"', leader=b'{"history": null}'), "segments must be a list"),
        (_append(0, b'"x"', leader=b""), "not JSON"),
        ([b"APPEND c1 0 " + LEADER.wire], "needs its entries after a newline"),
        (_append(0, b"x"), "entry is not JSON"),
        (_append(0, b'"a"\n"b"\n'), "entry is not JSON"),
        (_append(0, b""), "not a JSON string"),
        (_append(0, b'"a","b"\n'), "entry is not JSON"),
        (_append(0, b'"a","b"'), "not a JSON string"),
        (_append(0, b'"a"]\n["b"'), "entry is not JSON"),
        (_append(0, b'"a"\n["b"]'), "not a JSON string"),
        (_append(0, b"42"), "not a JSON string"),
        (_append(0, b"\xff"), "entry is not JSON"),
        (_append(2**53, b'"x"'), "past"),
        (_append(0, b'"x"\n' * 70_000 + b'"x"'), "more than 65536 entries"),
        ([b'PING c1 {"history": "h", "segments": []}'], "needs segments"),
        ([b'PING c1 {"history": null, "segments": [[1, "r", 0]]}'], "needs segments"),
        ([b'PING c1 {"history": "h", "segments": [[1, "r", 3]]}'], "start at id 0"),
        ([b'PING c1 {"history": "h", "segments": [[2, "r", 0], [1, "s", 4]]}'], "ascending"),
        ([b'PING c1 {"history": "h", "segments": [[1, "r"]]}'], "a segment must be"),
        ([b'PING c1 {"history": "h", "segments": "x"}'], "segments must be a list"),
        ([b'PING c1 {"history": 5, "segments": [[1, "r", 0]]}'], "'history'"),
        ([b"PING c1 " + b"[" * 100_000 + b"]" * 100_000], "not JSON"),
        ([b"FETCH c1 -1"], "'from'"),
        ([b"FETCH c1 {\"from\": 1}"], "'from'"),
        ([b'ENTRIES c1 0\nx'], "entry is not JSON"),
        ([b'ENTRIES c1 0 more\n"x"'], "'first'"),
        ([b'ENTRIES c1 0 \n"x"'], "'first'"),
        # Three values from three entries, none of which is a JSON string:
        ([b'ENTRIES c1 0\n"abc\ndef"\n"x","y"'], "as the primary encodes one"),
        (_append(0, b'"a\nb","c"'), "as the primary encodes one"),
        (_append(0, b'"\\u0061"'), "as the primary encodes one"),  # "a", written otherwise
        ([b'ENTRIES c1 0'], "needs its entries after a newline"),
        ([b"PONG c1 " + json.dumps({"node": "s", "incarnation": "i", "length": 0,
                                    "segments": [[1, "t", 0]] * 2}).encode()], "ascending"),
    ],
)
def test_malformed_frames_raise_protocol_error(parts, reason):
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode(parts)


def test_errors_never_echo_what_could_be_a_message_body():
    with pytest.raises(ProtocolError) as error:
        protocol.decode([b"my-private-note c1 {}"])
    assert "private" not in str(error.value) and "15 bytes" in str(error.value)
    with pytest.raises(ProtocolError, match="unknown message kind SYNC"):
        protocol.decode([b"SYNC c1 {}"])


def test_the_frame_limit_rides_on_statuses_and_fetches_and_is_decoded_strictly():
    limited = protocol.Status("s1", "inc123", 7, "h1", Run(2, "ab"), frame_limit=9000)
    ack = protocol.decode([protocol.encode_ack("abc", limited, [(0, 1)])])
    assert ack.status.frame_limit == 9000
    pong = protocol.decode([protocol.encode_pong("p1", limited, LEADER.segments)])
    assert pong.status.frame_limit == 9000
    assert protocol.decode([protocol.encode_ack("abc", STATUS, [])]).status.frame_limit is None
    assert protocol.decode([protocol.encode_fetch("f1", 42, 9000)]) == protocol.Fetch("f1", 42, 9000)
    body = {"node": "s", "incarnation": "i", "length": 0, "acked": []}
    for bad in (0, -1, "9000", 9.5, True, None, 2**60):
        with pytest.raises(ProtocolError, match="'frame_limit'"):
            protocol.decode([b"ACK c1 " + json.dumps({**body, "frame_limit": bad}).encode()])
    for bad in (b"0", b"-1", b"x", b"1 2"):
        with pytest.raises(ProtocolError, match="'frame_limit'"):
            protocol.decode([b"FETCH c1 3 " + bad])


def test_the_overheads_and_fitting_measure_frames_exactly():
    entries = [protocol.encode_entry(m) for m in ("a", "bb", "ccc")]
    for first in (0, 7, 123456):
        overhead = protocol.append_overhead("c0ffee", LEADER, first)
        assert len(protocol.encode_append("c0ffee", LEADER, first, entries)) == overhead + sum(
            len(e) + 1 for e in entries)
        overhead = protocol.entries_overhead("f1", first)
        assert len(protocol.encode_entries("f1", first, entries)) == overhead + sum(len(e) + 1 for e in entries)
    sizes = [len(e) + 1 for e in entries]  # 4, 5, 6
    assert protocol.fitting(entries, sum(sizes)) == entries
    assert protocol.fitting(entries, sum(sizes) - 1) == entries[:2]
    assert protocol.fitting(entries, 3) == []
