"""Hypothesis throws random frames at both ends of the replication channel.

Whatever arrives, each bad frame is logged once as a WARNING and dropped, the
I/O thread survives, and the node goes on replicating correctly.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primary.config import SecondarySpec
from primary.replicator import Replicator
from secondary.receiver import Receiver
from shared import protocol
from shared.ordered_log import OrderedLog
from tests.support.documents import messages_of
from tests.support.waiting import wait_until
from tests.unit.test_replicator import SETTINGS, RawSecondary

EPOCH = "fuzz-epoch"
FUZZ = settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
body_fields = st.fixed_dictionaries(
    {},
    optional={
        "epoch": st.just(EPOCH) | st.text(max_size=4),
        "first": st.integers(-5, 2**60),
        "node": st.text(max_size=4),
        "incarnation": st.just("inc-1") | st.text(max_size=4),
        "length": st.integers(-5, 2**60),
        "acked": st.lists(st.lists(st.integers(-3, 2**60), max_size=3), max_size=3),
        "junk": json_values,
    },
)
bodies = body_fields.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=40) | json_values.map(
    lambda v: json.dumps(v).encode()
)
kinds = st.sampled_from([protocol.APPEND, protocol.ACK, protocol.PING, protocol.PONG]) | st.binary(max_size=8)
corr_ids = st.sampled_from([b"c0ffee", b""]) | st.binary(max_size=70)
entries = st.lists(
    st.text(max_size=6).map(protocol.encode_entry) | st.binary(max_size=10), max_size=4
)
structured = st.builds(lambda k, c, b, e: [k, c, b, *e], kinds, corr_ids, bodies, entries)
frame_lists = structured | st.lists(st.binary(max_size=30), min_size=1, max_size=6)


SYNC_FRAME = [b"SYNC", b"c1", b"{}"]


class WarningCounter(logging.Handler):
    """Counts WARNING records about frames from one thread; the rejections of
    SYNC_FRAME, a marker the tests send, are counted apart."""

    def __init__(self, thread_name: str) -> None:
        super().__init__(logging.WARNING)
        self.thread_name = thread_name
        self.count = 0
        self.syncs = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.threadName != self.thread_name or "frame" not in message:
            return
        if "SYNC" in message:
            self.syncs += 1
        else:
            self.count += 1


@pytest.fixture
def warnings_from():
    handlers = []

    def attach(thread_name: str) -> WarningCounter:
        handler = WarningCounter(thread_name)
        logging.getLogger().addHandler(handler)
        handlers.append(handler)
        return handler

    yield attach
    for handler in handlers:
        logging.getLogger().removeHandler(handler)


def is_bad_for(frames: list[bytes], expected_kinds: tuple[type, ...]) -> bool:
    try:
        return not isinstance(protocol.decode(frames), expected_kinds)
    except protocol.ProtocolError:
        return True


def test_secondary_router_survives_random_frames(ctx, warnings_from):
    store = OrderedLog()
    receiver = Receiver(ctx, f"inproc://fuzz-{uuid.uuid4().hex}", store, "s1")
    receiver.start()
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(receiver.endpoint)
    warnings = warnings_from("receiver-io")

    def round_trip(frames):
        dealer.send_multipart(frames)
        ping = protocol.new_corr_id()
        dealer.send_multipart(protocol.encode_ping(ping, EPOCH))
        while True:  # the fuzzed frame may draw an ACK of its own first
            assert dealer.poll(5000), "the receiver stopped answering"
            reply = protocol.decode(dealer.recv_multipart())
            if isinstance(reply, protocol.Pong) and reply.corr_id == ping:
                return

    @FUZZ
    @given(frame_lists)
    def check(frames):
        before = warnings.count
        round_trip(frames)
        assert warnings.count - before == is_bad_for(frames, (protocol.Append, protocol.Ping))

    try:
        check()
        # still a working secondary: a fresh epoch, an append, its ACK, the message shown
        dealer.send_multipart(protocol.encode_append("c1", "after-fuzz", 0, [protocol.encode_entry("ok")]))
        assert dealer.poll(5000)
        ack = protocol.decode(dealer.recv_multipart())
        assert isinstance(ack, protocol.Ack) and ack.corr_id == "c1" and ack.status.length == 1
        assert messages_of(store) == ["ok"]
    finally:
        dealer.close()
        receiver.stop()


def is_bad_for_an_empty_primary(frames: list[bytes]) -> bool:
    """A reply is bad if it does not decode, is not an ACK or PONG, or claims
    messages the primary never had (its log is empty while fuzzing)."""
    try:
        message = protocol.decode(frames)
    except protocol.ProtocolError:
        return True
    return not isinstance(message, (protocol.Ack, protocol.Pong)) or message.status.length > 0


def test_primary_ack_path_survives_random_frames(ctx, warnings_from):
    store = OrderedLog()
    fake = RawSecondary(ctx, "s1")
    replicator = Replicator(ctx, store, [SecondarySpec("s1", fake.endpoint)], SETTINGS)
    replicator.start()
    warnings = warnings_from("replicator-io")

    def learn_identity():
        fake.identity, *_ = fake.router.recv_multipart()
        return True

    wait_until(lambda: fake.router.poll(50) and learn_identity(), what="the first PING")

    @FUZZ
    @given(frame_lists)
    def check(frames):
        before, syncs = warnings.count, warnings.syncs
        fake.send(frames)
        # The primary rejects the marker for sure; once it has, all before it were handled.
        fake.send(SYNC_FRAME)
        wait_until(lambda: warnings.syncs > syncs, what="the sync frame")
        assert warnings.count - before == is_bad_for_an_empty_primary(frames)

    try:
        check()
        # still replicating: a new entry goes out, its ACK satisfies a waiter
        fake.incarnation = f"after-fuzz-{uuid.uuid4().hex}"
        seq = store.append(protocol.encode_entry("after"))
        replicator.notify_appended()
        waiter = replicator.register_waiter(seq, needed=1)
        frame = fake.next_append()
        fake.ack(frame.corr_id, [(frame.first, frame.first + len(frame.entries))], length=1)
        assert waiter.wait(5)
    finally:
        replicator.stop()
        fake.close()
