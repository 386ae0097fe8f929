"""``node-io`` against raw sockets: what each role sends, answers and keeps, read off the wire.

- A fixed primary dials RawSecondary ROUTERs that answer by hand: its
  recovery, its runs, flow control, resends, its secondaries' restarts and
  health as it logs them, its own stalls, frame limits, links libzmq ended;
  and a late secondary of an in-process cluster catching up.
- A fixed secondary is written to by a HandMadePrimary (tests.support.raw_peer):
  what it stores and answers, REPLICATION_DELAY, recovery's questions, reads.
- A failover node listens on tcp://127.0.0.1:0 and dials RawSecondary
  ROUTERs in its peers' places: what it believes of a frame, proposals
  across a step-down, the hand-over when it stops.
- A failed write: a fixed primary answers 503 and goes on; a failover node stops.

Thread: the test's; each node runs its own ``node-io`` thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace

import pytest
import zmq

from primary.config import PrimaryConfig, ReplicationSettings, SecondarySpec
from secondary.config import SecondaryConfig, node_settings
from shared.consensus.health import Health
from shared.consensus import raft_progress
from shared.consensus.raft import MAX_TERM, WINDOW, Mode, Ready
from shared.consensus.raft_log import Entry, HardState, LogStart, Unsaved
from shared.consensus.raft_messages import (
    AppendEntries, AppendReply, FetchReply, FetchRequest, Heartbeat, HeartbeatReply, Message,
    PreVoteRequest, ReadIndexReply, ReadIndexRequest, StateReply, StateRequest, TimeoutNow, VoteReply,
    VoteRequest,
)
from shared.log.node_log import NodeLog, open_log
from shared.log.sqlite_log import StoreError
from shared.node import node_io, proposals
from shared.node.config import FailoverConfig, Peer
from shared.node.node_io import NodeIo
from shared.node.peer_watch import PeerWatch
from shared.node.settings import NodeSettings
from shared.node.requests import STEPPED_DOWN, STOPPING, Proposal, ReadIndexWait
from shared.runtime.config import DelayRange
from shared.runtime.logging_setup import RateLimitFilter
from shared.wire import frames
from shared.wire.curve import PLAIN
from shared.wire.frames import encode_entry, frame_limit
from tests.support.documents import document_bytes, messages_of
from tests.support.raw_peer import ENVELOPE, HandMadePrimary, RawPeer
from tests.support.waiting import wait_until

#: Heartbeats every 50 ms; a secondary silent for 1 s is suspected, for 2 s unhealthy.
SETTINGS = ReplicationSettings(heartbeat_interval=0.05, suspect_after=20, unhealthy_after=40,
                               recovery_timeout=5.0)


class RawSecondary:
    """A ROUTER in a peer's place, bound before the node dials it: it reads what
    the node sends, and answers only what the test answers, as ``name``."""

    def __init__(self, ctx: zmq.Context, name: str, tcp: bool = False) -> None:
        self.name = name
        self.incarnation = uuid.uuid4().hex
        self.envelope = ENVELOPE  # what its answers say of it: its URLs, its frame limit
        self.router = ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        if tcp:
            self.endpoint = f"tcp://127.0.0.1:{self.router.bind_to_random_port('tcp://127.0.0.1')}"
        else:
            self.endpoint = f"inproc://{name}-{uuid.uuid4().hex}"
            self.router.bind(self.endpoint)
        #: The connection the last frame came on (its ROUTER identity): answers go there.
        self.connection: bytes | None = None

    def receive(self, timeout: float = 5.0) -> Message:
        """The next frame, from whichever connection."""
        assert self.router.poll(max(0.0, timeout) * 1000), f"nothing reached {self.name} in {timeout}s"
        self.connection, frame = self.router.recv_multipart()
        message, _ = frames.decode([frame])
        return message

    def next(self, kind: type, where=lambda message: True, timeout: float = 5.0):
        """The next frame of ``kind`` that ``where`` accepts; those before it are passed over."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(deadline - time.monotonic())
            if isinstance(message, kind) and where(message):
                return message

    def silent_for(self, seconds: float, where=lambda message: True) -> bool:
        """Whether no AppendEntries that ``where`` accepts arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        while self.router.poll(max(0.0, deadline - time.monotonic()) * 1000):
            message = self.receive()
            if isinstance(message, AppendEntries) and where(message):
                return False
        return True

    def drain(self) -> None:
        while self.router.poll(0):
            self.router.recv_multipart()

    def answer(self, reply: Message | bytes) -> None:
        """Send ``reply`` on the connection the last frame came on."""
        frame = reply if isinstance(reply, bytes) else frames.encode(reply, self.envelope)
        self.router.send_multipart([self.connection, frame])

    # -- answers a secondary would give -----------------------------------------------

    def state(self) -> StateReply:
        """What it holds, to a recovering primary: nothing, of no cluster."""
        return StateReply(self.name, 0, 0, 0, LogStart(), None)

    def accept(self, request: AppendEntries, term: int | None = None) -> AppendReply:
        return AppendReply(self.name, request.term if term is None else term, request.seq, True,
                           match_length=request.prev_length + len(request.entries),
                           incarnation=self.incarnation)

    def beaten(self, beat: Heartbeat, length: int, caught_up: bool = True) -> HeartbeatReply:
        return HeartbeatReply(self.name, beat.term, beat.seq, length, caught_up, self.incarnation)

    def close(self) -> None:
        self.router.close(linger=0)


def carries_entries(message: AppendEntries) -> bool:
    return bool(message.entries)


def proposed(node: NodeIo, message: str, w: int = 1) -> Proposal:
    proposal = Proposal([encode_entry(message)], None, w)
    node.propose(proposal)
    return proposal


def bodies(message: AppendEntries) -> list[bytes]:
    return [entry.body for entry in message.entries]


# -- a fixed primary, and ROUTERs in its secondaries' places ---------------------------


@pytest.fixture
def raw_secondaries(ctx, request):
    """ROUTERs in s1's and s2's places: over inproc, or over tcp when parametrized
    (indirectly) with "tcp": only tcp enforces a socket's MAXMSGSIZE."""
    tcp = getattr(request, "param", "inproc") == "tcp"
    made = [RawSecondary(ctx, "s1", tcp), RawSecondary(ctx, "s2", tcp)]
    yield made
    for secondary in made:
        secondary.close()


@pytest.fixture
def start_primary(ctx, raw_secondaries):
    """Start a fixed primary that dials ``raw_secondaries``; its log in memory, or in ``data_dir``;
    its heartbeats and health as ``settings`` say."""
    started: list[NodeIo] = []

    def start(data_dir: str = "", settings: ReplicationSettings = SETTINGS) -> NodeIo:
        config = replace(PrimaryConfig(), replication=settings, data_dir=data_dir,
                         secondaries=tuple(SecondarySpec(s.name, s.endpoint) for s in raw_secondaries))
        node = NodeIo(ctx, config.node_settings(frame_limit(config.max_body_bytes)),
                      open_log(data_dir, "primary", True, config.idempotency_keys), PLAIN)
        started.append(node)
        node.start()
        return node

    yield start
    for node in started:
        node.stop()


def begin_run(secondaries: list[RawSecondary]) -> None:
    """Answer a primary's recovery as empty secondaries, then its probe and its
    run's no-op: each of them then holds the whole log, and is written to eagerly."""
    for secondary in secondaries:
        secondary.next(StateRequest)
        secondary.answer(secondary.state())
    for secondary in secondaries:
        secondary.answer(secondary.accept(secondary.next(AppendEntries)))
        secondary.answer(secondary.accept(secondary.next(AppendEntries, carries_entries)))


def test_a_primary_without_a_log_asks_each_secondary_what_it_holds_before_its_first_run(
        start_primary, raw_secondaries, caplog):
    caplog.set_level(logging.INFO, logger="shared.node.node_io")
    node = start_primary()
    for secondary in raw_secondaries:
        asked = secondary.receive()
        assert isinstance(asked, StateRequest) and asked.term == 0, "nothing is sent before recovery"
    wait_until(lambda: node.state.recovering, what="the recovery published")
    assert not node.state.is_primary
    for secondary in raw_secondaries:
        secondary.answer(secondary.state())
    probes = [secondary.next(AppendEntries) for secondary in raw_secondaries]
    assert [(p.term, p.prev_length, p.entries) for p in probes] == [(1, 0, ())] * 2
    cluster = probes[0].cluster
    assert cluster is not None and probes[1].cluster == cluster, "named as its first run begins"
    wait_until(lambda: node.state.is_primary and node.state.cluster == cluster, what="run 1 to begin")
    assert f"leading history {cluster} as run 1 from id 0" in caplog.text


def test_a_late_answer_naming_another_cluster_leaves_the_primary_running(start_primary, raw_secondaries):
    """s1 answers the recovery's question once the run has begun, with another
    cluster's log (it kept it while the primary began a new one; or a forger,
    in plain mode). The core took it for a frame of another cluster's
    primary and raised AttributeError answering it: node-io stopped, and the
    primary with it."""
    node = start_primary()
    begin_run(raw_secondaries)
    s1, s2 = raw_secondaries
    s1.answer(StateReply("s1", 1, 1, 9, LogStart(), "another-cluster"))
    proposal = proposed(node, "after", w=3)  # s1 acknowledges it after its answer, on one connection
    for secondary in (s1, s2):
        secondary.answer(secondary.accept(secondary.next(AppendEntries, carries_entries)))
    assert proposal.wait(5.0) and node.running


def test_a_primary_that_kept_its_log_begins_a_new_term_at_once(start_primary, raw_secondaries, tmp_path):
    first = start_primary(str(tmp_path))
    begin_run(raw_secondaries)
    assert proposed(first, "kept").wait(5)
    cluster = first.state.cluster
    first.stop()
    for secondary in raw_secondaries:
        secondary.drain()
    again = start_primary(str(tmp_path))
    for secondary in raw_secondaries:
        opening = secondary.receive()
        assert isinstance(opening, Heartbeat), "no StateRequest: it has a log to lead"
        assert (opening.term, opening.cluster) == (2, cluster)
    wait_until(lambda: again.state.is_primary and again.state.term == 2, what="run 2 to begin")
    assert messages_of(again.log) == ["kept"]


def test_at_most_a_window_of_frames_is_in_flight_to_a_silent_secondary(start_primary, raw_secondaries):
    node = start_primary()
    begin_run(raw_secondaries)
    s1 = raw_secondaries[0]
    # One append per pass, each in a frame of its own; s1 answers none of them.
    for n in range(WINDOW + 3):
        assert proposed(node, f"m{n}").wait(5)
    sent = []
    while True:
        frame = s1.next((AppendEntries, Heartbeat))
        if isinstance(frame, AppendEntries) and not frame.entries:
            break  # its oldest frame timed out: a probe
        if isinstance(frame, AppendEntries):
            sent.append(frame)
    assert [f.prev_length for f in sent] == list(range(1, WINDOW + 1))
    assert [body for f in sent for body in bodies(f)] == [encode_entry(f"m{n}") for n in range(WINDOW)]
    probe = frame
    assert probe.prev_length == 1, "probed from what it is known to hold"
    # Unanswered, the probe is all that is in flight: only heartbeats come, which carry no entries.
    assert s1.silent_for(3 * SETTINGS.heartbeat_interval)
    s1.answer(s1.accept(probe))
    resent = s1.next(AppendEntries, carries_entries)
    assert resent.prev_length == 1
    assert bodies(resent) == [encode_entry(f"m{n}") for n in range(WINDOW + 3)]


def test_a_late_answer_to_the_first_attempt_still_counts(start_primary, raw_secondaries, caplog):
    caplog.set_level(logging.INFO, logger="shared.node.node_io")
    node = start_primary()
    begin_run(raw_secondaries)
    s1 = raw_secondaries[0]
    waiting = proposed(node, "m", w=2)
    first = s1.next(AppendEntries, carries_entries)
    probe = s1.next(AppendEntries, lambda m: not m.entries)  # no answer in time: given up
    assert probe.seq > first.seq
    wait_until(lambda: node.state.peers["s1"].resends >= 1, what="the resend counted")
    assert "resending to s1 from message 0: no answer within" in caplog.text
    assert not waiting.acked_by, "not released: nothing answered yet"
    s1.answer(s1.accept(first))
    assert waiting.wait(5) and waiting.acked_by == ["primary", "s1"]


def test_an_answer_to_a_frame_never_sent_moves_nothing(start_primary, raw_secondaries, caplog):
    node = start_primary()
    begin_run(raw_secondaries)
    s1 = raw_secondaries[0]
    waiting = proposed(node, "m", w=2)
    sent = s1.next(AppendEntries, carries_entries)
    never_sent = AppendReply("s1", sent.term, sent.seq + 1000, True, match_length=2,
                             incarnation=s1.incarnation)
    s1.answer(never_sent)
    s1.answer(replace(never_sent, seq=sent.seq, match_length=99))  # more entries than were ever sent
    wait_until(lambda: node.state.bad_frames == 2, what="both claims to be dropped")
    assert not waiting.acked_by and node.state.peers["s1"].match_length == 0
    refused = [r for r in caplog.records if "dropped a bad frame from s1" in r.getMessage()]
    assert refused[0].levelno == logging.ERROR and "which was never sent" in refused[0].getMessage()
    s1.answer(s1.accept(sent))
    assert waiting.wait(5) and waiting.acked_by == ["primary", "s1"]


def test_junk_from_a_secondary_is_dropped_with_one_warning_and_replication_goes_on(
        start_primary, raw_secondaries, caplog):
    node = start_primary()
    begin_run(raw_secondaries)
    s1 = raw_secondaries[0]
    waiting = proposed(node, "m", w=2)
    sent = s1.next(AppendEntries, carries_entries)
    for junk in (b"REPLICATED", b"REPLICATED {", b"WHAT {}", b"\xff" * 3):
        s1.answer(junk)
    s1.answer(s1.accept(sent))
    assert waiting.wait(5)
    dropped = [r for r in caplog.records if "dropped a bad frame from s1" in r.getMessage()]
    assert len(dropped) == 1 and dropped[0].levelno == logging.WARNING, "one line per peer per interval"
    wait_until(lambda: node.state.bad_frames == 4, what="every bad frame counted")
    assert node.running


def test_a_secondary_back_without_its_log_is_sent_everything_again(start_primary, raw_secondaries, caplog):
    caplog.set_level(logging.INFO, logger="shared.node.node_io")
    node = start_primary()
    begin_run(raw_secondaries)
    s1 = raw_secondaries[0]
    for n in range(3):
        assert proposed(node, f"m{n}").wait(5)
    held = s1.next(AppendEntries, lambda m: m.prev_length + len(m.entries) == 4)
    s1.answer(s1.accept(held))
    wait_until(lambda: node.state.peers["s1"].match_length == 3, what="s1 to hold all three")
    s1.incarnation = uuid.uuid4().hex  # restarted in memory: empty, and it says it is not caught up
    s1.answer(s1.beaten(s1.next(Heartbeat), length=0, caught_up=False))
    probe = s1.next(AppendEntries, lambda m: m.prev_length == 0)
    assert not probe.entries
    wait_until(lambda: "s1 restarted (it holds 0 messages): resending from there" in caplog.text,
               what="the WARNING")
    wait_until(lambda: node.state.peers["s1"].match_length == 0, what="its old acknowledgements forgotten")
    s1.answer(s1.accept(probe))
    again = s1.next(AppendEntries, carries_entries)
    assert again.prev_length == 0 and bodies(again) == [b""] + [encode_entry(f"m{n}") for n in range(3)]
    s1.answer(s1.accept(again))
    wait_until(lambda: "s1 caught up: 3 messages in" in caplog.text, what="the primary to say so")


def test_stop_releases_the_appends_still_waiting(start_primary, raw_secondaries):
    node = start_primary()
    begin_run(raw_secondaries)
    waiting = proposed(node, "m", w=3)
    raw_secondaries[0].next(AppendEntries, carries_entries)
    node.stop()
    assert waiting.wait(5) and waiting.ended == STOPPING and waiting.acked_by == ["primary"]


def test_a_secondary_s_health_follows_its_silence_and_each_change_is_logged_once(
        start_primary, raw_secondaries, caplog):
    caplog.set_level(logging.INFO, logger="shared.node.node_io")
    node = start_primary(settings=replace(SETTINGS, suspect_after=4, unhealthy_after=8))
    state = wait_until(lambda: node.state.recovering and node.state, what="the recovery to begin")
    assert state.peers["s1"].health is Health.UNKNOWN, "not heard yet, not yet given up on"
    begin_run(raw_secondaries)
    s1 = raw_secondaries[0]

    def health() -> Health:
        return node.state.peers["s1"].health

    wait_until(lambda: health() is Health.UNHEALTHY, what="s1's silence to tell")
    s1.answer(s1.beaten(s1.next(Heartbeat), length=1))
    wait_until(lambda: health() is Health.HEALTHY, what="s1's answer to tell")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("s1 is")]
    assert lines[:3] == ["s1 is suspected: missed heartbeats", "s1 is unhealthy: missed heartbeats",
                         "s1 is healthy"]


def test_a_diverged_secondary_is_neither_written_to_nor_counted(start_primary, raw_secondaries, caplog):
    node = start_primary()
    begin_run(raw_secondaries)
    s1 = raw_secondaries[0]
    waiting = proposed(node, "m", w=2)
    sent = s1.next(AppendEntries, carries_entries)
    why = "it keeps the log of cluster another (5 entries), not ours"
    s1.answer(AppendReply("s1", sent.term, sent.seq, False, diverged=why, incarnation=s1.incarnation))
    wait_until(lambda: node.state.peers["s1"].health is Health.DIVERGED, what="s1 to be diverged")
    assert node.state.peers["s1"].diverged == why and node.state.available_nodes() == 2
    assert f"s1 is diverged: {why}" in caplog.text and "empty its DATA_DIR" in caplog.text
    assert proposed(node, "more").wait(5)
    assert s1.silent_for(0.3, where=carries_entries), "nothing is written to it"
    assert not waiting.acked_by, "its refusal counts for nothing"


def test_a_stall_of_the_primary_itself_makes_no_secondary_unhealthy(start_primary, raw_secondaries,
                                                                    monkeypatch):
    node = start_primary()
    begin_run(raw_secondaries)
    wait_until(lambda: {p.health for p in node.state.peers.values()} == {Health.HEALTHY},
               what="both secondaries healthy")
    real = time.monotonic
    # The process is paused for 100 s (a stopped container, a starved CPU):
    # the secondaries' silence meanwhile proves nothing about them.
    monkeypatch.setattr(time, "monotonic", lambda: real() + 100.0)
    node.wake()
    state = wait_until(lambda: node.state.at > real() + 50 and node.state, what="a pass after the pause")
    assert {p.health for p in state.peers.values()} == {Health.HEALTHY}
    assert state.available_nodes() == 3


def test_a_frame_over_the_limit_a_secondary_announced_waits_until_it_announces_more(
        start_primary, raw_secondaries, monkeypatch, caplog):
    # A filter of its own: another test's line must not hold this one back.
    monkeypatch.setattr(node_io.oversized_log, "filters", [RateLimitFilter(10.0)])
    node = start_primary()
    s1 = raw_secondaries[0]
    s1.envelope = frames.Envelope("http://s1:8000", 2000, "http://s1:8000")
    begin_run(raw_secondaries)
    assert proposed(node, "small").wait(5)
    small = s1.next(AppendEntries, carries_entries)
    s1.answer(s1.accept(small))
    assert proposed(node, "y" * 3000).wait(5)
    wait_until(lambda: "cannot send s1 a frame of" in caplog.text, what="the ERROR")
    assert "it accepts 2000; set the same MAX_MESSAGE_BYTES on every node" in caplog.text
    to_s2 = raw_secondaries[1].next(AppendEntries, lambda m: m.prev_length == 2)
    assert bodies(to_s2) == [encode_entry("y" * 3000)], "s2 takes it"
    # s1 is probed again once the frame is given up; restarted with a larger
    # MAX_MESSAGE_BYTES, it answers the probe saying so, and is sent the message.
    probe = s1.next(AppendEntries, lambda m: m.prev_length == 2)
    assert not probe.entries, "nothing over its limit went to s1"
    s1.envelope = frames.Envelope("http://s1:8000", 10_000, "http://s1:8000")
    s1.answer(s1.accept(probe))
    assert bodies(s1.next(AppendEntries, carries_entries)) == [encode_entry("y" * 3000)]


@pytest.mark.parametrize("raw_secondaries", ["tcp"], indirect=True)
def test_a_link_libzmq_ends_for_an_oversized_frame_is_reopened_with_one_warning(
        start_primary, raw_secondaries, caplog):
    node = start_primary()
    s1 = raw_secondaries[0]
    s1.envelope = frames.Envelope("http://s1:8000", 7_000_000, "http://s1:8000")
    begin_run(raw_secondaries)
    before = s1.connection
    limit = frame_limit(PrimaryConfig().max_body_bytes)
    # Over the primary's MAXMSGSIZE: libzmq ends that connection, and the
    # DEALER alone would never dial again.
    s1.answer(b"x" * (limit + 1))
    s1.next(Heartbeat, lambda _: s1.connection != before, timeout=10)
    waiting = proposed(node, "after", w=2)
    while not waiting.acked_by:  # it is probed again, then sent the entry
        frame = s1.receive()
        if isinstance(frame, AppendEntries):
            s1.answer(s1.accept(frame))
    assert waiting.wait(5) and waiting.acked_by == ["primary", "s1"]
    lines = [r.getMessage() for r in caplog.records if "reopening the link to s1" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"this node {limit} bytes, s1 7000000 bytes" in lines[0] and "MAX_MESSAGE_BYTES" in lines[0]


def test_an_append_whose_request_gave_up_before_node_io_took_it_appends_nothing(start_primary,
                                                                              raw_secondaries):
    node = start_primary()
    begin_run(raw_secondaries)
    gave_up = Proposal([encode_entry("late")], None, 1)
    assert not gave_up.wait(0)  # its request timed out before node-io got to it
    node.propose(gave_up)
    assert proposed(node, "next").wait(5)
    assert messages_of(node.log) == ["next"] and gave_up.first_id is None


class _GivesUpOnceTaken(Proposal):
    """An append whose request times out the moment node-io has given it its
    ids, before any pass counted who holds it (a fuzzer found this with a
    timeout of 61 µs: its 504 said that no node held it)."""

    def assign(self, *args, **kwargs) -> bool:
        taken = super().assign(*args, **kwargs)
        self.gave_up = not self.wait(0)
        return taken


def test_an_append_whose_request_gave_up_once_node_io_took_it_is_held_by_the_primary(start_primary,
                                                                                    raw_secondaries):
    node = start_primary()
    begin_run(raw_secondaries)
    late = _GivesUpOnceTaken([encode_entry("late")], None, 2)
    node.propose(late)
    wait_until(lambda: messages_of(node.log) == ["late"], what="the append in the log")
    assert late.gave_up and late.first_id == 0
    assert late.holders == ["primary"]  # what its 504 reports: acks 1, the primary


def test_w1_appends_numbered_as_they_are_queued_get_the_ids_the_log_gives_them(make_inprocess_cluster):
    """Numbered appends among keyed ones (which node-io numbers) from eight threads:
    every answer's id is where the log holds that message, and a local read and
    /health right after an answer show it."""
    cluster = make_inprocess_cluster()
    answers: list[tuple[list[str], dict]] = []

    def client(n: int) -> None:
        for i in range(60):
            messages = [f"c{n}-{i}"] if i % 3 else [f"c{n}-{i}a", f"c{n}-{i}b"]
            body = {"messages": messages, "w": 1}
            headers = {"Idempotency-Key": f"k{n}-{i}"} if i % 5 == 0 else {}
            answer = cluster.app.post_json("/messages", body, headers=headers)
            assert answer.status_int == 201
            assert cluster.app.get("/messages", {"from": answer.json["first_id"], "limit": 1}).json[
                "messages"] == messages[:1], "a local read right after the answer missed it"
            assert cluster.app.get("/health").json["length"] > answer.json["last_id"]
            answers.append((messages, answer.json))

    threads = [threading.Thread(target=client, args=(n,), name=f"client-{n}") for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = cluster.app.get("/messages").json["messages"]
    assert len(answers) == 480 and len(held) == sum(len(messages) for messages, _ in answers)
    for messages, answer in answers:
        assert held[answer["first_id"]:answer["last_id"] + 1] == messages
        assert answer["acked_by"] == ["primary"]


def test_an_append_answered_at_once_but_appended_elsewhere_stops_the_node(start_primary, raw_secondaries,
                                                                           caplog):
    node = start_primary()
    begin_run(raw_secondaries)
    misnumbered = Proposal([encode_entry("m")], None, 1)
    misnumbered.number(99, 99)  # not what the queue would have given it
    node.propose(misnumbered)
    wait_until(lambda: not node.running, what="the node to stop")
    assert any(r.levelno == logging.CRITICAL and "answered with id 99" in (r.exc_text or "")
               for r in caplog.records)
    assert messages_of(node.log) == []


#: Heartbeats too rare to drive a pass.
RARE_BEATS = replace(SETTINGS, heartbeat_interval=30.0, suspect_after=2, unhealthy_after=4)


def answer_until_quiet(node: NodeIo, secondaries: list[RawSecondary], quiet: float = 0.3) -> None:
    """Answer every frame until none comes for ``quiet`` seconds: then the primary
    has nothing in flight, and no timer of its core is due before a heartbeat."""
    while True:
        for secondary in secondaries:
            if secondary.router.poll(quiet * 1000):
                break
        else:
            return
        message = secondary.receive()
        if isinstance(message, AppendEntries):
            secondary.answer(secondary.accept(message))
        elif isinstance(message, Heartbeat):
            secondary.answer(secondary.beaten(message, node.log.length()))


def test_appends_answered_at_once_gather_and_go_to_the_secondaries_in_one_frame(
        start_primary, raw_secondaries, monkeypatch):
    """The first wakes node-io, which waits LINGER_S for more, then sends them
    all, though no heartbeat or answer is due to wake it again."""
    monkeypatch.setattr(proposals, "LINGER_S", 0.5)
    node = start_primary(settings=RARE_BEATS)
    begin_run(raw_secondaries)
    answer_until_quiet(node, raw_secondaries)
    answered = [Proposal([encode_entry(m)], None, 1) for m in ("a", "b", "c")]
    assert all(node.propose(proposal, at_once=True) for proposal in answered)
    for secondary in raw_secondaries:
        assert bodies(secondary.next(AppendEntries, carries_entries)) == [b'"a"', b'"b"', b'"c"']


def test_a_reader_does_not_wait_for_appends_answered_at_once_to_gather(
        start_primary, raw_secondaries, monkeypatch):
    monkeypatch.setattr(proposals, "LINGER_S", 60.0)
    node = start_primary(settings=RARE_BEATS)
    begin_run(raw_secondaries)
    answer_until_quiet(node, raw_secondaries)
    for message in ("a", "b"):
        assert node.propose(Proposal([encode_entry(message)], None, 1), at_once=True)
    # Gathering, node-io watches only its wake-up socket: the reader's wake must end that.
    assert raw_secondaries[0].silent_for(0.2), "sent before the gathering ended"
    assert node.showing_answers(timeout=10).length == 2, "the read waited out its timeout"
    assert messages_of(node.log) == ["a", "b"]


def test_while_appends_gather_the_answers_of_the_secondaries_wait_for_the_pass_that_takes_them(
        start_primary, raw_secondaries, monkeypatch):
    monkeypatch.setattr(proposals, "LINGER_S", 60.0)
    # No resend of "a" falls due meanwhile: that would end the gathering.
    monkeypatch.setattr(raft_progress, "MIN_RTO_S", 60.0)
    node = start_primary(settings=RARE_BEATS)
    begin_run(raw_secondaries)
    answer_until_quiet(node, raw_secondaries)
    assert node.propose(Proposal([encode_entry("a")], None, 1), at_once=True)
    assert node.showing_answers(timeout=10).length == 1  # a reader: "a" went out at once
    requests = [secondary.next(AppendEntries, carries_entries) for secondary in raw_secondaries]
    assert node.propose(Proposal([encode_entry("b")], None, 1), at_once=True)  # gathers for a minute
    # Answers that came with the wake-up would be read with it (a pass it did
    # not wake alone): they are sent once node-io has taken the wake-up.
    wait_until(lambda: not node.wake_pending, what="node-io woken by b, which it lets gather")
    for secondary, request in zip(raw_secondaries, requests):
        secondary.answer(secondary.accept(request))
    assert raw_secondaries[0].silent_for(0.3)  # a while for the answers to be read, were they
    assert [node.state.peers[s.name].match_length for s in raw_secondaries] == [0, 0]
    assert node.showing_answers(timeout=10).length == 2  # a reader ends the gathering
    wait_until(lambda: [node.state.peers[s.name].match_length for s in raw_secondaries] == [1, 1],
               what="the answers read with the pass that took b")


def test_neither_a_durable_primary_nor_a_failover_one_answers_before_node_io_took_the_append(
        start_primary, raw_secondaries, start_failover, tmp_path):
    (tmp_path / "fixed").mkdir()
    (tmp_path / "failover").mkdir()
    durable = start_primary(str(tmp_path / "fixed"))
    begin_run(raw_secondaries)
    assert not durable.propose(Proposal([encode_entry("a")], None, 1), at_once=True)
    node, peers = start_failover(caught_up_log(str(tmp_path / "failover")), stands_at_once=True)
    elect(peers["n2"])
    wait_until(lambda: node.state.is_primary, what="n1 to be elected")
    assert not node.propose(Proposal([encode_entry("b")], None, 1), at_once=True)


#: Messages a secondary that comes up late has to catch up on.
BACKLOG = 100_000


def test_a_late_secondary_receives_a_100k_backlog_in_order_in_seconds(make_inprocess_cluster):
    cluster = make_inprocess_cluster(names=("s1",), running=(), quorum=1)
    cluster.wait_recovered()
    backlog = [Proposal([encode_entry(f"message {n:06d} " + "x" * 80)], None, 1) for n in range(BACKLOG)]
    for proposal in backlog:
        cluster.node.propose(proposal)
    assert all(proposal.wait(30) for proposal in backlog)
    started = time.monotonic()
    s1 = cluster.start_secondary("s1")
    wait_until(lambda: s1.log.shown() == BACKLOG, 60, interval=0.05, what="the catch-up")
    elapsed = time.monotonic() - started
    assert document_bytes(s1.log) == document_bytes(cluster.log)
    assert elapsed < 30, f"catching up {BACKLOG} messages took {elapsed:.1f}s"


# -- a fixed secondary, written to by a HandMadePrimary -------------------------------


@pytest.fixture
def start_secondary(ctx):
    """Start a fixed secondary ``s1`` (SecondaryConfig settings as keywords);
    returns it, and a HandMadePrimary of term 1 on a connection of its own."""
    started: list[tuple[NodeIo, RawPeer]] = []

    def start(**config) -> tuple[NodeIo, HandMadePrimary]:
        secondary = SecondaryConfig(node_name="s1", replication_bind=f"inproc://s1-{uuid.uuid4().hex}",
                                    **config)
        node = NodeIo(ctx, node_settings(secondary, frame_limit(secondary.max_body_bytes)),
                      open_log("", "secondary", True, 1000), PLAIN)
        node.start()
        dealer = RawPeer(ctx, node.endpoint)
        started.append((node, dealer))
        return node, HandMadePrimary(dealer)

    yield start
    for node, dealer in started:
        dealer.close()
        node.stop()


def sent_ahead(primary: HandMadePrimary, prev_length: int, message: str) -> AppendEntries:
    """Send ``message`` at ``prev_length`` without waiting for the answer, as a
    primary streams; its log grows as if the answer had come."""
    request = primary.append_entries(prev_length, message)
    primary.log = primary.log[:prev_length] + list(request.entries)
    primary.peer.send(request)
    return request


def test_a_secondary_stores_what_its_primary_sends_and_answers_with_its_incarnation(start_secondary):
    node, primary = start_secondary()
    answer = primary.append(0, "a", "b", "c")
    assert (answer.sender, answer.term, answer.success, answer.match_length) == ("s1", 1, True, 3)
    assert answer.incarnation == node.log.incarnation
    assert messages_of(node.log) == ["a", "b", "c"], "written before it was answered"
    wait_until(lambda: (node.state.primary, node.state.term) == ("primary", 1), what="the state published")


def test_a_resent_entry_is_answered_again_and_stored_once(start_secondary):
    node, primary = start_secondary()
    primary.append(0, "a")
    again = primary.append(0, "a")
    assert again.success and again.match_length == 1
    assert messages_of(node.log) == ["a"]
    assert (node.received, node.duplicates) == (2, 1)


def test_entries_past_the_end_of_the_log_are_refused_and_nothing_is_held(start_secondary):
    node, primary = start_secondary()
    primary.append(0, "a")
    past = primary.append(3, "d")
    assert not past.success and past.retry_length == 1
    assert messages_of(node.log) == ["a"] and node.waiting_count == 0


def test_replication_delay_holds_entries_back_in_order_but_answers_heartbeats_at_once(start_secondary):
    node, primary = start_secondary(replication_delay=DelayRange(0.5, 0.5))
    started = time.monotonic()
    first = sent_ahead(primary, 0, "a")
    primary.peer.send(replace(first, seq=first.seq + 100))  # a resend, while the first is held back
    second = sent_ahead(primary, 1, "b")
    beat = primary.peer.request(Heartbeat("primary", 1, 999, 0))
    assert isinstance(beat, HeartbeatReply) and beat.length == 0
    assert time.monotonic() - started < 0.4, "a heartbeat is not held back behind entries"
    assert node.log.shown() == 0 and node.waiting_count == 2
    answers = [primary.peer.receive()[0] for _ in range(2)]
    elapsed = time.monotonic() - started
    assert [(a.seq, a.success, a.match_length) for a in answers] == [(first.seq, True, 1),
                                                                      (second.seq, True, 2)]
    assert 0.45 <= elapsed < 0.95, "each held back once, on its own clock"
    assert primary.peer.silent_for(0.3), "the resend of a held entry gets no answer of its own"
    assert messages_of(node.log) == ["a", "b"] and node.waiting_count == 0



def test_a_forger_s_frame_held_back_does_not_make_the_primary_s_look_held_already(start_secondary, ctx):
    """REPLICATION_DELAY drops a resend of what is held back already. A frame
    under another name, claiming to reach past everything, held back until
    the core refuses it, must not make the primary's own frames look like
    resends: a forger repeating it once a delay would keep the secondary
    from taking any entry."""
    node, primary = start_secondary(replication_delay=DelayRange(0.3, 0.3))
    forger = RawPeer(ctx, node.endpoint)
    try:
        forger.send(AppendEntries("forger", MAX_TERM + 1, 1, 2**53 - 2, 1, 0,
                                  (Entry(1, encode_entry("x"), 1),), 0))
        wait_until(lambda: node.waiting_count == 1, what="the forged frame held back")
        answer = primary.append(0, "a")
        assert answer.success and answer.match_length == 1
        assert messages_of(node.log) == ["a"]
        assert node.state.bad_frames == 1, "the forged frame, refused once its delay was over"
    finally:
        forger.close()

def test_random_delays_never_reorder_what_is_stored(start_secondary):
    node, primary = start_secondary(replication_delay=DelayRange(0.0, 0.2))
    requests = [sent_ahead(primary, n, f"m{n}") for n in range(20)]
    answers = [primary.peer.receive()[0] for _ in requests]
    assert [(a.seq, a.success, a.match_length) for a in answers] == [
        (r.seq, True, n + 1) for n, r in enumerate(requests)]
    assert messages_of(node.log) == [f"m{n}" for n in range(20)]


def test_a_primary_of_another_cluster_is_told_so_and_changes_nothing(start_secondary):
    node, primary = start_secondary()
    ours = HandMadePrimary(primary.peer, cluster="ours")
    ours.append(0, "kept")
    theirs = HandMadePrimary(primary.peer, name="intruder", term=7, cluster="theirs")
    refused = theirs.append(0, "INJECTED")
    assert not refused.success and "it keeps the log of cluster ours" in refused.diverged
    assert messages_of(node.log) == ["kept"]
    state = wait_until(lambda: node.state.bad_frames == 1 and node.state, what="the refusal counted")
    assert (state.term, state.primary, state.cluster) == (1, "primary", "ours")


def test_a_recovering_primary_is_told_what_the_secondary_holds(start_secondary):
    node, primary = start_secondary()
    HandMadePrimary(primary.peer, cluster="c1").append(0, "a", "b", commit=2)
    held = primary.peer.request(StateRequest("primary", 0))
    assert held == StateReply("s1", 1, 1, 2, LogStart(), "c1")
    fetched = primary.peer.request(FetchRequest("primary", 0, 1))
    assert isinstance(fetched, FetchReply) and fetched.prev_length == 1
    assert bodies(fetched) == [encode_entry("b")]
    assert node.state.term == 1, "a question changes nothing"


def test_every_page_of_a_fetch_goes_back_on_the_connection_the_fetch_came_on(start_secondary, monkeypatch,
                                                                            ctx):
    # Pages after the first are cut at later ticks, with no request to answer:
    # they must find the restarted primary on its new connection, not on the
    # one its previous life's frames came on.
    monkeypatch.setattr(frames, "MAX_BATCH_BYTES", 1)  # a page an entry
    node, primary = start_secondary()
    HandMadePrimary(primary.peer, cluster="c1").append(0, "a", "b", "c", commit=3)
    restarted = RawPeer(ctx, node.endpoint)
    try:
        restarted.send(FetchRequest("primary", 0, 0, 0, 4))
        pages = [restarted.receive()[0] for _ in range(4)]
    finally:
        restarted.close()
    assert [(page.prev_length, bodies(page)) for page in pages] == [
        (0, [encode_entry("a")]), (1, [encode_entry("b")]), (2, [encode_entry("c")]), (3, [])]


def test_a_refused_fetch_does_not_take_the_pages_of_the_fetch_being_answered(start_secondary, monkeypatch,
                                                                             ctx):
    # A forger (plain mode) names the recovering primary in a FETCH the core
    # refuses (a term it cannot have): the pages still to come are the
    # primary's, and go where its fetch came from.
    monkeypatch.setattr(frames, "MAX_BATCH_BYTES", 1)  # a page an entry
    node, primary = start_secondary()
    HandMadePrimary(primary.peer, cluster="c1").append(0, *(f"m{n}" for n in range(16)), commit=16)
    fetcher, forger = RawPeer(ctx, node.endpoint), RawPeer(ctx, node.endpoint)
    try:
        for peer in (fetcher, forger):  # both connected before the fetch
            assert isinstance(peer.request(StateRequest("primary", 0)), StateReply)
        fetcher.send(FetchRequest("primary", 0, 0, 0, 16))
        forger.send(FetchRequest("primary", 1 << 40, 0, 0, 1))
        pages = [fetcher.receive()[0] for _ in range(16)]
        assert [page.prev_length for page in pages] == list(range(16))
        assert forger.silent_for(0.2)
        wait_until(lambda: node.state.bad_frames == 1, what="the forged fetch counted as a bad frame")
    finally:
        fetcher.close()
        forger.close()


def test_junk_is_dropped_with_one_warning_and_the_next_frame_is_taken(start_secondary, caplog):
    node, primary = start_secondary()
    beat = frames.encode(Heartbeat("primary", 1, 5, 0), ENVELOPE)
    junk = [b"REPLICATE", b'REPLICATE {bad json\n"x"', b"EXPLODE {}", beat + b'\n"an entry"', b"[" * 1000]
    for frame in junk:
        primary.peer.send(frame)
    primary.peer.send_parts(beat, beat)  # a message is one frame
    assert primary.append(0, "fine").success
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.threadName == "receiver-io"]
    assert len(warnings) == 1, "one line per peer per interval"
    assert "dropped a bad frame" in warnings[0].getMessage()
    assert messages_of(node.log) == ["fine"]
    wait_until(lambda: node.state.bad_frames == len(junk) + 1, what="every bad frame counted")


def test_fault_injection_drops_the_answer_but_keeps_the_entry(start_secondary):
    node, primary = start_secondary(drop_ack_fraction=1.0)
    sent_ahead(primary, 0, "quiet")
    assert primary.peer.silent_for(0.3)
    assert messages_of(node.log) == ["quiet"]


def test_a_replication_bind_that_fails_is_reported_by_start(ctx):
    holder = ctx.socket(zmq.ROUTER)
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    config = SecondaryConfig(node_name="s1", replication_bind=f"tcp://127.0.0.1:{port}")
    node = NodeIo(ctx, node_settings(config, frame_limit(config.max_body_bytes)),
                  open_log("", "secondary", True, 1000), PLAIN)
    try:
        with pytest.raises(OSError, match="REPLICATION_BIND"):
            node.start()
    finally:
        node.stop()
        holder.close()


def test_every_answer_says_where_the_secondary_is_and_the_largest_frame_it_takes(start_secondary):
    node, primary = start_secondary(max_body_bytes=1000)
    sent_ahead(primary, 0, "a")
    answer, envelope = primary.peer.receive()
    assert answer.success
    assert envelope == frames.Envelope("http://s1:8000", frame_limit(1000), "http://s1:8000")


def test_an_answer_goes_back_on_the_connection_its_request_came_on(start_secondary, ctx):
    node, primary = start_secondary()
    primary.append(0, "a")
    forger = RawPeer(ctx, node.endpoint)
    try:
        for term in (0, 1):  # in the primary's name: a term that is over, then its own
            answer = forger.request(Heartbeat("primary", term, 4242 + term, 0))
            assert isinstance(answer, HeartbeatReply) and answer.seq == 4242 + term
        assert primary.peer.silent_for(0.2), "nothing of it went to the primary's connection"
        assert primary.append(1, "b").success, "the primary's own requests are still answered to it"
        assert forger.silent_for(0.2)
    finally:
        forger.close()


def test_a_linearizable_read_waits_until_this_node_has_committed_the_read_index(start_secondary):
    node, primary = start_secondary()
    primary.append(0, "a", commit=1)
    wait = ReadIndexWait()
    node.read_index(wait)
    asked, _ = primary.peer.receive()
    assert isinstance(asked, ReadIndexRequest) and (asked.sender, asked.term) == ("s1", 1)
    primary.peer.send(ReadIndexReply("primary", 1, asked.request, 2))  # the primary committed 2
    primary.peer.request(Heartbeat("primary", 1, 777, 1))  # answered once the reply was taken
    assert wait.index is None, "this node has committed 1 entry of the 2"
    primary.append(1, "b", commit=2)
    assert wait.wait(5) and (wait.index, wait.committed_id) == (2, 2)


def test_reads_every_client_gave_up_on_are_forgotten(start_secondary):
    """A read index the primary never answers, and one this node never commits,
    are held only as long as their clients wait."""
    node, primary = start_secondary()
    primary.append(0, "a", commit=1)
    unanswered, uncommitted = ReadIndexWait(), ReadIndexWait()
    node.read_index(unanswered)
    primary.peer.receive()  # and never answered
    node.read_index(uncommitted)
    asked, _ = primary.peer.receive()
    primary.peer.send(ReadIndexReply("primary", 1, asked.request, 5))  # more than it will ever hold
    primary.peer.request(Heartbeat("primary", 1, 777, 1))  # answered once the reply was taken
    assert node.reads_held == 2
    assert not unanswered.wait(0.01) and not uncommitted.wait(0.01)
    wait_until(lambda: node.reads_held == 0, what="the abandoned reads forgotten")


# -- a failover node, dialing ROUTERs in its peers' places -----------------------------


@pytest.fixture
def start_failover(ctx):
    """Start failover node ``n1`` on tcp://127.0.0.1:0, its peers n2 and n3 raw
    ROUTERs; returns it and them. Its election timeout is long: it stands
    only when told to stand at once."""
    started: list[tuple[NodeIo, list[RawSecondary]]] = []

    def start(node_log: NodeLog | None = None, stands_at_once: bool = False) -> tuple[NodeIo, dict]:
        peers = {name: RawSecondary(ctx, name, tcp=True) for name in ("n2", "n3")}
        config = replace(
            FailoverConfig(), node_name="n1", replication_bind="tcp://127.0.0.1:0",
            # n1's own endpoint is where the others would dial it: never dialled here.
            peers=(Peer("n1", "tcp://127.0.0.1:1"), *(Peer(name, p.endpoint) for name, p in peers.items())),
            election_timeout=5.0, heartbeat_interval=0.05, advertised_url="http://n1:8000",
            public_url="http://n1:8000")
        node = NodeIo(ctx, config.node_settings(stands_at_once, frame_limit(config.max_body_bytes)),
                      node_log or open_log("", "failover", True, config.idempotency_keys), PLAIN)
        started.append((node, list(peers.values())))
        node.start()
        return node, peers

    yield start
    for node, peers in started:
        node.stop()
        for peer in peers:
            peer.close()


def caught_up_log(data_dir: str) -> NodeLog:
    """A log its node may stand with at once: not new, and caught up, as after a clean stop."""
    first = open_log(data_dir, "failover", True, 100)
    first.stage(Ready(HardState(caught_up=True), Unsaved(), 0, ()))
    first.persist()
    first.close()
    return open_log(data_dir, "failover", True, 100)


def elect(n2: RawSecondary) -> None:
    """Grant the node's pre-vote and vote as n2: with its own, a majority of the three."""
    asked = n2.next(PreVoteRequest)
    n2.answer(VoteReply(n2.name, asked.term, True, pre_vote=True))
    asked = n2.next(VoteRequest)
    n2.answer(VoteReply(n2.name, asked.term, True, pre_vote=False))


def test_what_a_frame_says_of_its_sender_is_believed_only_once_the_core_accepted_the_frame(
        start_failover, ctx):
    node, peers = start_failover()
    peers["n2"].next(StateRequest)  # n1 asks what n2 holds: its link to n2 is up
    n2 = RawPeer(ctx, node.endpoint)
    try:
        real = frames.Envelope("http://n2:8000", 64 << 20, "http://n2.example:8000")
        assert isinstance(n2.request(Heartbeat("n2", 5, 1, 0), real), HeartbeatReply)
        wait_until(lambda: (node.state.primary, node.state.primary_url) == ("n2", "http://n2:8000"),
                   what="n1 to follow n2")
        forged = frames.Envelope("http://forger.example:1", 100, "http://forger.example:1")
        stale = n2.request(Heartbeat("n2", 4, 2, 0), forged)  # a term that is over
        answered_at = time.monotonic()
        assert isinstance(stale, HeartbeatReply) and stale.term == 5
        wait_until(lambda: node.state.at > answered_at, what="a pass after the stale frame")
        assert node.state.primary_url == "http://n2:8000", "appends are still forwarded to n2"
        assert node.state.peers["n2"].url == "http://n2.example:8000"
        # Nor the frame limit: a read index request to n2 (well over 100 bytes) still goes.
        wait = ReadIndexWait()
        node.read_index(wait)
        asked = peers["n2"].next(ReadIndexRequest)
        peers["n2"].answer(ReadIndexReply("n2", 5, asked.request, 0))
        assert wait.wait(5) and wait.index == 0
    finally:
        n2.close()


def test_proposals_are_settled_by_match_lengths_and_released_as_stepped_down(start_failover, tmp_path):
    node, peers = start_failover(caught_up_log(str(tmp_path)), stands_at_once=True)
    n2 = peers["n2"]
    elect(n2)
    n2.answer(n2.accept(n2.next(AppendEntries)))  # the probe
    n2.answer(n2.accept(n2.next(AppendEntries, carries_entries)))  # the term's no-op
    majority = proposed(node, "m1", w=2)
    n2.answer(n2.accept(n2.next(AppendEntries, carries_entries)))
    assert majority.wait(5) and majority.acked_by == ["n1", "n2"] and majority.ended is None
    everyone = proposed(node, "m2", w=3)
    sent = n2.next(AppendEntries, carries_entries)
    n2.answer(n2.accept(sent))
    wait_until(lambda: everyone.holders == ["n1", "n2"], what="n2's match to count")
    n2.answer(n2.accept(sent, term=sent.term + 1))  # n2 has moved on to a later term
    assert everyone.wait(5) and everyone.ended == STEPPED_DOWN and everyone.acked_by == ["n1", "n2"]
    wait_until(lambda: not node.state.is_primary and node.state.term == 2, what="n1 to step down")


def test_a_primary_that_stops_first_hands_its_role_to_an_up_to_date_secondary(start_failover, tmp_path):
    node, peers = start_failover(caught_up_log(str(tmp_path)), stands_at_once=True)
    n2 = peers["n2"]
    elect(n2)
    n2.answer(n2.accept(n2.next(AppendEntries)))  # the probe
    n2.answer(n2.accept(n2.next(AppendEntries, carries_entries)))  # the no-op: n2 holds it all
    started = time.monotonic()
    stopping = threading.Thread(target=node.stop, name="test-stop")
    stopping.start()
    told = n2.next(TimeoutNow)
    assert told.term == 1
    n2.answer(VoteRequest("n2", 2, 1, 1, transfer=True))  # n2 stands at once, as told
    vote = n2.next(VoteReply)
    assert vote.granted and vote.term == 2
    stopping.join(5)
    assert not stopping.is_alive() and time.monotonic() - started < 2, "stopped once it handed over"


# -- a failed write ----------------------------------------------------------------------


def full_disk() -> None:
    raise StoreError("No space left on device")


def test_a_fixed_primary_that_cannot_write_answers_503_and_resumes_once_writes_succeed(
        make_inprocess_cluster, monkeypatch, tmp_path):
    cluster = make_inprocess_cluster(data_dir=str(tmp_path))  # a disk, which can fill up
    assert cluster.post({"message": "before", "w": 1}).status_int == 201
    monkeypatch.setattr(cluster.log, "persist", full_disk)
    unwritten = cluster.post({"messages": ["a", "b"], "w": 1, "timeout": 5})
    assert unwritten.status_int == 503 and unwritten.headers["Retry-After"] == "1"
    assert (unwritten.json["first_id"], unwritten.json["last_id"]) == (1, 2)
    assert unwritten.json["error"].startswith("storage unavailable") and "No space left" in unwritten.text
    refused = cluster.post({"message": "c", "w": 1, "timeout": 5})
    assert refused.status_int == 503 and "id" not in refused.json
    assert refused.json["error"].startswith("storage unavailable") and "nothing was appended" in refused.text
    assert cluster.node.running and cluster.app.get("/messages").json["messages"] == ["before"]
    monkeypatch.undo()  # space again: the next pass writes what was staged
    wait_until(lambda: cluster.node.state.storage_error is None, what="writes to succeed again")
    assert cluster.post({"message": "d", "w": 3}).status_int == 201
    assert cluster.app.get("/messages").json["messages"] == ["before", "a", "b", "d"]


def test_a_failover_node_that_cannot_write_stops_without_answering(start_failover, ctx, monkeypatch, caplog):
    node, _ = start_failover()
    monkeypatch.setattr(node.log, "persist", full_disk)
    n2 = RawPeer(ctx, node.endpoint)
    try:
        n2.send(Heartbeat("n2", 3, 1, 0))  # a new term: written before anything is answered
        wait_until(lambda: not node.running, what="n1 to stop")
        assert n2.silent_for(0.1)
        assert any(r.levelno == logging.CRITICAL and "cannot write the log" in r.getMessage()
                   for r in caplog.records)
    finally:
        n2.close()


# -- found by review ----------------------------------------------------------------------


def test_recovered_is_not_set_while_a_fixed_primary_still_recovers(make_inprocess_cluster):
    """Appends wait on ``recovered``; set before the recovery began, they would spin."""
    cluster = make_inprocess_cluster(running=())  # nobody answers: recovery lasts RECOVERY_TIMEOUT
    assert cluster.node.state.recovering
    assert not cluster.node.recovered.is_set()


def test_an_append_waiting_for_recovery_does_not_burn_a_cpu(make_inprocess_cluster):
    cluster = make_inprocess_cluster(running=(), quorum=1)
    assert cluster.node.state.recovering
    cpu, wall = time.process_time(), time.monotonic()
    cluster.post({"message": "m", "w": 1})  # waits about 0.5 s for the recovery to end
    used, waited = time.process_time() - cpu, time.monotonic() - wall
    assert waited > 0.3 and used < 0.5 * waited, f"{used:.2f}s of CPU in {waited:.2f}s"


def test_a_diverged_secondary_that_restarts_empty_is_written_to_again(start_primary, raw_secondaries):
    """The ERROR about a diverged secondary says to empty its DATA_DIR and restart
    it: its new life must be probed again, not left alone for good."""
    node = start_primary()
    begin_run(raw_secondaries)
    s1 = raw_secondaries[0]
    proposed(node, "m", w=1).wait(5)
    sent = s1.next(AppendEntries, carries_entries)
    s1.answer(AppendReply("s1", sent.term, sent.seq, False, diverged="it keeps the log of cluster x",
                          incarnation=s1.incarnation))
    wait_until(lambda: node.state.peers["s1"].health is Health.DIVERGED)
    s1.incarnation = uuid.uuid4().hex  # emptied its DATA_DIR, as the ERROR advised, and restarted
    s1.answer(s1.beaten(s1.next(Heartbeat), length=0, caught_up=False))
    probe = s1.next(AppendEntries, timeout=2)
    assert probe.prev_length == 0


def test_fault_drop_acks_still_answers_heartbeats(start_secondary):
    """FAULT_DROP_ACKS drops ACKs (AppendReply) only: the secondary looks slow to
    acknowledge, not dead."""
    node, primary = start_secondary(drop_ack_fraction=1.0)
    answer = primary.peer.request(Heartbeat("primary", 1, 1, 0), timeout=1.0)
    assert isinstance(answer, HeartbeatReply)



def test_only_the_cluster_s_members_are_noted_as_heard():
    """Plain mode: a frame may claim any name. Noting each name heard would let
    a forger grow the node's memory by one entry a frame, without bound."""
    settings = NodeSettings("n1", Mode.ELECTED, ("n1", "n2", "n3"), (), None, 1.0, 0.1, 1 << 20,
                            "http://n1:8000", "http://n1:8000")
    watch = PeerWatch(settings, open_log("", "failover", True, 100))
    for name in ("n2", "n1", "forger 1", "forger 2"):
        watch.heard(name, 5.0)
    heard = [watch.heard_at(name) for name in ("n2", "n3", "n1", "forger 1", "forger 2")]
    assert heard == [5.0, None, None, None, None]
