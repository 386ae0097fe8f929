"""shared.consensus.raft rule by rule, each node driven by hand.

Every test feeds one node the messages another node would send and looks at
the Ready it returns (applied to its disk as a shell would, by HandNode).
Each asserts what would fail if its rule broke; where a rule changed on
purpose with the rewritten core, the test's docstring names the change.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.consensus import raft, raft_recovery
from shared.consensus.raft import (
    MAX_TERM, MAX_TERM_JUMP, AppendEntries, AppendReply, Entry, HardState, Mode, NotPrimary,
    PreVoteRequest, RaftNode, Refused, Role, VoteReply, VoteRequest,
)
from shared.consensus.raft_log import KeyRecord, LogStart, body_digest
from shared.consensus.raft_messages import (
    MAX_FETCH_PAGES, FetchReply, FetchRequest, Heartbeat, HeartbeatReply, InstallSnapshot, ReadIndexReply,
    ReadIndexRequest, SnapshotReply, StateReply, StateRequest, TimeoutNow,
)
from tests.support.raft_sim import (
    ELECTION_TIMEOUT, HEARTBEAT_INTERVAL, digest_of, elect, message, new_node, sent,
)

X, Y, Z = message(1, "x"), message(1, "y"), message(1, "z")


def vote_request(sender, term, last_log_term=0, log_length=0):
    return VoteRequest(sender, term, last_log_term, log_length)


def append(sender, term, prev=(), entries=(), commit=0, seq=1, **fields):
    """An AppendEntries of ``entries`` after the log ``prev`` (its entries, as the primary holds them)."""
    prev_term = prev[-1].term if prev else 0
    return AppendEntries(sender, term, seq, len(prev), prev_term, digest_of(prev), tuple(entries), commit,
                         **fields)


def granted(ready) -> list[bool]:
    return [reply.granted for _, reply in sent(ready, VoteReply)]


def frames_to(ready, peer: str) -> list[AppendEntries]:
    return [m for to, m in sent(ready, AppendEntries) if to == peer]


def success(primary, peer: str, match_length: int, now: float, seq: int | None = None, **fields):
    """``peer`` answers the last frame the primary sent it (or ``seq``) with a match."""
    seq = seq if seq is not None else primary.progress()[peer].flights[-1].seq
    return primary.step(AppendReply(peer, primary.term, seq, True, match_length=match_length, **fields), now)


def deliver(nodes: dict, messages, now: float, before=lambda to, message: None) -> None:
    """Delivers ``messages`` ((to, message) pairs) at once, and every message their
    answers send, among ``nodes`` (name -> node); those to any other node are
    lost. ``before`` sees each message before it is delivered."""
    queue = list(messages)
    while queue:
        to, sent_message = queue.pop(0)
        if to in nodes:
            before(to, sent_message)
            queue += nodes[to].step(sent_message, now).messages


def run_together(nodes: dict, until, now: float = 0.0, within: float = 20 * ELECTION_TIMEOUT) -> float:
    """Ticks ``nodes`` every heartbeat interval, delivering at once all they send,
    until ``until()``; returns the time then (fails after ``within``)."""
    deadline = now + within
    while not until():
        assert now < deadline, "not within the time given"
        for node in nodes.values():
            deliver(nodes, node.tick(now).messages, now)
        now += HEARTBEAT_INTERVAL
    return now


# -- Votes -----------------------------------------------------------------------

def test_one_vote_per_term():
    node = new_node("c")
    first = node.step(vote_request("a", 1), 0.0)
    again = node.step(vote_request("a", 1), 0.0)
    other = node.step(vote_request("b", 1), 0.0)
    assert granted(first) + granted(again) + granted(other) == [True, True, False]
    assert node.voted_for == "a"


def test_a_vote_is_refused_to_a_less_up_to_date_log():
    node = new_node("c", hard_state=HardState(2), entries=(message(1, "x"), message(2, "y")))
    older_last_term = node.step(vote_request("a", 3, last_log_term=1, log_length=5), 0.0)
    shorter = node.step(vote_request("b", 3, last_log_term=2, log_length=1), 0.0)
    assert granted(older_last_term) + granted(shorter) == [False, False]
    assert granted(node.step(vote_request("b", 3, last_log_term=2, log_length=2), 0.0)) == [True]


def test_a_vote_is_persisted_in_the_ready_that_sends_it():
    ready = new_node("c").step(vote_request("a", 4), 0.0)
    assert ready.hard_state == HardState(4, "a")
    assert ready.messages == (("a", VoteReply("c", 4, granted=True, pre_vote=False)),)


def test_a_pre_vote_changes_no_term_and_records_no_vote():
    node = new_node("c", hard_state=HardState(3, "b"))
    ready = node.step(PreVoteRequest("a", 4, 0, 0), 0.0)
    assert ready.messages == (("a", VoteReply("c", 4, granted=True, pre_vote=True)),)
    assert (ready.hard_state, node.term, node.voted_for) == (None, 3, "b")


def test_a_node_that_hears_from_its_primary_refuses_votes_and_keeps_its_term():
    node = new_node("c")
    node.step(Heartbeat("a", 1, 1, 0), 1.0)
    for request in (PreVoteRequest("b", 2, 5, 9), vote_request("b", 2, 5, 9)):
        ready = node.step(request, 1.0 + ELECTION_TIMEOUT / 2)
        assert granted(ready) == [False] and node.term == 1
    assert granted(node.step(vote_request("b", 2, 5, 9), 1.0 + ELECTION_TIMEOUT)) == [True]


def test_a_restarted_node_keeps_its_term_vote_and_log_but_learns_the_commit_again():
    node = new_node("c", hard_state=HardState(4, "b"), entries=(message(3, "x"),))
    assert (node.term, node.voted_for, node.entries, node.commit_length) == (4, "b", (message(3, "x"),), 0)
    assert granted(node.step(vote_request("a", 4, 9, 9), 0.0)) == [False]


def test_a_node_that_stands_at_once_starts_its_ballot_on_the_first_tick():
    node = new_node("a", stands_at_once=True)
    ready = node.tick(0.0)
    assert node.role is Role.PRE_CANDIDATE
    assert {to for to, _ in sent(ready, PreVoteRequest)} == {"b", "c"}
    assert new_node("b").tick(0.0).messages == ()  # the others wait for their timer
    again = node.tick(HEARTBEAT_INTERVAL)  # its peers may not have been listening
    assert {to for to, _ in sent(again, PreVoteRequest)} == {"b", "c"} and node.term == 0


def test_a_node_back_in_a_cluster_stands_within_two_fifths_of_a_timeout_and_a_new_clusters_waits_one():
    """A whole cluster restarted elects soon; on a new cluster the node that
    stands at once must win, so the others wait a whole timeout, as Raft's do."""
    back = new_node("b", hard_state=HardState(3))
    back.tick(0.0)
    assert sent(back.tick(2 * ELECTION_TIMEOUT / 5), PreVoteRequest)
    new = new_node("b")
    new.tick(0.0)
    assert not sent(new.tick(0.99 * ELECTION_TIMEOUT), PreVoteRequest)
    assert sent(new.tick(2 * ELECTION_TIMEOUT), PreVoteRequest)


def test_a_ballot_asks_a_peer_again_as_soon_as_its_connection_comes_up():
    """A fresh cluster's first node stands before its peers listen: its request
    goes to a peer as its link comes up, not at its next try a heartbeat later,
    where another node's own first ballot could come first."""
    node = new_node("a", stands_at_once=True)
    ballot = dict(sent(node.tick(0.0), PreVoteRequest))["b"]
    assert sent(node.peer_connected("b", 0.01), PreVoteRequest) == [("b", ballot)]
    node.step(VoteReply("b", 1, granted=True, pre_vote=True), 0.02)
    assert node.role is Role.CANDIDATE
    vote = dict(sent(node.peer_connected("c", 0.03), VoteRequest))["c"]
    assert vote.term == node.term == 1
    node.step(VoteReply("b", 1, granted=True, pre_vote=False), 0.04)
    assert node.role is Role.PRIMARY and sent(node.peer_connected("c", 0.05), VoteRequest) == []


def test_a_candidate_stands_above_its_vote_floor():
    """It may have voted in any term up to its floor before it lost its disk:
    it asks, and stands, in the term after it, not after its own term."""
    node = new_node("c", hard_state=HardState(3, vote_floor=7))
    node.tick(0.0)
    ready = node.tick(3 * ELECTION_TIMEOUT)
    assert {m.term for _, m in sent(ready, PreVoteRequest)} == {8}
    ready = node.step(VoteReply("a", 8, granted=True, pre_vote=True), 3 * ELECTION_TIMEOUT)
    assert (node.role, node.term, node.voted_for) == (Role.CANDIDATE, 8, "c")
    assert {m.term for _, m in sent(ready, VoteRequest)} == {8} and ready.hard_state.term == 8


def test_a_single_node_elects_itself_and_commits_alone():
    node = new_node("a", peers=("a",))
    node.tick(0.0)
    ready = node.tick(2 * ELECTION_TIMEOUT)
    assert (node.role, node.term, ready.committed) == (Role.PRIMARY, 1, 1)
    assert node.propose([message(0, "p")]).committed == 2


# -- Terms and roles -----------------------------------------------------------------

def test_a_new_primary_appends_a_no_op_of_its_term_and_sends_it():
    """Changed: it is sent once a secondary answers the primary's first probe,
    which carries no entries (flow control, below)."""
    primary = new_node("a")
    ready, now = elect(primary)
    assert ready.log.entries == [Entry(1)]
    assert {(to, m.prev_length, m.entries) for to, m in sent(ready, AppendEntries)} == {
        ("b", 0, ()), ("c", 0, ())}
    assert [f.entries for f in frames_to(success(primary, "b", 0, now), "b")] == [(Entry(1),)]


def test_a_primary_steps_down_on_a_higher_term():
    node = new_node("a")
    _, now = elect(node)
    ready = node.step(AppendReply("b", 7, 1, success=False), now)
    assert (node.role, node.term, node.primary) == (Role.SECONDARY, 7, None)
    assert ready.hard_state == HardState(7, None)


def test_check_quorum_steps_down_a_primary_cut_off_for_an_election_timeout():
    node = new_node("a")
    _, elected_at = elect(node)
    node.tick(elected_at + 0.9 * ELECTION_TIMEOUT)
    assert node.role is Role.PRIMARY
    node.tick(elected_at + ELECTION_TIMEOUT)
    assert node.role is Role.SECONDARY and node.term == 1


def test_propose_appends_on_the_primary_and_is_refused_elsewhere():
    primary, secondary = new_node("a"), new_node("b")
    _, now = elect(primary)
    secondary.step(Heartbeat("a", 1, 1, 0), now)
    ready = primary.propose([message(0, "p"), message(0, "q")], now)
    assert ready.proposed == range(1, 3) and ready.log.entries == [message(1, "p"), message(1, "q")]
    with pytest.raises(NotPrimary) as refused:
        secondary.propose([message(0, "p")], now)
    assert refused.value.primary == "a"


# -- Commit ---------------------------------------------------------------------------

class CountsReplicasOfOlderTerms(RaftNode):
    def _may_commit(self, length):
        return True


def test_an_older_terms_entry_is_committed_only_with_one_of_the_current_term():
    node = new_node("a", hard_state=HardState(1), entries=(message(1, "old"),))
    _, now = elect(node)  # term 2; its no-op at index 1
    assert success(node, "b", 1, now).committed == 0
    assert success(node, "b", 2, now).committed == 2


def test_breaking_that_rule_commits_the_older_entry_by_counting():
    node = new_node("a", hard_state=HardState(1), entries=(message(1, "old"),),
                    node_class=CountsReplicasOfOlderTerms)
    _, now = elect(node)
    assert success(node, "b", 1, now).committed == 1


def test_a_secondary_commits_only_what_it_has_checked_against_the_primary():
    node = new_node("c", hard_state=HardState(1), entries=(X, message(1, "stale")))
    ready = node.step(append("a", 2, prev=(X,), commit=5), 0.0)
    assert ready.committed == 1 and sent(ready, AppendReply)[0][1].match_length == 1


def test_a_heartbeat_commits_only_what_this_primary_matched_in_this_life():
    """The review's scenario (FSYNC=off): c held X of term 1 at [1, 3),
    uncommitted; a, primary of term 2, wrote its own entries there and c
    acknowledged them (a's match for c is 3), but a power cut took that write,
    and c restarted holding X. Until c's first reply, a's heartbeat (sent at
    once on the new connection) carries commit 3: had c committed X, a's
    entries would have been refused for ever as contradicting them."""
    first, x, y = Entry(1), message(1, "x1"), message(1, "x2")
    mine = (message(2, "a1"), message(2, "a2"))
    c = new_node("c", hard_state=HardState(2, caught_up=False), entries=(first, x, y))
    assert c.step(Heartbeat("a", 2, 1, 3), 0.0).committed == 0
    ready = c.step(append("a", 2, prev=(first,), entries=mine, commit=1, seq=2), 0.0)
    assert c.entries == (first, *mine) and ready.committed == 1
    # Matched against a in this term and life: now a heartbeat commits them.
    assert c.step(Heartbeat("a", 2, 3, 3), 0.0).committed == 3


def test_a_secondary_that_restarted_is_probed_on_its_new_connection_and_commits_again():
    """It kept its log (and its life: FSYNC=always), but commits only what a
    frame of its primary matched in this life: the primary probes it on the new
    connection, so that it does even when no write comes."""
    primary, secondary = new_node("a"), new_node("b")
    ready, now = elect(primary)
    deliver({"a": primary, "b": secondary}, ready.messages, now)
    deliver({"a": primary, "b": secondary}, primary.tick(now + HEARTBEAT_INTERVAL).messages, now)
    assert (primary.commit_length, secondary.commit_length) == (1, 1)
    restarted = new_node("b", hard_state=secondary.disk.hard_state, entries=secondary.entries)
    ready = primary.peer_connected("b", now + HEARTBEAT_INTERVAL)
    deliver({"a": primary, "b": restarted}, ready.messages, now + HEARTBEAT_INTERVAL)
    assert restarted.commit_length == 1


def test_match_lengths_are_what_each_secondary_acknowledged():
    node = new_node("a")
    _, now = elect(node)
    node.propose([message(0, "p")], now)
    success(node, "b", 2, now)
    assert node.match_lengths() == {"b": 2, "c": 0}
    assert new_node("b").match_lengths() == {}


# -- Log matching and truncation ---------------------------------------------------------

def test_a_late_append_entries_does_not_undo_newer_entries():
    node = new_node("c")
    node.step(append("a", 1, entries=(X, Y)), 0.0)
    ready = node.step(append("a", 1, entries=(X,)), 0.0)
    assert (ready.log.truncate_from, ready.log.entries) == (None, [])
    assert node.entries == (X, Y)


def test_a_conflicting_entry_is_truncated_from_the_first_conflict():
    node = new_node("c", hard_state=HardState(1), entries=(X, message(1, "lost")))
    ready = node.step(append("a", 2, prev=(X,), entries=(message(2, "new"),)), 0.0)
    assert (ready.log.truncate_from, ready.log.entries) == (1, [message(2, "new")])


def test_a_conflicting_entry_below_the_commit_length_is_refused_and_changes_nothing():
    """Changed: another node's claim that contradicts a committed entry is
    Refused (logged and dropped), no longer a SafetyViolation, which now
    means only a broken state of the node's own."""
    node = new_node("c", hard_state=HardState(1), entries=(X, Y))
    node.step(append("a", 1, prev=(X, Y), commit=2), 0.0)
    with pytest.raises(Refused, match="contradicts"):
        node.step(append("a", 1, prev=(X,), entries=(message(1, "z"),), seq=2), 0.0)
    assert (node.entries, node.commit_length, node.term, node.primary) == ((X, Y), 2, 1, "a")


def test_a_rejection_hints_where_the_primary_should_back_up_to():
    log = (message(1, "x"), message(2, "y"), message(2, "z"))
    node = new_node("c", hard_state=HardState(2), entries=log)
    too_far = node.step(AppendEntries("a", 3, 1, 9, 3, 0, (), 0), 0.0).messages[0][1]
    conflict = node.step(AppendEntries("a", 3, 2, 3, 3, digest_of(log), (), 0), 0.0).messages[0][1]
    assert (too_far.success, too_far.retry_length) == (False, 3)
    assert (conflict.success, conflict.retry_length) == (False, 1)  # the first entry of term 2


def test_a_lower_term_append_entries_is_answered_with_the_current_term_and_ignored():
    node = new_node("c", hard_state=HardState(5), entries=(message(5, "x"),))
    ready = node.step(append("a", 3, entries=(message(3, "old"),), commit=1, seq=7), 0.0)
    # Its own length as the hint: should that reply reach a primary of term 5,
    # it backs up no further than this node's log.
    assert ready.messages == (("a", AppendReply("c", 5, 7, success=False, retry_length=1)),)
    assert (node.entries, node.commit_length, node.primary, ready.hard_state) == (
        (message(5, "x"),), 0, None, None)


def test_an_entry_of_the_right_term_with_other_content_is_found_and_replaced():
    # A forged frame planted "forged" where the primary holds "real", same index, same term.
    forged, real = message(1, "forged"), message(1, "real")
    node = new_node("c", hard_state=HardState(1), entries=(X, forged))
    node.step(append("a", 1, prev=(X,), commit=1), 0.0)  # commits "x"
    check = node.step(append("a", 1, prev=(X, real), commit=1, seq=2), 0.0)
    reply = check.messages[0][1]
    assert (reply.success, reply.retry_length) == (False, 1)  # the terms agree, the checksums not
    resent = node.step(append("a", 1, prev=(X,), entries=(real,), commit=1, seq=3), 0.0)
    assert (resent.log.truncate_from, resent.log.entries) == (1, [real])
    assert resent.messages[0][1].match_length == 2 and node.entries == (X, real)



def test_a_deposed_primary_s_stale_frame_below_the_commit_length_is_answered_as_stale():
    """Not a lie: a primary paused while the next one committed other entries
    in its place sends its frames when it resumes, of its old term. They are
    answered with the current term (which deposes it), not refused as a bad frame."""
    node = new_node("c", hard_state=HardState(2), entries=(X, message(2, "y")))
    node.step(append("a", 2, prev=(X, message(2, "y")), commit=2), 0.0)
    ready = node.step(append("b", 1, prev=(X,), entries=(message(1, "lost"),), seq=9), 0.0)
    assert ready.messages == (("b", AppendReply("c", 2, 9, False, retry_length=2)),)
    assert (node.entries, node.commit_length, node.term, node.primary) == ((X, message(2, "y")), 2, 2, "a")


def test_a_stale_frame_is_answered_in_the_node_s_life_and_its_primary_keeps_hearing_it():
    """The answer to a frame of an earlier term may reach the same node primary
    again in this term: answered with no life, it retired the node's real one
    there, and that primary ignored every later answer of the node all term."""
    secondary = new_node("b", hard_state=HardState(3), incarnation="life-1")
    ((_, stale),) = secondary.step(append("a", 2, seq=1), 0.0).messages
    assert (stale.term, stale.success, stale.incarnation) == (3, False, "life-1")
    primary = new_node("a")
    _, now = elect(primary)
    success(primary, "b", 0, now, incarnation="life-1")
    success(primary, "b", 1, now, incarnation="life-1")  # b streams, heard in its life "life-1"
    primary.step(replace(stale, term=primary.term), now)  # as if a had been primary in term 3 again
    assert primary.progress()["b"].retired_incarnations == set()
    primary.propose([message(0, "new")], now)
    success(primary, "b", 2, now, incarnation="life-1")
    assert primary.progress()["b"].match == 2, "b's answers still count"

def test_a_checksum_that_differs_below_the_commit_length_is_refused():
    """Changed: Refused (another node's claim, or a corrupted frame), no longer a SafetyViolation."""
    forged = message(1, "forged")
    node = new_node("c", hard_state=HardState(1), entries=(forged,))
    node.step(append("a", 1, prev=(forged,), commit=1), 0.0)
    with pytest.raises(Refused):
        node.step(append("a", 1, entries=(message(1, "real"),), commit=1, seq=2), 0.0)
    assert node.entries == (forged,) and node.commit_length == 1


def test_an_append_entries_below_the_commit_length_is_taken_from_the_commit_length_on():
    """A frame that ends at or before the commit length is answered with it
    (etcd's rule); one that begins before it is taken from it on, its entries
    up to there checked by their checksum chain but not written again. One
    whose prefix lay before the log's start (compacted) once skipped the
    committed-entries check, truncated inside the committed range and raised
    SafetyViolation, stopping the node: a forged frame, or a stale one."""
    log = (Entry(1),) + KEYED
    node = new_node("c", hard_state=HardState(1), entries=log)
    node.step(append("a", 1, prev=log, commit=6, log_start=4), 0.0)
    assert (node.commit_length, node.log_start.index) == (6, 4)
    stale = node.step(append("a", 1, prev=log[:2], entries=log[2:5], commit=6, seq=2), 0.0)
    assert stale.messages == (("a", AppendReply("c", 1, 2, True, match_length=6)),) and not stale.log
    more = (message(1, "more"),)
    queued = node.step(append("a", 1, prev=log[:3], entries=log[3:] + more, commit=6, seq=3), 0.0)
    assert queued.messages == (("a", AppendReply("c", 1, 3, True, match_length=7)),)
    assert tuple(queued.log.entries) == more and node.entries == log[4:] + more
    forged = tuple(message(1, f"forged{i}") for i in range(9))
    ready = node.step(append("a", 1, entries=forged, commit=9, seq=4), 0.0)
    ((to, refusal),) = ready.messages
    assert to == "a" and not refusal.success, "its checksum chain does not reach this node's at 6"
    assert not ready.log and (node.log_length, node.commit_length, node.log_start.index) == (7, 6, 4)
    # At or above the start, a contradiction of committed entries is still refused.
    with pytest.raises(Refused, match="contradicts"):
        node.step(append("a", 1, prev=log[:4], entries=forged[:3], commit=8, seq=5), 0.0)
    assert node.entries == log[4:] + more


def test_a_primary_whose_view_of_a_secondary_is_stale_still_brings_it_level():
    """A probe from far below what the secondary committed (here from 0, below
    its compacted start, on a new connection) is answered with its commit
    length, and the primary streams from there."""
    log = (Entry(1),) + KEYED
    secondary = new_node("c", hard_state=HardState(1), entries=log)
    secondary.step(append("b", 1, prev=log, commit=6, log_start=4), 0.0)
    primary = new_node("a", hard_state=HardState(1), entries=log)
    _, now = elect(primary)  # term 2: it has heard nothing from c yet
    ready = primary.peer_connected("c", now)
    assert [(f.prev_length, f.entries) for f in frames_to(ready, "c")] == [(0, ())]
    deliver({"a": primary, "c": secondary}, ready.messages, now)
    assert primary.match_lengths()["c"] == 7 and primary.commit_length == 7
    deliver({"a": primary, "c": secondary}, primary.tick(now + HEARTBEAT_INTERVAL).messages, now)
    assert (secondary.log_length, secondary.commit_length, secondary.entries) == (7, 7, log[4:] + (Entry(2),))


def test_a_reply_claiming_entries_the_primary_never_sent_is_refused_and_changes_nothing():
    node = new_node("a")
    _, now = elect(node)
    with pytest.raises(ValueError, match="never sent"):
        node.step(AppendReply("b", 1, 3, success=True, match_length=13), now)
    with pytest.raises(Refused, match="never sent"):
        node.step(AppendReply("b", 1, 99, success=True, match_length=1), now)
    with pytest.raises(Refused, match="never sent"):
        node.step(AppendReply("b", 1, 3, success=False, retry_length=5), now)
    assert node.match_lengths() == {"b": 0, "c": 0} and node.commit_length == 0


# -- Flow control (shared.consensus.raft_progress) ------------------------------------------

def replicating(peer: str = "b", **options):
    """A primary of term 1 whose secondary ``peer`` answered its probe and then
    acknowledged its no-op: that secondary is in replicate state. Returns the
    primary and the time."""
    primary = new_node("a", **options)
    _, now = elect(primary)
    streams_to(primary, peer, now)
    return primary, now


def streams_to(primary, peer: str, now: float) -> None:
    """``peer`` answers the primary's probe (it holds nothing), then the no-op that follows."""
    success(primary, peer, 0, now)
    success(primary, peer, 1, now)


def test_a_probe_is_one_frame_at_a_time_and_carries_no_entries():
    primary = new_node("a")
    _, now = elect(primary)  # a probe to b and c, after the log before the no-op
    ready = primary.propose([message(0, "p")], now)
    assert frames_to(ready, "b") == []  # the probe is unanswered
    streamed = frames_to(success(primary, "b", 0, now), "b")
    assert [(f.prev_length, f.entries) for f in streamed] == [(0, (Entry(1), message(1, "p")))]


def test_in_replicate_state_frames_go_at_once_up_to_the_window():
    primary, now = replicating(max_batch=1, window=2)
    ready = primary.propose([message(0, "p"), message(0, "q"), message(0, "s")], now)
    assert [(f.prev_length, len(f.entries)) for f in frames_to(ready, "b")] == [(1, 1), (2, 1)]
    # Each answer frees its frame: the third goes out.
    first = primary.progress()["b"].flights[0].seq
    assert [f.prev_length for f in frames_to(success(primary, "b", 2, now, seq=first), "b")] == [3]


def test_an_append_entries_carries_at_most_max_batch_bytes_past_its_first_entry():
    primary, now = replicating(max_batch_bytes=30)
    big = [message(0, "x" * 6), message(0, "y" * 6), message(0, "z" * 20)]
    ready = primary.propose(big, now)
    # Each entry costs its body, plus 16: the second would pass 30 bytes.
    assert [f.entries for f in frames_to(ready, "b")] == [
        (message(1, "x" * 6),), (message(1, "y" * 6),), (message(1, "z" * 20),)]


def test_a_rejection_falls_back_to_one_probe_from_the_hint():
    primary, now = replicating(max_batch=1)
    primary.propose([message(0, "p"), message(0, "q"), message(0, "s")], now)
    last = primary.progress()["b"].flights[-1].seq
    ready = primary.step(AppendReply("b", 1, last, False, retry_length=2), now)
    assert [(f.prev_length, f.entries) for f in frames_to(ready, "b")] == [(2, ())]
    assert primary.progress()["b"].state.value == "probe"
    assert [f.prev_length for f in frames_to(success(primary, "b", 2, now), "b")] == [2, 3]


def test_a_stale_rejection_moves_nothing_and_a_late_success_still_counts():
    """Changed: within one life of a secondary its log grows only by this
    primary's frames, so a success is true however late it comes (a slow
    secondary is learned, not resent to forever); a rejection older than the
    primary's last change of mind moves nothing."""
    primary, now = replicating(max_batch=1)
    primary.propose([message(0, "p"), message(0, "q")], now)
    first, last = (f.seq for f in primary.progress()["b"].flights)
    primary.step(AppendReply("b", 1, first, False, retry_length=0), now)  # decided: probe it again
    stale = primary.step(AppendReply("b", 1, first, False, retry_length=0), now)
    assert frames_to(stale, "b") == []  # the same rejection again, now stale: no second probe
    success(primary, "b", 3, now, seq=last)  # sent before the probe, answered after it
    assert primary.match_lengths()["b"] == 3


def test_an_unanswered_frame_is_resent_from_match_after_the_retransmission_timeout_and_not_before():
    primary, now = replicating()
    primary.propose([message(0, "p")], now)
    deadline = primary.progress()["b"].retransmit_deadline()
    resent, t = [], now
    while t + HEARTBEAT_INTERVAL < deadline:  # b answers every heartbeat, never the frame
        t += HEARTBEAT_INTERVAL
        ready = primary.tick(t)
        for to, heartbeat in sent(ready, Heartbeat):
            reply = HeartbeatReply(to, 1, heartbeat.seq, 1)
            resent += frames_to(ready, "b") + frames_to(primary.step(reply, t), "b")
    assert resent == []  # neither heartbeats nor their replies resend entries
    ready = primary.tick(deadline)
    assert [(f.prev_length, f.entries) for f in frames_to(ready, "b")] == [(1, ())]  # a probe from match
    assert [(f.prev_length, len(f.entries)) for f in frames_to(success(primary, "b", 1, deadline), "b")] == [
        (1, 1)]


def test_a_new_connection_resends_at_once_without_counting_a_timeout():
    """What was in flight may be lost with the old connection: it is probed again
    at once. Not a timeout: none is counted (the shell logs each as "no answer
    within"), and the retransmission timeout does not double."""
    primary, now = replicating()
    primary.propose([message(0, "p")], now)
    rto = primary.progress()["b"].rto()
    ready = primary.peer_connected("b", now)
    assert [(f.prev_length, f.entries) for f in frames_to(ready, "b")] == [(1, ())]
    assert (primary.progress()["b"].timeouts, primary.progress()["b"].rto()) == (0, rto)


def test_heartbeats_carry_no_entries_and_commit_no_further_than_what_each_secondary_holds():
    primary, now = replicating()
    streams_to(primary, "c", now)
    primary.propose([message(0, "p")], now)
    success(primary, "b", 2, now)
    ready = primary.tick(now + HEARTBEAT_INTERVAL)
    heartbeats = dict(sent(ready, Heartbeat))
    assert primary.commit_length == 2
    assert (heartbeats["b"].commit_length, heartbeats["c"].commit_length) == (2, 1)
    assert not hasattr(heartbeats["b"], "entries")


def test_a_secondary_that_lost_entries_it_had_acknowledged_is_resent_them():
    primary, now = replicating()
    primary.propose([message(0, "x"), message(0, "y")], now)
    success(primary, "b", 3, now)
    # b restarted without what it had not made durable: it holds nothing now.
    later = now + HEARTBEAT_INTERVAL
    heartbeat = dict(sent(primary.tick(later), Heartbeat))["b"]
    probe = frames_to(primary.step(HeartbeatReply("b", 1, heartbeat.seq, 0), later), "b")
    assert [(f.prev_length, f.entries) for f in probe] == [(0, ())]
    resent = frames_to(success(primary, "b", 0, later), "b")
    assert [(f.prev_length, len(f.entries)) for f in resent] == [(0, 3)]
    caught_up = success(primary, "b", 3, later)
    assert frames_to(caught_up, "b") == [] and primary.commit_length == 3


# -- A node that lost its disk (docs/architecture.md, "A node that lost its disk") ------------

def state_reply(sender: str, term: int, last_log_term: int = 0, log_length: int = 0) -> StateReply:
    return StateReply(sender, term, last_log_term, log_length, LogStart(), None)


def lost_its_disk(name: str = "c", **options):
    """A node started from an empty data directory (not caught up), its timer started."""
    node = new_node(name, hard_state=HardState(caught_up=False), **options)
    node.tick(0.0)
    return node


def test_a_node_that_lost_its_disk_asks_the_peers_it_has_not_heard_what_they_hold():
    node = new_node("c", hard_state=HardState(caught_up=False))
    assert {to for to, _ in sent(node.tick(0.0), StateRequest)} == {"a", "b"}
    node.step(state_reply("a", 3, 3, 5), 0.0)
    assert {to for to, _ in sent(node.tick(HEARTBEAT_INTERVAL), StateRequest)} == {"b"}


def test_a_node_that_is_not_caught_up_names_no_primary_once_its_primary_is_silent_for_an_election_timeout():
    """It may not stand yet, but it must not go on naming (and forwarding to) a dead primary."""
    node = lost_its_disk()
    node.step(append("a", 1), 0.0)
    assert node.primary == "a"
    node.tick(3 * ELECTION_TIMEOUT)  # a's heartbeats stopped; b was never heard
    assert node.primary is None and node.role is Role.SECONDARY and node.term == 1


def test_a_node_that_is_not_caught_up_votes_only_once_it_has_heard_every_other_node():
    """Changed: it no longer votes for an empty log only. It may have voted in
    any term its peers reached, and acknowledged entries it lost: it votes once
    it has heard every other node (of 3), in a term above every term it heard,
    for a candidate at least as up to date as every log it heard."""
    node = lost_its_disk()
    node.step(state_reply("a", 3, 3, 5), 1.0)
    assert granted(node.step(vote_request("b", 4, 3, 5), 1.0)) == [False]  # b unheard
    heard_all = lost_its_disk()
    heard_all.step(state_reply("a", 3, 3, 5), 1.0)
    heard_all.step(state_reply("b", 3, 3, 4), 1.0)
    assert granted(heard_all.step(PreVoteRequest("b", 4, 3, 4), 1.0)) == [False]  # shorter than a's
    assert granted(heard_all.step(PreVoteRequest("b", 4, 3, 5), 1.0)) == [True]
    assert granted(heard_all.step(vote_request("b", 3, 3, 5), 1.0)) == [False]  # a term it heard


def test_a_granted_pre_vote_does_not_raise_the_highest_term_heard():
    """It carries the term a ballot asked about, not a term its voter is in."""
    node = lost_its_disk()
    node.step(state_reply("a", 3, 3, 5), 1.0)
    node.step(state_reply("b", 3, 3, 5), 1.0)
    node.step(VoteReply("a", 9, granted=True, pre_vote=True), 1.0)  # a late answer to some ballot
    assert granted(node.step(PreVoteRequest("b", 4, 3, 5), 1.0)) == [True]


def test_nodes_that_are_not_caught_up_in_different_terms_still_elect():
    """The review's scenario: every node restarted not caught up (FSYNC=off), a
    in term 5 with the longest log, b in term 6 with a shorter one, c in term 5.
    Each votes only above the highest term it heard (6), for a log at least as
    up to date as every log it heard (a's): only a may win, and it must stand
    above b's term, not its own. It takes b's term on (with no vote) when b
    tells it, and stands in 7."""
    first, x, y = Entry(1), message(5, "x"), message(5, "y")
    nodes = {
        "a": new_node("a", hard_state=HardState(5, caught_up=False), entries=(first, x, y)),
        "b": new_node("b", hard_state=HardState(6, caught_up=False), entries=(first, x)),
        "c": new_node("c", hard_state=HardState(5, caught_up=False), entries=(first, x)),
    }
    run_together(nodes, lambda: any(node.role is Role.PRIMARY for node in nodes.values()))
    assert (nodes["a"].role, nodes["a"].term) == (Role.PRIMARY, 7)


def test_a_node_that_lost_its_disk_and_holds_entries_does_not_stand_until_caught_up():
    node = new_node("c", hard_state=HardState(3, caught_up=False), entries=(Entry(3),))
    node.tick(0.0)
    ready = node.tick(3 * ELECTION_TIMEOUT)
    assert node.role is Role.SECONDARY and sent(ready, PreVoteRequest) == []
    caught_up = new_node("c", hard_state=HardState(3), entries=(Entry(3),))
    caught_up.tick(0.0)
    assert sent(caught_up.tick(3 * ELECTION_TIMEOUT), PreVoteRequest) != []


def test_vouched_for_and_having_heard_every_other_node_it_is_caught_up_above_a_vote_floor():
    """Changed: caught up once its primary vouched for it and it heard every
    other node, not as soon as it held the commit length; then it votes only
    in terms above the highest it heard (its vote floor), persisted. Changed
    again: the later term b tells of is taken on too (with no vote)."""
    node = lost_its_disk()
    log = (Entry(3), message(3, "x"))
    node.step(append("a", 3, entries=log, commit=2, vouch=""), 0.0)  # for its life ("" here)
    node.step(state_reply("b", 5, 3, 2), 0.0)
    assert not node.caught_up and node.unheard == ("a",)  # a primary's frames do not say its term
    assert (node.term, node.voted_for, node.primary) == (5, None, None)
    ready = node.step(state_reply("a", 3, 3, 2), 0.0)
    assert node.caught_up and ready.hard_state == HardState(5, None, caught_up=True, vote_floor=5)
    later = 3 * ELECTION_TIMEOUT  # out of a's lease
    assert granted(node.step(vote_request("b", 5, 3, 2), later)) == [False]  # at the floor
    assert granted(node.step(vote_request("b", 6, 3, 2), later)) == [True]


def test_without_a_vouch_hearing_everyone_is_not_enough():
    node = lost_its_disk()
    node.step(append("a", 3, entries=(Entry(3),), commit=1), 0.0)
    node.step(state_reply("a", 3, 3, 1), 0.0)
    node.step(state_reply("b", 3, 3, 1), 0.0)
    assert not node.caught_up


def test_a_primary_vouches_only_once_the_secondary_holds_a_commit_length_of_its_term():
    """A restarted primary's commit length is stale (it is learned again): a
    secondary that lost its disk and holds it may still lack committed entries.
    Only a commit length that ends in the primary's own term covers them all."""
    old = tuple(message(1, f"m{i}") for i in range(6))
    primary = new_node("a", hard_state=HardState(1), entries=old, max_batch=4)
    _, now = elect(primary)  # term 2, commit length 0 (stale), its no-op at 6
    lost = AppendReply("c", 2, primary.progress()["c"].flights[0].seq, False, retry_length=0,
                       caught_up=False)
    probe = frames_to(primary.step(lost, now), "c")[0]
    assert (probe.prev_length, probe.entries, probe.commit_length, probe.vouch) == (0, (), 0, None)
    ready = primary.step(AppendReply("c", 2, probe.seq, True, match_length=0, caught_up=False), now)
    # It holds the stale commit length 0, and will hold 4: no vouch on either batch.
    assert [(f.prev_length, len(f.entries), f.vouch) for f in frames_to(ready, "c")] == [
        (0, 4, None), (4, 3, None)]
    ready = primary.step(AppendReply("c", 2, frames_to(ready, "c")[-1].seq, True, match_length=7,
                                     caught_up=False), now)
    assert primary.commit_length == 7  # its no-op, by a and c
    heartbeat = dict(sent(primary.tick(now + HEARTBEAT_INTERVAL), Heartbeat))
    assert heartbeat["c"].vouch == "" and heartbeat["b"].vouch is None  # for c's life ("" here)


class CaughtUpByAnyCommitLength(RaftNode):
    """The rule the review broke: a secondary counts as caught up once its
    match reaches the commit length its primary has, stale or not."""

    def _vouches_for(self, progress):
        return progress.incarnation if progress.match >= self._log.commit_length else None


def test_a_stale_commit_length_does_not_catch_up_a_node_that_lost_its_disk():
    """The review's scenario, by hand: a committed a log longer than one batch
    (6 entries), held by a and e; b lags (4); the whole cluster restarts and
    e's disk is replaced; b elects a, whose commit length is 0 again. a's
    first batch to e (4 entries) must not make e caught up: once a dies, e
    would vote b in, whose no-op overwrites committed entry 4."""
    log = tuple(message(1, f"m{i}") for i in range(6))
    for node_class, vouched in ((RaftNode, False), (CaughtUpByAnyCommitLength, True)):
        a = new_node("a", peers=("a", "b", "e"), hard_state=HardState(1), entries=log, max_batch=4,
                     node_class=node_class)
        e = new_node("e", peers=("a", "b", "e"), hard_state=HardState(caught_up=False))
        e.tick(0.0)
        elected, now = elect(a)
        probe = frames_to(elected, "e")[0]  # after a's 6 entries: e rejects it, not caught up
        probe = frames_to(a.step(sent(e.step(probe, now), AppendReply)[0][1], now), "e")[0]
        ready = a.step(sent(e.step(probe, now), AppendReply)[0][1], now)  # at 0 it matches
        first_batch = frames_to(ready, "e")[0]
        assert (first_batch.prev_length, len(first_batch.entries)) == (0, 4)
        e.step(first_batch, now)
        e.step(state_reply("a", 2, 2, 7), now)
        e.step(state_reply("b", 2, 1, 4), now)
        assert e.caught_up is vouched
        a_is_gone = now + 3 * ELECTION_TIMEOUT
        assert granted(e.step(vote_request("b", 3, 1, 4), a_is_gone)) == [vouched]


class TakesRepliesFromBeforeTheLoss(RaftNode):
    """Forgets what a secondary acknowledged before it lost its disk, but
    neither retires that life nor raises the floor of stale replies."""

    def _new_life(self, progress, reply):
        floor = progress.floor_seq
        super()._new_life(progress, reply)
        progress.retired_incarnations.clear()
        progress.floor_seq = floor


def test_a_reply_from_before_a_lost_disk_moves_nothing():
    for node_class, match_after in ((RaftNode, 0), (TakesRepliesFromBeforeTheLoss, 3)):
        primary, now = replicating(node_class=node_class)
        primary.propose([message(0, "x"), message(0, "y")], now)
        old_life = primary.progress()["b"].flights[-1].seq
        later = now + HEARTBEAT_INTERVAL
        heartbeat = dict(sent(primary.tick(later), Heartbeat))["b"]
        new_life = HeartbeatReply("b", 1, heartbeat.seq, 0, caught_up=False, incarnation="b.2")
        primary.step(new_life, later)
        assert primary.match_lengths()["b"] == 0
        success(primary, "b", 3, later, seq=old_life)  # delayed past b's restart
        assert primary.match_lengths()["b"] == match_after


# -- Leadership transfer (thesis §3.10) -----------------------------------------------------

def test_a_primary_handing_its_role_over_refuses_writes_and_tells_a_caught_up_target_to_stand():
    primary, now = replicating()
    primary.propose([message(0, "p")], now)
    ready = primary.transfer_leadership(now)
    assert primary.transferring_to == "b" and sent(ready, TimeoutNow) == []  # b lacks "p"
    with pytest.raises(NotPrimary):
        primary.propose([message(0, "q")], now)
    assert sent(success(primary, "b", 2, now), TimeoutNow) == [("b", TimeoutNow("a", 1))]


def test_the_target_stands_at_once_without_pre_vote_and_voters_grant_despite_their_lease():
    target, voter = new_node("b"), new_node("c")
    for node in (target, voter):
        node.step(Heartbeat("a", 1, 1, 0), 0.0)
    ready = target.step(TimeoutNow("a", 1), 0.0)
    assert sent(ready, PreVoteRequest) == [] and target.role is Role.CANDIDATE
    request = dict(sent(ready, VoteRequest))["c"]
    assert (request.term, request.transfer) == (2, True)
    assert granted(voter.step(request, 0.0)) == [True]  # it heard a just now
    assert granted(new_node("c").step(vote_request("b", 2), 0.0)) == [True]
    leased = new_node("c")
    leased.step(Heartbeat("a", 1, 1, 0), 0.0)
    assert granted(leased.step(vote_request("b", 2), 0.0)) == [False]  # without transfer


def test_a_transfer_is_abandoned_after_an_election_timeout():
    primary, now = replicating()
    primary.propose([message(0, "p")], now)
    primary.transfer_leadership(now)
    for t in (now + HEARTBEAT_INTERVAL, now + 2 * HEARTBEAT_INTERVAL):  # keep a majority heard
        primary.step(HeartbeatReply("c", 1, dict(sent(primary.tick(t), Heartbeat))["c"].seq, 1), t)
    assert primary.transferring_to == "b"
    primary.tick(now + ELECTION_TIMEOUT)
    assert primary.transferring_to is None and primary.propose([message(0, "q")], now).proposed


# -- Read index (thesis §6.4) ------------------------------------------------------------------

def confirmed(primary, peer: str, ready, now: float):
    """``peer`` answers the heartbeat ``ready`` sent it."""
    heartbeat = dict(sent(ready, Heartbeat))[peer]
    return primary.step(HeartbeatReply(peer, primary.term, heartbeat.seq, primary.log_length), now)


def test_a_read_waits_for_the_first_entry_of_the_primarys_term_to_be_committed():
    primary = new_node("a", hard_state=HardState(1), entries=(message(1, "old"),))
    _, now = elect(primary)
    assert primary.read_index(7, now).reads == () and sent(primary.read_index(8, now), Heartbeat) == []
    committing = success(primary, "b", 2, now)
    assert primary.commit_length == 2 and sent(committing, Heartbeat) != []  # now it confirms them
    assert confirmed(primary, "b", committing, now).reads == ((7, 2), (8, 2))


def test_a_read_is_answered_only_once_a_majority_answered_a_frame_sent_after_it_arrived():
    primary, now = replicating()
    before = primary.tick(now + HEARTBEAT_INTERVAL)
    read = primary.read_index(1, now)
    assert confirmed(primary, "b", before, now).reads == ()  # sent before the read came
    assert confirmed(primary, "b", read, now).reads == ((1, 1),)


def test_one_round_of_heartbeats_serves_every_read_waiting():
    primary, now = replicating()
    primary.read_index(1, now)
    primary.read_index(2, now)
    last = primary.read_index(3, now)
    assert confirmed(primary, "c", last, now).reads == ((1, 1), (2, 1), (3, 1))


def test_a_secondary_forwards_a_read_to_its_primary_and_reports_its_answer():
    secondary = new_node("b")
    secondary.step(Heartbeat("a", 1, 1, 0), 0.0)
    assert sent(secondary.read_index(5, 0.0), ReadIndexRequest) == [("a", ReadIndexRequest("b", 1, 5))]
    assert secondary.step(ReadIndexReply("a", 1, 5, 3), 0.0).reads == ((5, 3),)
    primary, now = replicating()
    ready = primary.step(ReadIndexRequest("c", 1, 5), now)
    answer = confirmed(primary, "b", ready, now)
    assert sent(answer, ReadIndexReply) == [("c", ReadIndexReply("a", 1, 5, 1))]
    assert new_node("b").read_index(6, 0.0).reads == ((6, None),)  # no primary known


def test_a_read_that_cannot_be_confirmed_in_time_is_failed_and_dropped():
    """A fixed primary never steps down: a read it cannot confirm (no majority
    answers) is failed at the read timeout, 2 election timeouts (no shell
    waits longer), whether it waited for the term's first commit or for a
    majority; it was held for ever before."""
    primary = new_node("a", mode=Mode.FIXED_PRIMARY, hard_state=HardState(4, "a", cluster="k1"),
                       entries=(message(4, "x"),))
    primary.tick(0.0)  # term 5; its no-op is not committed yet
    primary.read_index(1, 0.0)
    primary.step(ReadIndexRequest("c", 5, 2), 0.0)
    assert primary.tick(2 * ELECTION_TIMEOUT - 0.001).reads == ()
    ready = primary.tick(2 * ELECTION_TIMEOUT)
    assert ready.reads == ((1, None),) and sent(ready, ReadIndexReply) == [("c", ReadIndexReply("a", 5, 2, None))]
    now = 2 * ELECTION_TIMEOUT
    success(primary, "b", 0, now)
    success(primary, "b", 2, now)
    assert primary.commit_length == 2
    primary.read_index(3, now)  # b answers nothing more: no majority confirms it
    assert primary.tick(now + ELECTION_TIMEOUT).reads == ()
    assert primary.tick(now + 2 * ELECTION_TIMEOUT).reads == ((3, None),)
    assert primary.tick(now + 3 * ELECTION_TIMEOUT).reads == ()  # dropped: failed once


def test_reads_fail_when_the_primary_steps_down():
    primary, now = replicating()
    primary.read_index(1, now)
    primary.step(ReadIndexRequest("c", 1, 2), now)
    ready = primary.step(AppendReply("b", 2, 1, False), now)
    assert ready.reads == ((1, None),) and sent(ready, ReadIndexReply) == [("c", ReadIndexReply("a", 2, 2, None))]


# -- What cannot be true is refused, and changes nothing -------------------------------------

@pytest.mark.parametrize("term", [-1, MAX_TERM + 1, 2**53, MAX_TERM_JUMP + 1])
def test_a_term_out_of_range_or_implausibly_far_ahead_is_refused(term):
    node = new_node("c")
    with pytest.raises(Refused, match="term"):
        node.step(Heartbeat("a", term, 1, 0), 0.0)
    assert (node.term, node.primary) == (0, None)


def test_a_term_within_the_jump_is_taken_and_a_pre_vote_may_ask_one_past_the_largest():
    node = new_node("c")
    node.step(Heartbeat("a", MAX_TERM_JUMP, 1, 0), 0.0)
    assert node.term == MAX_TERM_JUMP
    top = new_node("c", hard_state=HardState(MAX_TERM))
    assert granted(top.step(PreVoteRequest("a", MAX_TERM + 1, 0, 0), 0.0)) == [True]



@pytest.mark.parametrize("terms", [(3, 2), (2, 4), (MAX_TERM,)], ids=["falling", "above the frame's", "far above"])
def test_entries_whose_terms_no_log_could_hold_are_refused_and_change_nothing(terms):
    """Terms never fall along a log, and no entry is of a term above the frame's
    (its primary took that term before it wrote the entry). Taken, one entry of
    term MAX_TERM would make this node's log outrank every other in elections
    for good, and a falling term would leave its store's runs of terms wrong."""
    node = new_node("c", hard_state=HardState(2), entries=(message(2, "x"),))
    entries = [message(term, f"m{n}") for n, term in enumerate(terms)]
    with pytest.raises(Refused, match="not as a log holds them"):
        node.step(append("a", 3, prev=(message(2, "x"),), entries=entries, commit=2), 0.0)
    assert (node.entries, node.commit_length, node.term, node.primary) == ((message(2, "x"),), 0, 2, None)


def test_entries_below_the_term_of_the_entry_they_follow_are_refused():
    node = new_node("c", hard_state=HardState(2), entries=(message(2, "x"),))
    with pytest.raises(Refused, match="not as a log holds them"):
        node.step(append("a", 3, prev=(message(2, "x"),), entries=(message(1, "y"),)), 0.0)
    assert node.entries == (message(2, "x"),)


def test_a_recovery_page_whose_terms_fall_is_refused():
    primary = new_node("a", mode=Mode.FIXED_PRIMARY, peers=("a", "b"))
    primary.tick(0.0)  # recovering: it asks b what it holds
    with pytest.raises(Refused, match="not as a log holds them"):
        primary.step(FetchReply("b", 1, 0, (message(2, "x"), message(1, "y"))), 0.0)
    assert primary.role is Role.RECOVERING

def test_a_second_primary_in_a_term_is_refused():
    secondary = new_node("c")
    secondary.step(Heartbeat("a", 1, 1, 0), 0.0)
    with pytest.raises(Refused, match="claims to be primary"):
        secondary.step(append("b", 1), 0.0)
    primary, now = replicating()
    with pytest.raises(Refused, match="claims to be primary"):
        primary.step(Heartbeat("b", 1, 1, 0), now)
    assert (secondary.primary, primary.role) == ("a", Role.PRIMARY)


def test_a_message_from_itself_or_a_stranger_is_refused():
    node = new_node("c")
    for sender in ("c", "mallory"):
        with pytest.raises(Refused):
            node.step(Heartbeat(sender, 1, 1, 0), 0.0)
    assert node.term == 0


# -- The fixed roles ------------------------------------------------------------------------

def test_a_fixed_primary_with_a_log_begins_the_next_term_at_its_first_tick_without_a_vote():
    primary = new_node("a", mode=Mode.FIXED_PRIMARY, hard_state=HardState(4, "a", cluster="k1"),
                       entries=(message(4, "x"),))
    ready = primary.tick(0.0)
    assert (primary.role, primary.term) == (Role.PRIMARY, 5)
    assert sent(ready, PreVoteRequest) == sent(ready, VoteRequest) == []
    assert ready.hard_state == HardState(5, "a", cluster="k1") and ready.log.entries == [Entry(5)]


def test_a_fixed_primary_never_steps_down():
    primary = new_node("a", mode=Mode.FIXED_PRIMARY, hard_state=HardState(4, "a", cluster="k1"),
                       entries=(message(4, "x"),))
    primary.tick(0.0)
    primary.tick(100 * ELECTION_TIMEOUT)  # no check quorum
    primary.step(AppendReply("b", 9, 1, False), 100 * ELECTION_TIMEOUT)  # a later term than its own
    assert (primary.role, primary.term) == (Role.PRIMARY, 5)
    assert "newer primary" in primary.progress()["b"].diverged


def test_a_fixed_primary_writes_no_more_to_a_secondary_of_another_cluster_whatever_its_term():
    """Its refusal comes in its own term, below this run's (numbered by the
    clock after a recovery that did not hear it): it was dropped as stale, and
    the primary kept writing to it, never saying why it held nothing."""
    primary = new_node("a", mode=Mode.FIXED_PRIMARY, hard_state=HardState(1_000, "a", cluster="k2"))
    primary.tick(0.0)
    primary.step(AppendReply("b", 3, 1, False, diverged="it keeps the log of cluster k1"), 0.0)
    assert primary.progress()["b"].diverged == "it keeps the log of cluster k1"
    assert (primary.role, primary.term) == (Role.PRIMARY, 1_001)


def test_a_refusal_from_a_life_of_the_secondary_that_has_ended_marks_nothing():
    """b kept cluster k1 and refused; emptied, it came back (b.2) and follows.
    A copy of its first life's refusal, late, must not cut it off again."""
    primary = new_node("a", mode=Mode.FIXED_PRIMARY, hard_state=HardState(1_000, "a", cluster="k2"))
    primary.tick(0.0)
    refusal = AppendReply("b", 3, 1, False, diverged="it keeps the log of cluster k1", incarnation="b.1")
    primary.step(refusal, 0.0)
    primary.step(HeartbeatReply("b", 1_001, 1, 0, False, "b.2"), 0.0)  # emptied: a new life
    assert primary.progress()["b"].diverged is None
    primary.step(refusal, 0.0)
    assert primary.progress()["b"].diverged is None


def test_a_late_answer_naming_another_cluster_changes_nothing_on_a_fixed_primary():
    """A secondary that keeps another cluster's log answers the question of a
    recovery that has ended (it was silent, and a new cluster began): the
    answer is stale, and ignored. It was taken for a primary's frame of
    another cluster, to be refused with an answer it has no number for: the
    core raised AttributeError, which would stop node-io."""
    primary = new_node("a", peers=("a", "b"), mode=Mode.FIXED_PRIMARY,
                       hard_state=HardState(4, "a", cluster="k2"), entries=(message(4, "x"),))
    primary.tick(0.0)
    ready = primary.step(StateReply("b", 3, 3, 9, LogStart(), "k1"), 0.0)
    assert ready.messages == () and ready.refusal is None
    assert (primary.role, primary.term, primary.cluster) == (Role.PRIMARY, 5, "k2")


def test_a_recovering_primary_takes_the_cluster_of_its_newest_run_over_one_more_members_keep():
    """a and b keep a cluster the primary left (a recovery that heard neither
    began another, which c joined): their longer log is the older one. Taken
    back, it lost what the newer cluster had committed."""
    primary = new_node("p", peers=("p", "a", "b", "c"), mode=Mode.FIXED_PRIMARY)
    primary.tick(0.0)
    primary.step(StateReply("a", 5, 5, 20, LogStart(), "old"), 0.0)
    primary.step(StateReply("b", 5, 5, 20, LogStart(), "old"), 0.0)
    ready = primary.step(StateReply("c", 7, 7, 3, LogStart(), "new"), 0.0)
    assert [to for to, _ in sent(ready, FetchRequest)] == ["c"]


@pytest.mark.parametrize("answering, first_run", [
    (("a", "b"), 4),  # every secondary answered: above every term they heard, whatever the clock
    (("a",), 1_000),  # b is silent: a run only b heard of may be above a's terms, not above the clock
])
def test_a_run_begun_after_a_recovery_is_above_the_clock_unless_every_secondary_answered(
        answering, first_run):
    primary = new_node("p", peers=("p", "a", "b"), mode=Mode.FIXED_PRIMARY, run_floor=1_000,
                       recovery_timeout=1.0)
    primary.tick(0.0)
    for secondary in answering:
        primary.step(StateReply(secondary, 3, 0, 0, LogStart(), None), 0.0)  # empty: no cluster
    primary.tick(1.0)  # the recovery's timeout
    assert (primary.role, primary.term) == (Role.PRIMARY, first_run)


def fixed_secondary(**options) -> object:
    return new_node("s", peers=("s",), mode=Mode.FIXED_SECONDARY, **options)


def test_a_fixed_secondary_never_stands_nor_votes():
    secondary = fixed_secondary()
    assert secondary.tick(0.0).messages == secondary.tick(100 * ELECTION_TIMEOUT).messages == ()
    assert granted(secondary.step(vote_request("x", 1), 0.0)) == [False]
    assert granted(secondary.step(PreVoteRequest("x", 1, 0, 0), 0.0)) == [False]


def test_a_fixed_secondary_follows_whoever_is_primary_of_the_newest_term():
    secondary = fixed_secondary()
    first, second = Entry(2), Entry(3)
    secondary.step(append("x", 2, entries=(first,), cluster="k1"), 0.0)
    assert (secondary.primary, secondary.term, secondary.cluster) == ("x", 2, "k1")
    ready = secondary.step(append("y", 3, prev=(first,), entries=(second,), cluster="k1"), 0.0)
    assert (secondary.primary, secondary.term) == ("y", 3)
    assert sent(ready, AppendReply)[0][1].match_length == 2


def test_a_fixed_secondary_of_another_cluster_answers_diverged_and_changes_nothing():
    secondary = fixed_secondary(incarnation="s.1")
    secondary.step(append("x", 2, entries=(Entry(2),), cluster="k1"), 0.0)
    ready = secondary.step(append("z", 9, entries=(Entry(9),), cluster="k2"), 0.0)
    reply = sent(ready, AppendReply)[0][1]
    assert not reply.success and "k1" in reply.diverged and "z" in ready.refusal
    assert reply.incarnation == "s.1", "which life refused: a later one may follow"
    assert (secondary.term, secondary.primary, secondary.cluster, secondary.entries, ready.hard_state) == (
        2, "x", "k1", (Entry(2),), None)


def test_a_fixed_secondary_that_never_held_an_entry_joins_another_cluster_in_its_term():
    """It heard a primary of cluster k1 in term 5 but took no entry: an
    in-memory primary that restarts without hearing it names a new cluster,
    whose term may be lower. It has no log to keep, so it follows that one."""
    secondary = fixed_secondary()
    secondary.step(Heartbeat("x", 5, 1, 0, cluster="k1"), 0.0)
    assert (secondary.term, secondary.cluster) == (5, "k1")
    ready = secondary.step(append("x", 2, entries=(Entry(2),), cluster="k2"), 0.0)
    assert sent(ready, AppendReply)[0][1].success and ready.refusal is None
    assert (secondary.term, secondary.primary, secondary.cluster, secondary.entries) == (
        2, "x", "k2", (Entry(2),))
    assert ready.hard_state == HardState(2, None, True, 0, "k2")


# -- Compaction and InstallSnapshot (Raft §7) ------------------------------------------------

KEYED = tuple(message(1, f"m{i}", key=f"k{i}") for i in range(5))
#: What the keys of KEYED are, once entries 1..5 (after the no-op) are compacted.
RECORDS = tuple(KeyRecord(f"k{i}", i + 1, i, 1, body_digest(KEYED[i].body)) for i in range(5))


def test_a_compacted_primary_sends_a_secondary_behind_its_start_a_snapshot_in_chunks(monkeypatch):
    monkeypatch.setattr(raft, "KEYS_PER_CHUNK", 2)
    primary, now = replicating("c")
    primary.propose(KEYED, now)
    success(primary, "c", 6, now)
    assert primary.compact(6).log.compact == 6 and primary.log_start.index == 6
    # b has acknowledged nothing: what it needs next lies before the primary's start.
    ready = primary.tick(now + HEARTBEAT_INTERVAL)
    chunks = [m for to, m in sent(ready, InstallSnapshot) if to == "b"]
    assert [(c.start.index, c.start.first_id, c.keys, c.keys_offset, c.keys_total) for c in chunks] == [
        (6, 5, RECORDS[:2], 0, 5)]
    assert frames_to(ready, "b") == [] and primary.progress()["b"].state.value == "snapshot"


def test_a_secondary_installs_a_snapshot_with_its_last_chunk_of_keys():
    start = new_node("x", peers=("x",), entries=(Entry(1),) + KEYED).disk.storage
    start.compact(6)
    snapshot = start.snapshot()
    secondary = new_node("b")
    chunk = lambda offset, seq: InstallSnapshot("a", 1, seq, snapshot.start,  # noqa: E731
                                                snapshot.keys[offset:offset + 2], offset, 5)
    first = secondary.step(chunk(0, 1), 0.0)
    assert first.log.install is None and sent(first, SnapshotReply)[0][1].keys_received == 2
    out_of_order = secondary.step(chunk(4, 2), 0.0)
    assert sent(out_of_order, SnapshotReply)[0][1].keys_received == 2  # offset 4 is not next
    secondary.step(chunk(2, 3), 0.0)
    last = secondary.step(chunk(4, 4), 0.0)
    assert last.log.install == snapshot and snapshot.keys == RECORDS
    assert (secondary.log_start.index, secondary.log_length, secondary.commit_length) == (6, 6, 6)
    assert sent(last, SnapshotReply)[0][1] == SnapshotReply("b", 1, 4, 6, 5)


def test_a_secondary_that_holds_the_entry_before_the_start_keeps_what_follows():
    log = (Entry(1),) + KEYED
    secondary = new_node("b", hard_state=HardState(1), entries=log + (message(1, "after"),))
    start = new_node("x", peers=("x",), entries=log).disk.storage
    start.compact(6)
    snapshot = start.snapshot()
    ready = secondary.step(InstallSnapshot("a", 1, 1, snapshot.start, snapshot.keys, 0, 5), 0.0)
    assert ready.log.install is None and ready.log.compact == 6
    assert (secondary.log_start.index, secondary.log_length, secondary.commit_length) == (6, 7, 6)


def test_a_secondary_follows_the_primarys_start_as_far_as_it_has_committed():
    log = (Entry(1),) + KEYED
    secondary = new_node("b", hard_state=HardState(1), entries=log)
    ready = secondary.step(append("a", 1, prev=log, commit=4, log_start=6), 0.0)
    assert ready.log.compact == 4 and secondary.log_start.index == 4


def evict_oldest_key(storage) -> None:
    """What the product's log does to the keys in force when a keyed append
    passes IDEMPOTENCY_KEYS: the oldest goes (the start stays where it is)."""
    storage._keys = storage._keys[1:]


def test_snapshot_chunks_are_cut_from_one_copy_of_the_keys(monkeypatch):
    """Chunks are addressed by offset: cut from the keys in force now, a key
    evicted between two chunks shifted the next one past a key never sent."""
    monkeypatch.setattr(raft, "KEYS_PER_CHUNK", 2)
    primary, now = replicating("c")
    primary.propose(KEYED, now)
    success(primary, "c", 6, now)
    primary.compact(6)
    secondary = new_node("b")
    chunks = []

    def evict_after_the_first_chunk(to, message):
        if isinstance(message, InstallSnapshot):
            chunks.append((message.keys_offset, message.keys_total))
            if len(chunks) == 1:
                evict_oldest_key(primary.disk.storage)

    ready = primary.tick(now + HEARTBEAT_INTERVAL)
    deliver({"a": primary, "b": secondary}, ready.messages, now, before=evict_after_the_first_chunk)
    assert chunks == [(0, 5), (2, 5), (4, 5)]
    assert secondary.disk.storage.snapshot().keys == RECORDS
    assert secondary.log_start == primary.log_start


def test_an_install_nothing_of_which_was_taken_begins_again_from_a_start_that_moved():
    """A secondary away while the start moved twice is sent the newest start when
    it comes back, not the one the install began with, and then another."""
    primary, now = replicating("c")
    primary.propose(KEYED, now)
    success(primary, "c", 6, now)

    def next_install_to_b(since: float) -> tuple[InstallSnapshot, float]:
        """Runs the primary, c answering its heartbeats, until it sends b a chunk."""
        t = since
        while t < since + 10:
            t += HEARTBEAT_INTERVAL
            for to, m in primary.tick(t).messages:
                if to == "c" and isinstance(m, Heartbeat):
                    primary.step(HeartbeatReply("c", primary.term, m.seq, 6, True, ""), t)
                elif to == "b" and isinstance(m, InstallSnapshot):
                    return m, t
        raise AssertionError("no chunk sent to b")

    primary.compact(3)
    lost, now = next_install_to_b(now)  # b never answered its probe: it is sent the start
    assert lost.start.index == 3 and lost.keys_offset == 0
    primary.compact(6)
    resent, now = next_install_to_b(now)
    assert resent.start.index == 6 and resent.keys_offset == 0
    secondary = new_node("b")
    deliver({"a": primary, "b": secondary}, [("b", resent)], now)
    assert secondary.log_start == primary.log_start


def recovering_from(source, now: float = 0.0, before=lambda to, message: None):
    """A fixed primary that starts without a log, and recovers it from ``source``
    (a fixed secondary named "s"), every message delivered at once, and the
    source ticked whenever its timer is due (the rest of a fetch's pages), as
    its shell would."""
    primary = new_node("p", peers=("p", "s"), mode=Mode.FIXED_PRIMARY)
    nodes = {"p": primary, "s": source}
    deliver(nodes, primary.tick(now).messages, now, before=before)
    while source.next_timer() is not None and source.next_timer() <= now:
        deliver(nodes, source.tick(now).messages, now, before=before)
    assert primary.role is Role.PRIMARY
    return primary


def lent_pages(source, request: FetchRequest) -> list[tuple[int, int]]:
    """The pages ``source`` answers ``request`` with, the first at once, each
    later one at a tick its timer asks for at once: (where it begins, entries)."""
    pages = sent(source.step(request, 0.0), FetchReply)
    while source.next_timer() is not None:
        assert source.next_timer() <= 0.0
        pages += sent(source.tick(0.0), FetchReply)
    return [(reply.prev_length, len(reply.entries)) for _, reply in pages]


def test_a_source_answers_a_fetch_with_the_pages_asked_for_back_to_back_one_a_tick():
    """Each page begins where the one before ended; an empty one says the log ends."""
    source = fixed_secondary(max_batch=2)  # pages of two entries
    held = tuple(message(1, f"m{n}") for n in range(5))
    source.step(append("x", 1, entries=held, commit=5, cluster="k1"), 0.0)
    assert len(sent(source.step(FetchRequest("p", 0, 0, 0, 3), 0.0), FetchReply)) == 1  # the rest at ticks
    assert lent_pages(source, FetchRequest("p", 0, 0, 0, 3)) == [(0, 2), (2, 2), (4, 1)]
    assert lent_pages(source, FetchRequest("p", 0, 4, 0, 3)) == [(4, 1), (5, 0)]
    assert source.next_timer() is None  # a fixed secondary has no timer of its own


def test_a_new_fetch_replaces_what_is_left_of_the_one_before():
    source = fixed_secondary(max_batch=2)
    source.step(append("x", 1, entries=tuple(message(1, f"m{n}") for n in range(9)), commit=9,
                       cluster="k1"), 0.0)
    source.step(FetchRequest("p", 0, 0, 0, 4), 0.0)  # its first page only: the primary restarted
    assert lent_pages(source, FetchRequest("p", 0, 0, 0, 2)) == [(0, 2), (2, 2)]


def test_a_recovering_primary_asks_again_once_the_pages_it_asked_for_came(monkeypatch):
    monkeypatch.setattr(raft_recovery, "FETCH_PAGES", 2)
    monkeypatch.setattr(raft_recovery, "FETCH_BYTES", 16)  # two pages of two 4-byte literals
    source = fixed_secondary(max_batch=2)
    source.step(append("x", 1, entries=tuple(message(1, f"m{n}") for n in range(7)), commit=7,
                       cluster="k1"), 0.0)
    fetches = []
    primary = recovering_from(source, before=lambda to, message: isinstance(message, FetchRequest)
                              and fetches.append(message.prev_length))
    assert fetches == [0, 4, 7] and primary.disk.storage.length() == 8  # and its run's no-op
    assert [entry.body for entry in primary.entries[:7]] == [message(1, f"m{n}").body for n in range(7)]


@pytest.mark.parametrize("fetch_bytes, later_pages", [
    (1 << 20, MAX_FETCH_PAGES),  # small pages: as many as a fetch may ask for
    (12, 1),  # pages larger than a fetch's budget: one at a time
])
def test_a_recovering_primary_sizes_each_later_fetch_by_the_pages_that_came(monkeypatch, fetch_bytes,
                                                                           later_pages):
    monkeypatch.setattr(raft_recovery, "FETCH_PAGES", 2)
    monkeypatch.setattr(raft_recovery, "FETCH_BYTES", fetch_bytes)
    source = fixed_secondary(max_batch=4)  # pages of four 4-byte literals: 16 bytes
    source.step(append("x", 1, entries=tuple(message(1, f"m{n}") for n in range(20)), commit=20,
                       cluster="k1"), 0.0)
    asked = []
    primary = recovering_from(source, before=lambda to, message: isinstance(message, FetchRequest)
                              and asked.append((message.prev_length, message.pages)))
    assert asked[0] == (0, 2) and asked[1] == (8, later_pages)
    assert primary.disk.storage.length() == 21  # and its run's no-op


HELD = tuple(message(1, f"m{n}") for n in range(7))


def holding(name: str, entries: tuple[Entry, ...] = HELD):
    """A fixed secondary that took ``entries`` (of cluster k1), in pages of two."""
    source = new_node(name, peers=(name,), mode=Mode.FIXED_SECONDARY, max_batch=2)
    if entries:
        source.step(append("x", 1, entries=entries, commit=len(entries), cluster="k1"), 0.0)
    return source


@pytest.mark.parametrize("restarted_s1", [
    lambda: holding("s1", ()),  # in memory: it came back empty
    lambda: holding("s1", tuple(message(1, f"other {n}") for n in range(7))),  # another log, same term
], ids=["empty", "another-log"])
def test_a_recovering_primary_passes_over_a_source_that_no_longer_holds_the_log_it_was_sending(
        monkeypatch, restarted_s1):
    """s1 restarts after the first page it sent: its answer to the next fetch
    begins where no log it holds does. Taken as it was (an empty page said the
    log ends there), the recovery ended with two entries, and the new run
    would have truncated the five more that s2 held, acknowledged or not."""
    monkeypatch.setattr(raft_recovery, "FETCH_PAGES", 1)
    monkeypatch.setattr(raft_recovery, "FETCH_BYTES", 1)  # a page a fetch
    primary = new_node("p", peers=("p", "s1", "s2"), mode=Mode.FIXED_PRIMARY)
    nodes = {"p": primary, "s1": holding("s1"), "s2": holding("s2")}

    def s1_restarts_after_its_first_page(to, message):
        if isinstance(message, FetchReply) and message.sender == "s1" and message.prev_length == 0:
            nodes["s1"] = restarted_s1()

    deliver(nodes, primary.tick(0.0).messages, 0.0, before=s1_restarts_after_its_first_page)
    assert primary.role is Role.PRIMARY
    assert [entry.body for entry in primary.entries[:-1]] == [entry.body for entry in HELD]


def test_a_less_up_to_date_member_takes_over_where_its_log_agrees_with_what_was_taken(monkeypatch):
    """s1 ends in term 2, s2 in term 1, a prefix of s1's log. s1 restarts after
    its first page: s2 holds what was taken, and gives the rest of its log.
    Only members ending in s1's term took over before: the recovery ended
    with two entries, and s2's m2..m4 (acknowledged, with w=2) were lost."""
    monkeypatch.setattr(raft_recovery, "FETCH_PAGES", 1)
    monkeypatch.setattr(raft_recovery, "FETCH_BYTES", 1)
    s1 = holding("s1", HELD[:5])
    s1.step(append("y", 2, prev=HELD[:5], entries=(message(2, "n5"), message(2, "n6")), commit=5,
                   cluster="k1"), 0.0)
    primary = new_node("p", peers=("p", "s1", "s2"), mode=Mode.FIXED_PRIMARY)
    nodes = {"p": primary, "s1": s1, "s2": holding("s2", HELD[:5])}

    def s1_restarts_after_its_first_page(to, message):
        if isinstance(message, FetchReply) and message.sender == "s1" and message.prev_length == 0:
            nodes["s1"] = holding("s1", ())

    deliver(nodes, primary.tick(0.0).messages, 0.0, before=s1_restarts_after_its_first_page)
    assert primary.role is Role.PRIMARY
    assert [entry.body for entry in primary.entries[:-1]] == [entry.body for entry in HELD[:5]]


def test_a_member_that_answers_after_the_decision_takes_over_from_a_silent_source(monkeypatch):
    """The recovery decides on s1's answer alone (s2 silent for RECOVERY_TIMEOUT),
    and s1 falls silent at the first fetch. s2 answers then, with more of the
    same term's log: it is fetched from. Before, only the members heard by the
    decision were ever asked, and s2's m5 and m6 would have been truncated."""
    monkeypatch.setattr(raft_recovery, "FETCH_PAGES", 1)
    monkeypatch.setattr(raft_recovery, "FETCH_BYTES", 1)
    primary = new_node("p", peers=("p", "s1", "s2"), mode=Mode.FIXED_PRIMARY, recovery_timeout=1.0)
    s1, s2 = holding("s1", HELD[:5]), holding("s2")
    asked = primary.tick(0.0).messages
    deliver({"p": primary, "s1": s1}, [(to, m) for to, m in asked if to == "s1"], 0.0)
    assert sent(primary.tick(1.0), FetchRequest) and not primary.recovery.done  # to s1, lost
    deliver({"p": primary, "s2": s2}, [(to, m) for to, m in asked if to == "s2"], 1.0)  # s2's answer
    deliver({"p": primary, "s2": s2}, primary.tick(2.0).messages, 2.0)  # s1 silent: s2 is asked
    assert primary.role is Role.PRIMARY
    assert [entry.body for entry in primary.entries[:-1]] == [entry.body for entry in HELD]


def test_a_source_whose_connection_keeps_coming_up_without_a_page_counts_as_silent():
    """Each connection that comes up sends the fetch again at once; a source
    that never answers one is still silent, and s2 is asked after
    RECOVERY_TIMEOUT (before, each new connection forgot the fetch in flight,
    and with it how long the source had been silent)."""
    primary = new_node("p", peers=("p", "s1", "s2"), mode=Mode.FIXED_PRIMARY, recovery_timeout=1.0)
    sources = {"s1": holding("s1"), "s2": holding("s2", HELD[:5])}
    fetches = []
    for to, question in primary.tick(0.0).messages:
        for _, answer in sources[to].step(question, 0.0).messages:
            fetches += sent(primary.step(answer, 0.0), FetchRequest)  # to s1, which never answers
    for now in (0.5, 0.9, 1.2):  # the last past RECOVERY_TIMEOUT
        fetches += sent(primary.peer_connected("s1", now), FetchRequest)
    assert [to for to, _ in fetches] == ["s1", "s1", "s1", "s2"]


def compacted_fixed_secondary():
    """A fixed secondary that took KEYED (after a no-op) and compacted them away,
    following its primary: its start counts 5 messages before it."""
    source = new_node("s", peers=("s",), mode=Mode.FIXED_SECONDARY)
    source.step(append("x", 1, entries=(Entry(1),) + KEYED, commit=6, log_start=6, cluster="k1"), 0.0)
    assert source.log_start.index == 6
    return source


def test_a_recovering_primary_takes_the_whole_start_of_a_compacted_source():
    """The source's start as the core had it after compacting lacked the message
    count and bytes before it (first_id and offset 0): installed, it would
    have shifted every message id of the recovered primary."""
    source = compacted_fixed_secondary()
    whole = source.disk.storage.start()
    assert (whole.first_id, whole.offset) == (5, sum(len(entry.body) for entry in KEYED))
    assert source.log_start == whole
    primary = recovering_from(source)
    assert primary.log_start == whole and primary.disk.storage.snapshot().keys == RECORDS


def test_a_recovering_primary_pages_through_one_copy_of_the_keys(monkeypatch):
    monkeypatch.setattr(raft, "KEYS_PER_CHUNK", 2)
    source = compacted_fixed_secondary()
    pages = []

    def evict_after_the_first_page(to, message):
        if isinstance(message, FetchReply) and message.start is not None:
            pages.append((message.keys_offset, message.keys_total))
            if len(pages) == 1:
                evict_oldest_key(source.disk.storage)

    primary = recovering_from(source, before=evict_after_the_first_page)
    assert pages == [(0, 5), (2, 5), (4, 5)]
    assert primary.disk.storage.snapshot().keys == RECORDS
