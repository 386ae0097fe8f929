"""The replicator against a raw ROUTER standing in for a secondary."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest
import zmq

from primary.acks import SHUTDOWN
from primary.config import ReplicationSettings, SecondarySpec
from primary.replicator import Replicator
from shared.log.ordered_log import OrderedLog
from shared.wire import protocol
from tests.support.waiting import wait_until

SETTINGS = ReplicationSettings(heartbeat_interval=0.1, suspect_after=20, unhealthy_after=40)


class RawSecondary:
    """A bare ROUTER speaking the protocol by hand; PINGs are answered for it."""

    def __init__(self, ctx: zmq.Context, name: str) -> None:
        self.name = name
        self.endpoint = f"inproc://{name}-{uuid.uuid4().hex}"
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind(self.endpoint)
        self.identity: bytes | None = None
        self.incarnation = "inc-1"
        self.length = 0
        self.pings = 0
        self.leader = protocol.Leader(None, ())  # whom it follows, as a secondary would

    def status(self) -> protocol.Status:
        return protocol.Status(self.name, self.incarnation, self.length,
                               self.leader.history, self.leader.run)

    def pong(self, corr_id: str) -> bytes:
        return protocol.encode_pong(corr_id, self.status(), self.leader.segments)

    def next_append(self, timeout: float = 5.0) -> protocol.Append:
        """Wait for an APPEND, answering PINGs in between."""
        def receive():
            if not self.router.poll(50):
                return None
            identity, *frames = self.router.recv_multipart()
            self.identity = identity
            message = protocol.decode(frames)
            if isinstance(message, (protocol.Ping, protocol.Append)) and message.leader.history:
                self.leader = message.leader
            if isinstance(message, protocol.Ping):
                self.pings += 1
                self.send(self.pong(message.corr_id))
                return None
            return message
        return wait_until(receive, timeout, interval=0, what="an APPEND")

    def ack(self, corr_id: str, ranges, length: int | None = None) -> None:
        if length is not None:
            self.length = length
        self.send(protocol.encode_ack(corr_id, self.status(), ranges))

    def send(self, *parts: bytes) -> None:
        """One message: a frame, or the parts of a malformed one."""
        self.router.send_multipart([self.identity, *parts])

    def close(self) -> None:
        self.router.close(linger=0)


@pytest.fixture
def cluster(ctx):
    store = OrderedLog()
    secondaries = [RawSecondary(ctx, "s1"), RawSecondary(ctx, "s2")]
    replicator = Replicator(
        ctx, store, [SecondarySpec(s.name, s.endpoint) for s in secondaries], SETTINGS
    )
    replicator.start()
    yield store, replicator, secondaries
    replicator.stop()
    for secondary in secondaries:
        secondary.close()


def append(store, replicator, message):
    seq = store.append(protocol.encode_entry(message))
    replicator.notify_appended()
    return seq


def test_every_append_reaches_every_secondary_under_the_history_its_first_append_minted(cluster):
    store, replicator, (s1, s2) = cluster
    assert replicator.history is None
    append(store, replicator, "hello")
    for secondary in (s1, s2):
        frame = secondary.next_append()
        assert frame.first == 0 and [json.loads(e) for e in frame.entries] == ["hello"]
        assert frame.leader.history == replicator.history is not None
        assert frame.leader.segments[0].base == 0


def test_waiter_completes_on_the_ack_that_echoes_its_corr_id(cluster):
    store, replicator, (s1, s2) = cluster
    seq = append(store, replicator, "m")
    waiter = replicator.register_waiter(seq, needed=2)
    frame1, frame2 = s1.next_append(), s2.next_append()
    s1.ack(frame1.corr_id, [(0, 1)], length=1)
    wait_until(lambda: waiter.acked_by == ["s1"], what="s1's ACK to count")
    assert waiter.wait(0.05) is False, "one ACK of the two needed must not satisfy it"
    s2.ack(frame2.corr_id, [(0, 1)], length=1)
    wait_until(lambda: replicator.view().secondaries[1][0].acked_length == 1, what="s2's ACK")
    late = replicator.register_waiter(seq, needed=2)
    assert late.wait(5) and late.acked_by == ["s1", "s2"]


def sync(replicator, secondary, index):
    """Send a PONG and wait until the replicator has read it, and so all before it."""
    before = replicator.view().secondaries[index][0].last_heard
    secondary.send(secondary.pong("sync"))
    wait_until(lambda: replicator.view().secondaries[index][0].last_heard != before, what="the PONG")


def test_unknown_and_late_acks_are_ignored(cluster):
    store, replicator, (_, s2) = cluster
    seq = append(store, replicator, "m")
    frame = s2.next_append()
    s2.ack("feedbeef", [(0, 1)], length=1)  # nobody sent corr_id feedbeef
    s2.length = 0
    sync(replicator, s2, 1)
    assert replicator.view().secondaries[1][0].acked_length == 0
    s2.ack(frame.corr_id, [(0, 1)], length=1)
    assert replicator.register_waiter(seq, needed=1).wait(5)
    s2.ack(frame.corr_id, [(0, 9)], length=9)  # late: that flight is finished
    s2.length = 1
    sync(replicator, s2, 1)
    assert replicator.view().secondaries[1][0].acked_length == 1


def test_a_waiter_registered_after_the_acks_counts_them(cluster):
    store, replicator, (s1, s2) = cluster
    seq = append(store, replicator, "m")
    s1.ack(s1.next_append().corr_id, [(0, 1)], length=1)
    wait_until(lambda: replicator.view().secondaries[0][0].acked_length == 1, what="s1's ack to land")
    waiter = replicator.register_waiter(seq, needed=1)
    assert waiter.wait(5) and waiter.acked_by == ["s1"]
    current = replicator.register_waiter(seq, needed=0)  # "who holds it now?"
    assert current.wait(5) and current.acked_by == ["s1"]


def test_new_entries_are_batched_and_pipelined_without_waiting_for_acks(cluster):
    store, replicator, (s1, _) = cluster
    append(store, replicator, "a")
    first = s1.next_append()
    for m in "bcd":
        append(store, replicator, m)
    seen = [first]
    while sum(len(f.entries) for f in seen) < 4:
        seen.append(s1.next_append())
    assert [f.first for f in seen][0] == 0
    assert [json.loads(e) for f in seen for e in f.entries] == list("abcd")
    assert len({f.corr_id for f in seen}) == len(seen)


def test_unacknowledged_append_is_resent_and_either_ack_counts(cluster):
    store, replicator, (s1, _) = cluster
    seq = append(store, replicator, "lost")
    first = s1.next_append()
    again = s1.next_append(timeout=5)  # no ACK sent: it comes back after the retry timeout
    assert again.first == 0 and again.entries == first.entries
    assert again.corr_id != first.corr_id  # each attempt has its own
    s1.ack(first.corr_id, [(0, 1)], length=1)  # the first attempt's ACK, arriving late
    assert replicator.register_waiter(seq, needed=1).wait(5)


def test_bad_frames_from_a_secondary_are_dropped_and_replication_goes_on(cluster, caplog):
    store, replicator, (s1, _) = cluster
    seq = append(store, replicator, "m")
    frame = s1.next_append()
    for junk in ([b"ACK"], [b"ACK c1 {"], [b"WHAT c1 {}"], [b"\xff" * 3] * 7):
        s1.send(*junk)
    s1.send(protocol.encode_ping("c2", s1.leader))  # a PING is not for the primary
    s1.ack(frame.corr_id, [(0, 1)], length=1)
    assert replicator.register_waiter(seq, needed=1).wait(5)
    bad = [r for r in caplog.records if "bad frame" in r.getMessage() or "PING frame" in r.getMessage()]
    assert len(bad) == 1 and bad[0].levelname == "WARNING", "one line per peer per interval"
    assert replicator.running


def test_a_restarted_secondary_is_caught_up_from_the_length_it_reports(cluster):
    store, replicator, (s1, _) = cluster
    for m in "abc":
        append(store, replicator, m)
    received = 0
    while received < 3:
        frame = s1.next_append()
        received += len(frame.entries)
        s1.ack(frame.corr_id, [(frame.first, frame.first + len(frame.entries))], length=received)
    wait_until(lambda: replicator.view().secondaries[0][0].acked_length == 3, what="s1 acked all")
    s1.incarnation, s1.length = "inc-2", 0  # restarted, empty; the next PONG says so
    frame = s1.next_append(timeout=5)
    assert frame.first == 0 and [json.loads(e) for e in frame.entries] == list("abc")


def test_stop_releases_waiting_requests(ctx):
    store = OrderedLog()
    nobody = f"inproc://nobody-{uuid.uuid4().hex}"  # never bound: the ACK cannot come
    replicator = Replicator(ctx, store, [SecondarySpec("s1", nobody)], SETTINGS)
    replicator.start()
    waiter = replicator.register_waiter(append(store, replicator, "m"), needed=1)
    replicator.stop()
    assert waiter.wait(5) is False and waiter.abort_reason == SHUTDOWN


def test_a_stalled_io_loop_declares_nobody_dead(ctx, monkeypatch):
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr("primary.replicator.time", SimpleNamespace(monotonic=lambda: clock.now))
    nobody = f"inproc://nobody-{uuid.uuid4().hex}"
    replicator = Replicator(ctx, OrderedLog(), [SecondarySpec("s1", nobody)], SETTINGS)
    # Never started: its loop cannot have read a reply, so silence proves nothing.
    clock.now += 100 * SETTINGS.heartbeat_interval * SETTINGS.unhealthy_after
    view = replicator.view()
    assert view.available_nodes == 2
    assert view.now == 1000.0, "judged when the loop last looked, not by the reader's clock"
