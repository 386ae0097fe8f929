"""Dropped frames: logged once per peer per interval, with a count; and
whatever arrives, a node counts each frame it cannot read, drops it, and
goes on replicating."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.consensus.raft_log import Entry, KeyRecord, LogStart
from shared.consensus.raft_messages import AppendEntries, FetchReply, Heartbeat, InstallSnapshot
from shared.wire.bad_frames import MAX_LINES, BadFrameLog
from shared.wire.frames import ProtocolError, decode, encode, encode_entry
from tests.support.documents import messages_of
from tests.support.raw_peer import ENVELOPE
from tests.support.waiting import wait_until


def test_one_line_per_peer_per_interval_then_a_count(caplog):
    clock = SimpleNamespace(now=100.0)
    frames = BadFrameLog(logging.getLogger("test.frames"), interval_s=5.0, clock=lambda: clock.now)
    with caplog.at_level(logging.WARNING, logger="test.frames"):
        for _ in range(1000):
            frames.dropped("peer a", "junk %d", 1)
        frames.dropped("peer b", "junk %d", 2)
        clock.now += 5.0
        frames.dropped("peer a", "junk %d", 3)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dropped a bad frame from peer a: junk 1",
        "dropped a bad frame from peer b: junk 2",
        "dropped a bad frame from peer a: junk 3 (999 more dropped from peer a since the last line)",
    ]



def test_a_sender_that_claims_a_new_name_each_frame_cannot_drive_the_lines_up(caplog):
    """The name is the frame's claim: 10,000 frames, each under a name of its
    own, write MAX_LINES lines per interval, and the next line counts the rest."""
    clock = SimpleNamespace(now=100.0)
    frames = BadFrameLog(logging.getLogger("test.frames"), interval_s=5.0, clock=lambda: clock.now)
    with caplog.at_level(logging.WARNING, logger="test.frames"):
        for n in range(10_000):
            frames.dropped(f"forger {n}", "junk")
        assert len(caplog.records) == MAX_LINES
        clock.now += 5.0
        frames.dropped("peer b", "junk")
    assert len(caplog.records) == MAX_LINES + 1
    assert caplog.records[-1].getMessage() == (
        f"dropped a bad frame from peer b: junk ({10_000 - MAX_LINES} more dropped meanwhile "
        "without a line: too many senders)")
    assert frames.count == 10_001

#: Frames a primary could send, to be damaged: entries, keys, a start.
VALID_FRAMES = [encode(message, ENVELOPE) for message in (
    AppendEntries("primary", 1, 1, 0, 0, 0, (Entry(1), Entry(1, encode_entry("é\n"), 1, "k"),
                                            Entry(1, encode_entry("a") + b"," + encode_entry("b"), 2)), 0),
    Heartbeat("primary", 1, 2, 0),
    InstallSnapshot("primary", 1, 3, LogStart(4, 1, 7, 4, 40), (KeyRecord("k", 3, 3, 1, 9),), 0, 1),
    FetchReply("primary", 1, 0, (Entry(1, encode_entry("x"), 1),)),
)]


@st.composite
def damaged_frames(draw) -> bytes:
    frame = bytearray(draw(st.sampled_from(VALID_FRAMES)))
    position = draw(st.integers(0, len(frame) - 1))
    frame[position] = draw(st.integers(0, 255))
    return bytes(frame)


unreadable = (
    st.lists(st.binary(max_size=60), min_size=1, max_size=3)
    | damaged_frames().map(lambda frame: [frame])
).filter(lambda parts: not decodes(parts))


def decodes(parts: list[bytes]) -> bool:
    try:
        decode(parts)
    except ProtocolError:
        return False
    return True


def test_a_secondary_counts_and_drops_every_unreadable_frame_and_goes_on_replicating(ctx, cluster):
    assert cluster.post({"message": "before", "w": 3}).status_int == 201
    s1 = cluster.secondaries["s1"]
    peer = ctx.socket(zmq.DEALER)
    peer.connect(s1.node.endpoint)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(unreadable)
    def each_is_counted_once(parts):
        before = s1.node.state.bad_frames
        peer.send_multipart(parts)
        wait_until(lambda: s1.node.state.bad_frames > before, 5, 0.002, what="the frame to be dropped")
        assert s1.node.state.bad_frames == before + 1

    try:
        each_is_counted_once()
    finally:
        peer.close()
    assert cluster.post({"message": "after", "w": 3}).status_int == 201
    assert messages_of(s1.log) == ["before", "after"]
