"""The secondary's receiver against a raw DEALER standing in for the primary."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import zmq
from prometheus_client import generate_latest

from secondary.metrics import secondary_registry
from secondary.receiver import Receiver
from shared.consensus.history import Run, Segment
from shared.log.ordered_log import OrderedLog
from shared.runtime.config import DelayRange
from shared.wire import protocol
from tests.support.documents import messages_of
from tests.support.metrics import Scrape
from tests.support.waiting import wait_until

LEADER = protocol.Leader("history-1", (Segment(1, "r1", 0),))


class RawPrimary:
    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.connect(endpoint)

    def append(self, first: int, *messages: str, corr_id: str | None = None, leader=LEADER) -> str:
        corr_id = corr_id or protocol.new_corr_id()
        entries = [protocol.encode_entry(m) for m in messages]
        self.dealer.send(protocol.encode_append(corr_id, leader, first, entries))
        return corr_id

    def ping(self, leader=LEADER) -> str:
        corr_id = protocol.new_corr_id()
        self.dealer.send(protocol.encode_ping(corr_id, leader))
        return corr_id

    def fetch(self, start: int) -> str:
        corr_id = protocol.new_corr_id()
        self.dealer.send(protocol.encode_fetch(corr_id, start))
        return corr_id

    def reply(self, timeout: float = 5.0):
        assert self.dealer.poll(int(timeout * 1000)), "no reply"
        return protocol.decode(self.dealer.recv_multipart())

    def no_reply_within(self, seconds: float) -> bool:
        return not self.dealer.poll(int(seconds * 1000))

    def close(self) -> None:
        self.dealer.close(linger=0)


@pytest.fixture
def make_receiver(ctx):
    started = []

    def make(delay=DelayRange(), drop_ack_fraction=0.0):
        store = OrderedLog()
        receiver = Receiver(ctx, f"inproc://s-{uuid.uuid4().hex}", store, "s1", delay, drop_ack_fraction)
        receiver.start()
        primary = RawPrimary(ctx, receiver.endpoint)
        started.append((receiver, primary))
        return receiver, store, primary

    yield make
    for receiver, primary in started:
        primary.close()
        receiver.stop()


messages = messages_of


def test_stores_and_acks_a_batch(make_receiver):
    receiver, store, primary = make_receiver()
    corr = primary.append(0, "a", "b", "c")
    ack = primary.reply()
    assert ack.corr_id == corr and ack.acked == [(0, 3)]
    assert ack.status == protocol.Status("s1", receiver.incarnation, 3, "history-1", Run(1, "r1"))
    assert messages(store) == ["a", "b", "c"]


def test_a_resent_entry_is_acked_again_and_stored_once(make_receiver):
    _, store, primary = make_receiver()
    primary.append(0, "a")
    primary.reply()
    corr = primary.append(0, "a")
    ack = primary.reply()
    assert ack.corr_id == corr and ack.acked == [(0, 1)] and ack.status.length == 1
    assert messages(store) == ["a"]


def test_entries_past_a_gap_are_acked_but_hidden(make_receiver):
    _, store, primary = make_receiver()
    primary.append(1, "b")
    ack = primary.reply()
    assert ack.acked == [(1, 2)] and ack.status.length == 0
    assert messages(store) == []
    primary.append(0, "a")
    assert primary.reply().status.length == 2
    assert messages(store) == ["a", "b"]


def test_delay_holds_each_message_back_on_its_own_clock(make_receiver):
    _, store, primary = make_receiver(delay=DelayRange(0.5, 0.5))
    sent = time.monotonic()
    first = primary.append(0, "a")
    second = primary.append(1, "b")  # right behind it: due at about the same time, not 0.5 s later
    pong_corr = primary.ping()
    pong = primary.reply()
    assert isinstance(pong, protocol.Pong) and pong.corr_id == pong_corr
    assert time.monotonic() - sent < 0.4, "a PING must not queue behind delayed entries"
    assert messages(store) == []  # nothing stored before its delay
    acks = [primary.reply(), primary.reply()]
    elapsed = time.monotonic() - sent
    assert {a.corr_id for a in acks} == {first, second}
    assert 0.45 <= elapsed < 0.95
    assert messages(store) == ["a", "b"]


def test_random_delays_reorder_storage_but_never_visibility(make_receiver):
    _, store, primary = make_receiver(delay=DelayRange(0.0, 0.3))
    for seq in range(30):
        primary.append(seq, f"m{seq}")
    seen = []
    acked = set()
    while len(acked) < 30:
        ack = primary.reply()
        for start, stop in ack.acked:
            acked.update(range(start, stop))
        seen.append(messages(store))
    for snapshot in seen:
        assert snapshot == [f"m{i}" for i in range(len(snapshot))]
    assert len(seen[-1]) == 30


def test_a_duplicate_of_a_waiting_entry_gets_one_ack_when_due(make_receiver):
    receiver, store, primary = make_receiver(delay=DelayRange(0.3, 0.3))
    corr = primary.append(0, "a")
    primary.append(0, "a", corr_id=corr)  # the primary resent it before the delay ran out
    assert primary.reply().corr_id == corr
    assert primary.no_reply_within(0.3)
    assert messages(store) == ["a"] and receiver.waiting_count == 0


def test_metrics_count_entries_received_duplicates_and_those_past_a_gap(make_receiver):
    receiver, store, primary = make_receiver(delay=DelayRange(0.2, 0.2))
    registry = secondary_registry(store, receiver)
    primary.append(0, "a", "b")
    primary.append(0, "a", "b")  # resent while both wait on the schedule
    primary.append(5, "f")       # past a gap
    primary.reply(), primary.reply()
    primary.append(1, "b")       # resent once stored
    primary.reply()
    metrics = Scrape(generate_latest(registry).decode())
    assert metrics("replog_received_total") == 6
    assert metrics("replog_duplicates_total") == 3
    assert metrics("replog_hidden_ahead") == 1
    assert metrics("replog_log_length") == len(messages(store)) == 2
    assert receiver.waiting_count == 0 and metrics("replog_waiting") == 0


def test_a_frame_of_another_history_changes_nothing(make_receiver):
    """The old epoch trick: a made-up identity no longer wipes a secondary."""
    receiver, store, primary = make_receiver()
    primary.append(0, "old")
    primary.reply()
    forged = protocol.Leader("made-up", (Segment(99, "x", 0),))
    primary.append(0, "INJECTED", leader=forged)
    primary.ping(leader=forged)
    pong = primary.reply()
    assert isinstance(pong, protocol.Pong), "the forged APPEND got no ACK"
    assert pong.status.history == "history-1" and pong.status.length == 1
    assert messages(store) == ["old"] and receiver.history == "history-1"


def test_a_ping_with_no_history_is_answered_and_adopts_nothing(make_receiver):
    receiver, store, primary = make_receiver()
    primary.ping(leader=protocol.Leader(None, ()))
    pong = primary.reply()
    assert pong.status.history is None and pong.status.run is None and pong.segments == ()
    assert receiver.history is None


def test_a_newer_run_truncates_only_what_a_rolled_back_run_wrote(make_receiver, caplog):
    _, store, primary = make_receiver()
    primary.append(0, "a", "b", "c", "d")
    primary.reply()
    primary.append(6, "past-a-gap")
    primary.reply()
    # Run 2 took over a log of 2 messages: ids 2.. were written by run 1 alone.
    run2 = protocol.Leader("history-1", (Segment(1, "r1", 0), Segment(2, "r2", 2)))
    primary.ping(leader=run2)
    pong = primary.reply()
    assert pong.status.run == Run(2, "r2") and pong.status.length == 2
    assert messages(store) == ["a", "b"] and not store.holds(6)
    assert "truncated 3 message(s), ids 2..3, 6" in caplog.text
    primary.append(2, "new", leader=run2)
    assert primary.reply().status.length == 3
    primary.ping()  # run 1 again: stale, ignored
    assert primary.reply().status.run == Run(2, "r2")
    assert messages(store) == ["a", "b", "new"]


def test_a_fetch_returns_held_entries_past_a_gap_too(make_receiver):
    _, store, primary = make_receiver()
    primary.append(0, "a", "b")
    primary.reply()
    primary.append(3, "d", "e")
    primary.reply()
    corr = primary.fetch(3)
    answer = primary.reply()
    assert answer == protocol.Entries(corr, 3, [protocol.encode_entry(m) for m in ("d", "e")])
    primary.fetch(2)
    assert primary.reply().entries == []


def test_bad_frames_are_logged_at_a_limited_rate_and_dropped(make_receiver, caplog):
    receiver, store, primary = make_receiver()
    junk = [
        [b"APPEND"],
        [b"APPEND c1 0 {bad json\n\"x\""],
        [b"APPEND c1 -1 " + LEADER.wire + b'\n"x"'],
        [b"APPEND c1 %d " % 10**20 + LEADER.wire + b'\n"x"'],
        [b"APPEND c1 0 " + LEADER.wire + b"\nnot-a-string"],
        [b"APPEND c1 0 " + LEADER.wire, b'"x"'],  # two parts
        [b"PING c1 " + b"[" * 1000 + b"]" * 1000],
        [b"EXPLODE c1 {}"],
        [protocol.encode_ack("c1", protocol.Status("x", "y", 0), [])],
    ]
    for frames in junk:
        primary.dealer.send_multipart(frames)
    primary.append(0, "fine")
    assert primary.reply().acked == [(0, 1)]
    assert messages(store) == ["fine"]
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and r.threadName == "receiver-io"]
    assert len(warnings) == 1, "one line per peer per interval"
    assert receiver.running


def test_fault_injection_drops_acks_but_keeps_the_message(make_receiver):
    receiver, store, primary = make_receiver(drop_ack_fraction=1.0)
    primary.append(0, "quiet")
    assert primary.no_reply_within(0.3)
    assert messages(store) == ["quiet"]
    primary.ping()
    assert primary.reply().status.length == 1  # the status still tells the truth


def test_bind_failure_is_reported_by_start(ctx):
    holder = ctx.socket(zmq.ROUTER)
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    receiver = Receiver(ctx, f"tcp://127.0.0.1:{port}", OrderedLog(), "s1")
    with pytest.raises(OSError, match="REPLICATION_BIND"):
        receiver.start()
    receiver.stop()
    holder.close()


def test_entries_far_past_the_end_are_neither_kept_nor_acknowledged(ctx):
    store = OrderedLog()
    receiver = Receiver(ctx, f"inproc://s-{uuid.uuid4().hex}", store, "s1", max_ahead=10)
    receiver.start()
    primary = RawPrimary(ctx, receiver.endpoint)
    try:
        primary.append(10, "just outside the window")
        primary.append(10**9, *([""] * 1000))
        primary.append(9, "inside")
        ack = primary.reply()
        assert ack.acked == [(9, 10)], "only the entry inside the window is acknowledged"
        assert not store.holds(10) and store.ahead_count == 1
    finally:
        primary.close()
        receiver.stop()


def test_large_entries_behind_a_lost_frame_are_held_only_up_to_max_ahead_bytes(ctx):
    store = OrderedLog()
    receiver = Receiver(ctx, f"inproc://s-{uuid.uuid4().hex}", store, "s1", max_ahead_bytes=1 << 20)
    receiver.start()
    primary = RawPrimary(ctx, receiver.endpoint)
    big = "x" * (300 << 10)  # about 300 KiB each: three fit in 1 MiB, the fourth does not
    try:
        for seq in range(1, 7):
            primary.append(seq, big)
        acked = [primary.reply().acked for _ in range(3)]
        assert acked == [[(1, 2)], [(2, 3)], [(3, 4)]]
        assert primary.no_reply_within(0.3), "entries past the byte bound are not acknowledged"
        assert store.ahead_count == 3 and store.ahead_bytes <= 1 << 20
        primary.append(0, "the lost one")  # fills the gap: always taken
        assert primary.reply().acked == [(0, 1)]
        for seq in range(4, 7):  # the primary's resends are taken now
            primary.append(seq, big)
            assert primary.reply().acked == [(seq, seq + 1)]
        assert len(store) == 7 and store.ahead_bytes == 0
    finally:
        primary.close()
        receiver.stop()


def test_every_answer_announces_the_frame_limit(make_receiver):
    _, _, primary = make_receiver()
    primary.append(0, "a")
    assert primary.reply().status.frame_limit == protocol.frame_limit(1 << 20)
    primary.ping()
    assert primary.reply().status.frame_limit == protocol.frame_limit(1 << 20)


def test_entries_answers_stay_within_the_frame_limit_the_fetch_announced(make_receiver):
    _, _, primary = make_receiver()
    sent = [f"{n}" * 100 for n in range(20)]
    primary.append(0, *sent)
    primary.reply()
    fetched: list[bytes] = []
    sizes = []
    while len(fetched) < len(sent):
        primary.dealer.send(protocol.encode_fetch(protocol.new_corr_id(), len(fetched), 500))
        assert primary.dealer.poll(5000), "no ENTRIES"
        frame = primary.dealer.recv()
        sizes.append(len(frame))
        answer = protocol.decode([frame])
        assert answer.first == len(fetched) and answer.entries, "each answer carries some"
        fetched += answer.entries
    assert [json.loads(entry) for entry in fetched] == sent
    assert len(sizes) > 1 and max(sizes) <= 500


def test_an_entry_too_large_for_the_primary_s_limit_is_not_sent_but_logged(make_receiver, caplog):
    _, _, primary = make_receiver()
    primary.append(0, "z" * 600)
    primary.reply()
    primary.dealer.send(protocol.encode_fetch(protocol.new_corr_id(), 0, 500))
    wait_until(lambda: "cannot send id 0 (602 bytes)" in caplog.text, what="the ERROR")
    assert "accepts frames of up to 500 bytes" in caplog.text and "MAX_MESSAGE_BYTES" in caplog.text
    primary.ping()  # handled in a later pass than the FETCH: an answer to it would come first
    assert isinstance(primary.reply(), protocol.Pong)
