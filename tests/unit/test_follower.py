"""The follower's rules (shared.consensus.follower), fed frames and the time by hand:
whom it follows, what it keeps of each APPEND, and its delay schedule."""

from __future__ import annotations

import random

from shared.consensus.follower import Follower
from shared.consensus.history import Segment
from shared.runtime.config import DelayRange
from shared.wire import protocol

LEADER = protocol.Leader("history-1", (Segment(1, "r1", 0),))


class Log:
    """What the rules may ask of a log: its contiguous length and which seqs it holds."""

    def __init__(self) -> None:
        self.entries: dict[int, bytes] = {}

    def __len__(self) -> int:
        length = 0
        while length in self.entries:
            length += 1
        return length

    def holds(self, seq: int) -> bool:
        return seq in self.entries

    def apply(self, taken) -> list[int]:
        for seq, entry in taken.store:
            self.entries.setdefault(seq, entry)
        return taken.ack


def append(first: int, *messages: str, corr_id: str = "c1") -> protocol.Append:
    return protocol.Append(corr_id, LEADER, first, [protocol.encode_entry(m) for m in messages])


def following(delay=None, max_ahead=100_000, seed=1) -> Follower:
    rules = Follower(None, (), random.Random(seed), delay, max_ahead)
    assert rules.on_leader(LEADER, 0).follow
    return rules


def test_a_first_history_is_joined_and_its_run_adopted_to_be_stored():
    rules = Follower(None, (), random.Random(1))
    verdict = rules.on_leader(LEADER, 0)
    # Nothing of this history was held: the cut at 0 removes nothing.
    assert (verdict.follow, verdict.joined, verdict.adopted, verdict.cut) == (True, "history-1", LEADER.segments, 0)
    assert rules.history == "history-1" and rules.run == LEADER.run
    again = rules.on_leader(LEADER, 0)
    assert (again.follow, again.joined, again.adopted) == (True, None, None)


def test_a_frame_of_another_history_is_refused_and_changes_nothing():
    rules = following()
    other = protocol.Leader("history-2", (Segment(1, "x", 0),))
    verdict = rules.on_leader(other, 3)
    assert not verdict.follow and verdict.adopted is None and verdict.cut is None
    assert verdict.refusal.startswith("this node holds history history-1 and keeps its 3 messages")
    assert rules.history == "history-1" and rules.segments == LEADER.segments


def test_a_primary_with_no_history_is_not_followed():
    rules = Follower(None, (), random.Random(1))
    verdict = rules.on_leader(protocol.Leader(None, ()), 0)
    assert not verdict.follow and verdict.refusal is None and rules.history is None


def test_a_frame_of_an_older_run_is_ignored():
    newer = protocol.Leader("history-1", (Segment(1, "r1", 0), Segment(2, "r2", 5)))
    rules = Follower("history-1", newer.segments, random.Random(1))
    verdict = rules.on_leader(LEADER, 5)
    assert not verdict.follow and verdict.refusal is None and rules.segments == newer.segments


def test_a_newer_run_that_disagrees_cuts_the_log_where_the_rolled_back_run_began():
    rules = Follower("history-1", (Segment(1, "r1", 0), Segment(2, "lost", 2)), random.Random(1))
    winner = protocol.Leader("history-1", (Segment(1, "r1", 0), Segment(3, "r3", 2)))
    verdict = rules.on_leader(winner, 4)
    assert (verdict.follow, verdict.cut, verdict.adopted) == (True, 2, winner.segments)


def test_entries_are_stored_then_acknowledged_and_a_resend_is_acknowledged_again():
    rules, log = following(), Log()
    assert log.apply(rules.on_append("p", append(0, "a", "b"), 0.0, len(log), log.holds)) == [0, 1]
    assert log.apply(rules.on_append("p", append(1, "b", "c"), 0.0, len(log), log.holds)) == [1, 2]
    assert len(log) == 3 and (rules.received, rules.duplicates) == (4, 1)


def test_entries_far_past_the_end_are_neither_kept_nor_acknowledged():
    rules, log = following(max_ahead=10), Log()
    taken = rules.on_append("p", append(9, "in", "out"), 0.0, len(log), log.holds)
    assert taken.ack == [9] and [seq for seq, _ in taken.store] == [9]


def test_a_delay_holds_each_entry_back_on_its_own_clock_and_drops_a_duplicate_of_a_waiting_one():
    rules, log = following(delay=DelayRange(1.0, 1.0)), Log()
    taken = rules.on_append("p", append(0, "a"), 10.0, len(log), log.holds)
    assert (taken.store, taken.ack, taken.scheduled) == ([], [], 1)
    assert rules.on_append("p", append(0, "a", corr_id="c2"), 10.5, len(log), log.holds).ack == []
    assert rules.on_append("p", append(1, "b", corr_id="c3"), 10.5, len(log), log.holds).scheduled == 1
    assert rules.waiting_count == 2 and rules.next_due == 11.0 and rules.duplicates == 1
    assert rules.due(10.9) == []
    assert rules.due(11.0) == [("p", "c1", [(0, protocol.encode_entry("a"))])]
    assert rules.due(11.5) == [("p", "c3", [(1, protocol.encode_entry("b"))])]
    assert rules.waiting_count == 0 and rules.next_due is None


def test_a_cut_also_drops_the_held_back_entries_past_it():
    rules, log = following(delay=DelayRange(1.0, 1.0)), Log()
    rules.on_append("p", append(0, "a", "b"), 0.0, len(log), log.holds)
    winner = protocol.Leader("history-1", (Segment(1, "r1", 0), Segment(2, "r2", 1)))
    assert rules.on_leader(winner, 0).cut == 1
    assert rules.due(5.0) == [("p", "c1", [(0, protocol.encode_entry("a"))])]


def test_random_delays_come_from_the_injected_generator_so_a_seed_replays_them():
    def schedule(seed: int) -> list:
        rules, log = following(delay=DelayRange(0.0, 1.0), seed=seed), Log()
        rules.on_append("p", append(0, *"abcdefgh"), 0.0, len(log), log.holds)
        return [seq for _, _, entries in rules.due(2.0) for seq, _ in entries]

    assert schedule(3) == schedule(3)
    assert schedule(3) != schedule(4)


def test_entries_held_past_a_gap_are_bounded_in_bytes_but_the_gap_is_always_filled():
    rules = Follower(None, (), random.Random(1), max_ahead_bytes=100)
    rules.on_leader(LEADER, 0)
    log = Log()
    big = "x" * 38  # 40 bytes as a JSON literal
    # Past the gap at 0: two fit in 100 bytes, the third is dropped unacknowledged.
    assert log.apply(rules.on_append("p", append(1, big, big, big), 0.0, len(log), log.holds, 0)) == [1, 2]
    held = sum(len(e) for s, e in log.entries.items() if s > 0)
    assert held == 80
    assert rules.on_append("p", append(5, big), 0.0, len(log), log.holds, held).ack == []
    # The entry that fills the gap is taken however much is held; then the rest can come.
    assert log.apply(rules.on_append("p", append(0, big), 0.0, len(log), log.holds, held)) == [0]
    assert log.apply(rules.on_append("p", append(3, big), 0.0, len(log), log.holds, 0)) == [3]


def test_entries_waiting_on_the_delay_count_towards_the_byte_bound():
    rules = Follower(None, (), random.Random(1), DelayRange(1.0, 1.0), max_ahead_bytes=100)
    rules.on_leader(LEADER, 0)
    log = Log()
    big = "x" * 38
    assert rules.on_append("p", append(0, big, big, big), 0.0, len(log), log.holds).scheduled == 3
    # Fills no gap, and 120 bytes already wait: dropped until those are stored.
    assert rules.on_append("p", append(4, big), 0.0, len(log), log.holds).scheduled == 0
    for _, _, entries in rules.due(1.0):
        log.entries.update(entries)
    assert rules.on_append("p", append(4, big), 1.0, len(log), log.holds).scheduled == 1
