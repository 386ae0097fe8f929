"""shared.node.proposals: which appends the queue numbers as they are queued, and when it must not."""

from __future__ import annotations

import time

from shared.node import proposals
from shared.node.proposals import ProposalQueue
from shared.node.requests import Proposal
from shared.wire.frames import encode_entry


def append(*messages: str, key: str | None = None) -> Proposal:
    return Proposal([encode_entry(m) for m in messages], key, 1)


def test_nothing_is_numbered_before_node_io_offers_where_the_log_ends():
    queue = ProposalQueue()
    first = append("a")
    assert not queue.put(first, at_once=True) and not first.numbered
    assert queue.take() == [first]
    queue.offer(5, 3)
    one, batch, after = append("b"), append("c", "d", "e"), append("f")
    assert queue.put(one, at_once=True) and queue.put(batch, at_once=True) and queue.put(after, at_once=True)
    assert [(p.first_id, p.index) for p in (one, batch, after)] == [(5, 3), (6, 4), (9, 5)]
    assert queue.answered_id == 10 and queue.take() == [one, batch, after]


def test_an_append_node_io_numbers_stops_the_numbering_of_those_behind_it():
    """It may take no ids (a known key, a request that gave up), so the count past it is not known."""
    queue = ProposalQueue()
    queue.offer(0, 0)
    keyed, behind = append("k", key="key-1"), append("x")
    assert not queue.put(keyed) and not queue.put(behind, at_once=True)
    queue.offer(0, 0)  # not while an append to number is queued
    assert not queue.put(append("y"), at_once=True)
    assert len(queue.take()) == 3
    assert not queue.put(append("z"), at_once=True), "numbered before node-io numbered what it took"
    queue.take()
    queue.offer(7, 4)  # node-io numbered them: the log ends here
    numbered = append("w")
    assert queue.put(numbered, at_once=True) and (numbered.first_id, numbered.index) == (7, 4)


def test_an_offer_does_not_move_a_numbering_already_ahead_of_the_log():
    queue = ProposalQueue()
    queue.offer(0, 0)
    assert queue.put(append("a"), at_once=True)
    queue.offer(0, 0)  # node-io's flush before it took "a"
    later = append("b")
    assert queue.put(later, at_once=True) and later.first_id == 1


def test_at_most_max_ahead_appends_are_answered_ahead_of_node_io(monkeypatch):
    monkeypatch.setattr(proposals, "MAX_AHEAD", 2)
    queue = ProposalQueue()
    queue.offer(0, 0)
    assert queue.put(append("a"), at_once=True) and queue.put(append("b"), at_once=True)
    assert not queue.put(append("c"), at_once=True), "a third answered ahead of node-io"


def test_nothing_is_numbered_once_withdrawn():
    queue = ProposalQueue()
    queue.offer(0, 0)
    queue.withdraw()
    assert not queue.put(append("a"), at_once=True)
    queue.take()
    queue.offer(1, 1)  # a flush after the node began to stop
    assert not queue.put(append("b"), at_once=True)


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_only_the_first_of_the_appends_answered_at_once_wakes_node_io_but_every_one_that_waits_does():
    wakes = Wakes()
    queue = ProposalQueue(wakes)
    queue.offer(0, 0)
    for message in "abc":
        assert queue.put(append(message), at_once=True)
    assert wakes.count == 1
    assert not queue.put(append("w3")) and wakes.count == 2
    assert not queue.put(append("d"), at_once=True) and wakes.count == 3  # behind one that waits
    queue.take()
    queue.offer(5, 5)
    assert queue.put(append("e"), at_once=True) and wakes.count == 4


def test_appends_answered_at_once_gather_until_linger_s_unless_enough_came_or_a_reader_hurries(monkeypatch):
    monkeypatch.setattr(proposals, "LINGER_MAX", 3)
    wakes = Wakes()
    queue = ProposalQueue(wakes)
    assert queue.gathering_until() is None, "nothing queued"
    queue.offer(0, 0)
    before = time.monotonic()
    queue.put(append("a"), at_once=True)
    until = queue.gathering_until()
    assert until is not None and before + proposals.LINGER_S <= until <= time.monotonic() + proposals.LINGER_S
    queue.put(append("b"), at_once=True)
    assert queue.gathering_until() == until and wakes.count == 1
    queue.put(append("c"), at_once=True)
    assert queue.gathering_until() is None and wakes.count == 2, "LINGER_MAX gathered: take them now"
    queue.take()
    queue.offer(3, 3)
    queue.put(append("d"), at_once=True)
    assert queue.gathering_until() is not None
    queue.hurry()
    assert queue.gathering_until() is None and wakes.count == 4
    queue.take()
    queue.offer(4, 4)
    queue.put(append("e"), at_once=True)
    assert queue.gathering_until() is not None, "a hurry lasts until node-io takes the queue"
