"""The replicator against a raw ROUTER standing in for a secondary."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from types import SimpleNamespace

import pytest
import zmq

from primary.acks import SHUTDOWN
from primary.config import ReplicationSettings, SecondarySpec
from primary.replicator import Replicator
from shared.consensus.health import Health
from shared.log.ordered_log import OrderedLog
from shared.wire import curve, protocol
from shared.wire.keys import create_pairs
from tests.support.waiting import wait_until

SETTINGS = ReplicationSettings(heartbeat_interval=0.1, suspect_after=20, unhealthy_after=40)


class RawSecondary:
    """A bare ROUTER speaking the protocol by hand; PINGs are answered for it.

    Over inproc, or over TCP on 127.0.0.1 (``tcp``): only TCP enforces the
    primary's MAXMSGSIZE. ``frame_limit``: what its statuses announce."""

    def __init__(self, ctx: zmq.Context, name: str, tcp: bool = False,
                 frame_limit: int | None = None) -> None:
        self.name = name
        self.router = ctx.socket(zmq.ROUTER)
        if tcp:
            self.endpoint = f"tcp://127.0.0.1:{self.router.bind_to_random_port('tcp://127.0.0.1')}"
        else:
            self.endpoint = f"inproc://{name}-{uuid.uuid4().hex}"
            self.router.bind(self.endpoint)
        self.identity: bytes | None = None
        self.incarnation = "inc-1"
        self.length = 0
        self.pings = 0
        self.frame_limit = frame_limit
        self.append_sizes: list[int] = []  # of every APPEND frame received, in bytes
        self.leader = protocol.Leader(None, ())  # whom it follows, as a secondary would

    def status(self) -> protocol.Status:
        return protocol.Status(self.name, self.incarnation, self.length,
                               self.leader.history, self.leader.run, self.frame_limit)

    def pong(self, corr_id: str) -> bytes:
        return protocol.encode_pong(corr_id, self.status(), self.leader.segments)

    def next_append(self, timeout: float = 5.0) -> protocol.Append:
        """Wait for an APPEND, answering PINGs in between."""
        return wait_until(self._receive, timeout, interval=0, what="an APPEND")

    def next_connection(self, timeout: float = 5.0) -> None:
        """Wait for a frame from a connection other than the latest, answering PINGs."""
        latest = self.identity

        def new_connection() -> bool:
            self._receive()  # what the old connection still carries is not looked at
            return self.identity != latest
        wait_until(new_connection, timeout, interval=0, what="a new connection")

    def _receive(self) -> protocol.Message | None:
        """One frame, if one comes within 50 ms; a PING is answered, and None."""
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
        if isinstance(message, protocol.Append):
            self.append_sizes.append(len(frames[0]))
        return message

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


@pytest.fixture
def one_secondary(ctx):
    """Start a Replicator against one RawSecondary made by the returned function."""
    made = []

    def make(max_message_bytes=1 << 20, channel=curve.PLAIN, **secondary):
        s1 = RawSecondary(ctx, "s1", **secondary)
        store = OrderedLog()
        replicator = Replicator(ctx, store, [SecondarySpec("s1", s1.endpoint)], SETTINGS,
                                max_message_bytes, channel)
        made.append((replicator, s1))
        replicator.start()
        return store, replicator, s1

    yield make
    for replicator, s1 in made:
        replicator.stop()
        s1.close()


def replicate(store, replicator, s1, message):
    """Append ``message`` and have ``s1`` store and acknowledge it: a w=2 append."""
    seq = append(store, replicator, message)
    waiter = replicator.register_waiter(seq, needed=1)
    frame = s1.next_append(timeout=10)
    s1.ack(frame.corr_id, [(frame.first, frame.first + len(frame.entries))], length=seq + 1)
    assert waiter.wait(5), f"{message!r} should be acknowledged"


def test_a_link_libzmq_ends_for_an_oversized_frame_is_reopened_with_one_warning(one_secondary, caplog):
    store, replicator, s1 = one_secondary(max_message_bytes=1000, tcp=True, frame_limit=7_000_000)
    replicate(store, replicator, s1, "before")
    limit = protocol.frame_limit(1000)
    # Over the primary's MAXMSGSIZE: libzmq ends that connection, and the
    # DEALER alone would never dial again.
    s1.send(b"x" * (limit + 1))
    s1.next_connection(timeout=10)
    replicate(store, replicator, s1, "after")
    lines = [r.getMessage() for r in caplog.records
             if r.levelno == logging.WARNING and "reopening the link to s1" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"this node {limit} bytes" in lines[0] and "s1 7000000 bytes" in lines[0]
    assert "MAX_MESSAGE_BYTES" in lines[0]


def test_appends_stay_within_the_frame_limit_the_secondary_announced(one_secondary, caplog):
    store, replicator, s1 = one_secondary(frame_limit=2000)
    for n in range(10):
        append(store, replicator, f"{n}" * 300)
    received: list[bytes] = []
    while len(received) < 10:
        frame = s1.next_append()
        if frame.first == len(received):  # not a resend of what it has
            received += frame.entries
            s1.ack(frame.corr_id, [(frame.first, len(received))], length=len(received))
    assert [json.loads(e) for e in received] == [f"{n}" * 300 for n in range(10)]
    assert len(s1.append_sizes) > 1 and max(s1.append_sizes) <= 2000


def test_a_message_no_frame_within_the_limit_carries_makes_the_secondary_unwritable(
    one_secondary, caplog
):
    store, replicator, s1 = one_secondary(frame_limit=2000)
    replicate(store, replicator, s1, "small")
    seq = append(store, replicator, "y" * 3000)
    waiter = replicator.register_waiter(seq, needed=1)

    def refused():
        return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    lines = wait_until(refused, what="the ERROR about the message too large for s1")
    wait_until(lambda: replicator.view().secondaries[0][1] is Health.DIVERGED, what="s1 unwritable")
    sync(replicator, s1, 0)  # more replies under the same limit change nothing
    assert len(refused()) == 1 and replicator.view().secondaries[0][1] is Health.DIVERGED
    assert "message id 1 needs a" in lines[0] and "over the 2000 bytes it accepts" in lines[0]
    assert s1.append_sizes == [s1.append_sizes[0]], "nothing was sent to it since"
    s1.frame_limit = 10_000  # restarted with a larger MAX_MESSAGE_BYTES; its next PONG says so
    frame = s1.next_append()
    assert frame.first == 1 and json.loads(frame.entries[0]) == "y" * 3000
    s1.ack(frame.corr_id, [(1, 2)], length=2)
    assert waiter.wait(5)


@pytest.fixture
def curve_client(ctx, tmp_path):
    """A started CurveClient for s1 whose key pairs are all made here."""
    create_pairs(tmp_path, ["primary", "s1"])
    channel = curve.load_client(str(tmp_path), "primary", ["s1"])
    channel.start(ctx)
    yield channel
    channel.stop()


def test_with_curve_the_replicator_alone_watches_its_links_and_retries_failed_handshakes(
    one_secondary, curve_client, caplog, ctx
):
    # s1 listens without CURVE: libzmq ends the handshake and never retries it.
    _, replicator, s1 = one_secondary(tcp=True, channel=curve_client)
    accepted = s1.router.get_monitor_socket(zmq.EVENT_ACCEPTED)
    try:
        for attempt in range(2):
            assert accepted.poll(10_000), f"connection attempt {attempt + 1}"
            accepted.recv_multipart()
    finally:
        s1.router.disable_monitor()
        accepted.close(linger=0)
    wait_until(lambda: "no CURVE handshake with s1" in caplog.text, what="the handshake warning")
    assert "it does not use CURVE: give it REPLICATION_KEYS_DIR too" in caplog.text
    assert "reopening the link" not in caplog.text, "the channel said why; the limits are not it"
    assert "curve-watch" not in {t.name for t in threading.enumerate()}
