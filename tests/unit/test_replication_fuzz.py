"""Hypothesis throws random frames at both ends of the replication channel.

Whatever arrives, each bad frame is counted and dropped (and logged, at a
limited rate), the I/O thread survives, and the node goes on replicating
correctly.
"""

from __future__ import annotations

import json
import uuid

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primary.config import SecondarySpec
from primary.replicator import Replicator
from secondary.receiver import Receiver
from shared.consensus.history import Segment
from shared.log.ordered_log import OrderedLog
from shared.wire import protocol
from tests.support.documents import messages_of
from tests.support.waiting import wait_until
from tests.unit.test_replicator import SETTINGS, RawSecondary

HISTORY = "fuzz-history"
LEADER = protocol.Leader(HISTORY, (Segment(1, "r1", 0),))
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
        "history": st.just(HISTORY) | st.none() | st.text(max_size=4),
        "segments": st.just([[1, "r1", 0]]) | st.just([]) | json_values,
        "from": st.integers(-5, 2**60),
        "run": st.just([1, "r1"]) | json_values,
        "first": st.integers(-5, 2**60),
        "node": st.text(max_size=4),
        "incarnation": st.just("inc-1") | st.text(max_size=4),
        "length": st.integers(-5, 2**60),
        "acked": st.lists(st.lists(st.integers(-3, 2**60), max_size=3), max_size=3),
        "junk": json_values,
    },
)
#: What a hostile peer sends: nesting deeper than the parser's recursion
#: limit, numbers of hundreds of digits, and parts of megabytes.
adversarial = (
    st.integers(500, 5000).map(lambda n: b"[" * n + b"]" * n)
    | st.integers(500, 5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)
    | st.integers(300, 5000).map(lambda n: b'{"first": 1' + b"0" * n + b', "length": 1' + b"0" * n + b"}")
    | st.sampled_from([b"", b" " * (3 << 20), b'"' + b"x" * (2 << 20) + b'"'])
)
bodies = (
    body_fields.map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=40)
    | json_values.map(lambda v: json.dumps(v).encode())
    | adversarial
)
kinds = st.sampled_from([protocol.APPEND, protocol.ACK, protocol.PING, protocol.PONG, protocol.FETCH,
                         protocol.ENTRIES]) | st.binary(max_size=8)
corr_ids = st.sampled_from([b"c0ffee", b""]) | st.binary(max_size=70)
entries = st.lists(
    st.text(max_size=6).map(protocol.encode_entry) | st.binary(max_size=10) | adversarial, max_size=4
)
seqs = st.integers(-5, 2**60).map(lambda n: str(n).encode()) | st.binary(max_size=6)
#: One frame laid out as the protocol lays them out, from parts that may each be wrong.
structured = st.builds(
    lambda kind, fields, entries: [b" ".join([kind, *fields])
                                   + (b"" if entries is None else b"\n" + b"\n".join(entries))],
    kinds, st.lists(corr_ids | seqs | bodies, max_size=3), st.none() | entries,
)
frame_lists = structured | st.lists(st.binary(max_size=30), min_size=1, max_size=6)


#: Rejected by the primary for sure: once it is counted, all before it were handled.
SYNC_FRAME = b"SYNC c1 {}"


def is_bad_for_a_secondary(frames: list[bytes]) -> bool:
    """Bad if it does not decode, is not a primary's frame, or names another history."""
    try:
        message = protocol.decode(frames)
    except protocol.ProtocolError:
        return True
    if isinstance(message, protocol.Fetch):
        return False
    if not isinstance(message, (protocol.Append, protocol.Ping)):
        return True
    return message.leader.history not in (None, HISTORY)


def test_secondary_router_survives_random_frames(ctx):
    store = OrderedLog()
    receiver = Receiver(ctx, f"inproc://fuzz-{uuid.uuid4().hex}", store, "s1")
    receiver.start()
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(receiver.endpoint)

    def round_trip(frames):
        dealer.send_multipart(frames)
        ping = protocol.new_corr_id()
        dealer.send(protocol.encode_ping(ping, LEADER))
        while True:  # the fuzzed frame may draw an answer of its own first
            assert dealer.poll(5000), "the receiver stopped answering"
            reply = protocol.decode(dealer.recv_multipart())
            if isinstance(reply, protocol.Pong) and reply.corr_id == ping:
                return

    @FUZZ
    @given(frame_lists)
    def check(frames):
        before = receiver.bad_frames
        round_trip(frames)
        assert receiver.bad_frames - before == is_bad_for_a_secondary(frames)

    try:
        round_trip([protocol.encode_ping("c0", LEADER)])  # it joins the history first
        check()
        assert receiver.running and receiver.history == HISTORY
        # still a working secondary: a newer run, an append, its ACK, the message shown
        newest = protocol.Leader(HISTORY, (Segment(2**52, "last", 0),))
        dealer.send(protocol.encode_append("c1", newest, 0, [protocol.encode_entry("ok")]))
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
    if isinstance(message, protocol.Entries):
        return False  # an answer nobody asked for is ignored
    return not isinstance(message, (protocol.Ack, protocol.Pong))


def test_primary_ack_path_survives_random_frames(ctx):
    store = OrderedLog()
    fake = RawSecondary(ctx, "s1")
    replicator = Replicator(ctx, store, [SecondarySpec("s1", fake.endpoint)], SETTINGS)
    replicator.start()

    def learn_identity():
        fake.identity, *_ = fake.router.recv_multipart()
        return True

    wait_until(lambda: fake.router.poll(50) and learn_identity(), what="the first PING")

    @FUZZ
    @given(frame_lists)
    def check(frames):
        before = replicator.bad_frames
        fake.send(*frames)
        fake.send(SYNC_FRAME)
        expected = before + is_bad_for_an_empty_primary(frames) + 1
        wait_until(lambda: replicator.bad_frames >= expected, what="the sync frame")
        assert replicator.bad_frames == expected

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
