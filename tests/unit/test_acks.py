"""AckWaiter: the hand-off between a request thread and the replicator's I/O thread."""

from __future__ import annotations

import threading

from primary.acks import SHUTDOWN, STORAGE, AckWaiter


def wait_in_thread(waiter: AckWaiter, timeout: float | None) -> tuple[threading.Thread, list[bool]]:
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(waiter.wait(timeout)), name="request")
    thread.start()
    return thread, outcome


def test_a_waiter_is_released_once_enough_secondaries_acknowledged():
    waiter = AckWaiter(seq=3, needed=2)
    thread, outcome = wait_in_thread(waiter, timeout=10)
    assert waiter.record(["s1"]) is False
    assert waiter.record(["s1"]) is False, "the same secondary counts once"
    assert waiter.record(["s2"]) is True
    thread.join(10)
    assert outcome == [True] and waiter.acked_by == ["s1", "s2"] and waiter.finished


def test_a_durable_append_also_waits_for_the_primarys_own_commit():
    waiter = AckWaiter(seq=0, needed=1, local_pending=True)
    assert waiter.record(["s1"]) is False and not waiter.local
    assert waiter.record_local() is True
    assert waiter.wait(0) is True


def test_a_wait_that_times_out_is_abandoned_and_unsatisfied():
    waiter = AckWaiter(seq=0, needed=1)
    assert waiter.wait(0.01) is False
    assert waiter.abandoned and waiter.finished
    assert waiter.abort_reason is None


def test_abort_releases_the_waiting_thread_with_its_reason():
    waiter = AckWaiter(seq=0, needed=2)
    thread, outcome = wait_in_thread(waiter, timeout=None)
    waiter.abort(STORAGE)
    thread.join(10)
    assert outcome == [False] and waiter.abort_reason == STORAGE


def test_a_met_write_concern_stays_met_when_an_abort_follows():
    waiter = AckWaiter(seq=0, needed=1)
    assert waiter.record(["s1"])
    waiter.abort(SHUTDOWN)  # the shutdown's sweep may still hold it
    waiter.abort(SHUTDOWN)  # and the request thread may abort it too: no second release
    assert waiter.wait(0) is True and waiter.abort_reason is None
