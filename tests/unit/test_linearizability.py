"""The linearizability checker, on hand-built histories and random ones.

Each hand-built history is small enough to check by eye; the comment on it
says which order (if any) makes it linearizable. Pure: no servers.
"""

from __future__ import annotations

import bisect
import itertools
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.linearizability import (
    OK, REFUSED, UNKNOWN, Append, LinearHistory, Read, check_linearizable, classify_append,
)


def ok(message: str, id_: int, start: float, end: float) -> Append:
    return Append((message,), start, end, OK, id_)


def page(final: list[str], start: float, end: float, length: int, first: int = 0,
         node: str = "n1") -> Read:
    """A read that answered truthfully: the final log's ids first .. length - 1."""
    return Read(start, end, first, tuple(final[first:length]), length, node)


FINAL = ["m-0", "m-1", "m-2"]


# -- histories that are linearizable ----------------------------------------


def test_sequential_appends_and_reads_are_linearizable():
    appends = [ok("m-0", 0, 1.0, 2.0), ok("m-1", 1, 3.0, 4.0), ok("m-2", 2, 5.0, 6.0)]
    reads = [page(FINAL, 0.0, 0.5, 0), page(FINAL, 2.5, 2.6, 1), page(FINAL, 4.5, 4.6, 2, first=1),
             page(FINAL, 7.0, 8.0, 3)]
    assert check_linearizable(appends, reads, FINAL) == []


def test_overlapping_operations_fit_only_one_narrow_order():
    # m-0 is acknowledged late (10.0) but m-1, after it in the log, by 3.0:
    # so m-0 took effect by 3.0. The read that saw nothing pins m-0 after
    # 2.0; the read that saw only m-0 must fit in [2.5, 2.6] between them.
    # The one order: read(0) at 2.0 < m-0 < read(1) at 2.6 < m-1 <= 3.0.
    final = ["m-0", "m-1"]
    appends = [ok("m-0", 0, 0.0, 10.0), ok("m-1", 1, 1.0, 3.0)]
    saw_nothing = page(final, 2.0, 4.0, 0, node="n1")
    saw_first = page(final, 2.5, 2.6, 1, node="n2")
    assert check_linearizable(appends, [saw_nothing, saw_first], final) == []

    # Start the read that saw nothing at 2.7 instead: m-0 must then come
    # after 2.7, yet before the other read saw it by 2.6.
    late = page(final, 2.7, 4.0, 0, node="n1")
    [violation] = check_linearizable(appends, [late, saw_first], final)
    assert "read on n1 during [2.700, 4.000] saw 0 messages" in violation
    assert "read on n2 during [2.500, 2.600]" in violation and "went backwards" in violation


def test_unknown_appends_may_have_happened_or_not():
    # m-1 timed out and is there (at the id its 504 gave); m-9 timed out and is not.
    final = ["m-0", "m-1"]
    appends = [ok("m-0", 0, 1.0, 2.0), Append(("m-1",), 1.5, 9.0, UNKNOWN, 1),
               Append(("m-9",), 1.5, 3.0, UNKNOWN)]
    # Its end (when the client gave up) bounds nothing: a read long after it
    # may still not see m-1, and one after that may.
    reads = [page(final, 20.0, 21.0, 1), page(final, 22.0, 23.0, 2)]
    assert check_linearizable(appends, reads, final) == []


def test_a_batch_seen_whole_is_fine():
    final = ["m-0", "b-0", "b-1", "b-2"]
    appends = [ok("m-0", 0, 0.0, 1.0), Append(("b-0", "b-1", "b-2"), 2.0, 3.0, OK, 1)]
    reads = [page(final, 1.5, 1.6, 1), page(final, 3.5, 3.6, 4, first=2)]
    assert check_linearizable(appends, reads, final) == []


def test_a_page_asked_for_past_the_end_is_empty_and_fine():
    assert check_linearizable([ok("m-0", 0, 0.0, 1.0)], [Read(2.0, 3.0, 5, (), 1)], ["m-0"]) == []


def test_messages_written_outside_the_history_may_have_landed_at_any_time():
    final = ["setup", "m-0"]
    reads = [page(final, 0.0, 0.1, 0), page(final, 5.0, 5.1, 1)]
    appends = [ok("m-0", 1, 6.0, 7.0)]
    assert check_linearizable(appends, reads, final, others={"setup"}) == []
    [violation] = check_linearizable(appends, reads, final)
    assert violation == "setup is in the final log at id 0, but no append in the history sent it"


# -- histories that are not -------------------------------------------------


def test_a_read_that_misses_an_append_acknowledged_before_it_began_is_stale():
    appends = [ok("m-0", 0, 1.0, 2.0), ok("m-1", 1, 2.5, 3.05)]
    [violation] = check_linearizable(appends, [page(FINAL[:2], 3.1, 3.12, 1, node="n2")], FINAL[:2])
    assert violation == ("read on n2 during [3.100, 3.120] saw 1 message, but the append of m-1 "
                         "at id 1 was acknowledged at 3.050, before the read began: a stale read")


def test_a_read_after_one_that_saw_more_goes_backwards():
    appends = [ok(m, i, 0.0, 10.0) for i, m in enumerate(FINAL)]
    first, second = page(FINAL, 1.0, 2.0, 3, node="n1"), page(FINAL, 3.0, 4.0, 1, node="n2")
    [violation] = check_linearizable(appends, [first, second], FINAL)
    assert violation == ("read on n2 during [3.000, 4.000] saw 1 message, fewer than the 3 that "
                         "read on n1 during [1.000, 2.000] saw, though it began at 3.000 and that read "
                         "had ended at 2.000: the log went backwards")
    # Overlapping, the two reads may take effect in either order.
    assert check_linearizable(appends, [first, page(FINAL, 1.5, 4.0, 1, node="n2")], FINAL) == []


def test_the_first_of_several_reads_that_saw_an_append_to_end_bounds_it():
    # Both reads saw m-0; the one that ended at 2.0 pins it by 2.0, so a read
    # that began at 3.0 and missed it went backwards, whatever the other says.
    appends = [ok("m-0", 0, 0.0, 10.0)]
    reads = [page(["m-0"], 1.0, 9.0, 1, node="n1"), page(["m-0"], 1.0, 2.0, 1, node="n2"),
             page(["m-0"], 3.0, 4.0, 0, node="n3")]
    [violation] = check_linearizable(appends, reads, ["m-0"])
    assert violation.startswith("read on n3 during [3.000, 4.000] saw 0 messages, fewer than the 1 that "
                                "read on n2 during [1.000, 2.000] saw")


def test_the_last_of_several_reads_that_missed_an_append_to_begin_bounds_it():
    appends = [ok("m-0", 0, 0.0, 5.0)]
    reads = [page(["m-0"], 6.0, 7.0, 0, node="n1"), page(["m-0"], 1.0, 2.0, 0, node="n2")]
    [violation] = check_linearizable(appends, reads, ["m-0"])
    assert violation.startswith("read on n1 during [6.000, 7.000] saw 0 messages, but the append of m-0")


def test_a_read_that_saw_an_append_before_it_was_sent_is_from_the_future():
    [violation] = check_linearizable([ok("m-0", 0, 5.0, 6.0)], [page(["m-0"], 1.0, 2.0, 1)], ["m-0"])
    assert "saw 1 message, including the append of m-0 at id 0, which was only sent at 5.000" in violation


def test_appends_whose_ids_disagree_with_real_time():
    # m-1 was acknowledged before m-0 was even sent, yet sits after it.
    [violation] = check_linearizable([ok("m-0", 0, 5.0, 6.0), ok("m-1", 1, 1.0, 2.0)], [], FINAL[:2])
    assert violation == ("the append of m-1 at id 1 was acknowledged at 2.000, but it sits after "
                         "the append of m-0 at id 0, which was only sent at 5.000: "
                         "the ids disagree with real time")


def test_a_read_that_saw_an_unknown_append_the_final_log_lacks_saw_a_lost_message():
    appends = [ok("m-0", 0, 0.0, 1.0), Append(("m-1",), 1.0, 2.0, UNKNOWN)]
    too_long, saw_it = check_linearizable(appends, [Read(1.5, 1.6, 0, ("m-0", "m-1"), 2)], ["m-0"])
    assert "saw m-1 at id 1, but the final log lacks it" in saw_it
    assert "a read saw a message that was later lost" in saw_it
    assert "saw 2 messages, but the final log holds only 1" in too_long


def test_a_read_longer_than_the_final_log_saw_lost_messages():
    [violation] = check_linearizable([ok("m-0", 0, 0.0, 1.0)], [Read(1.5, 1.6, 0, (), 2)], ["m-0"])
    assert "saw 2 messages, but the final log holds only 1" in violation


def test_a_refused_append_that_shows_up_is_a_violation():
    refused = Append(("m-1",), 1.0, 2.0, REFUSED)
    [in_log] = check_linearizable([ok("m-0", 0, 0.0, 1.0), refused], [], FINAL[:2])
    assert in_log == "the append of m-1 was refused, but m-1 is in the final log at id 1"
    in_read = check_linearizable([ok("m-0", 0, 0.0, 1.0), refused], [Read(2.5, 3.0, 1, ("m-1",), 2)], ["m-0"])
    assert any("saw m-1 at id 1, but that append was refused: a refused message showed up" in v
               for v in in_read), in_read


@pytest.mark.parametrize("final, where", [
    (["m-0"], "is missing from the final log (m-1 is not there)"),
    (["m-1", "m-0"], "sits at ids 0 in the final log"),
])
def test_an_acknowledged_append_is_in_the_final_log_at_its_id(final, where):
    appends = [ok("m-0", 0, 0.0, 1.0), ok("m-1", 1, 0.0, 1.0)]
    violations = check_linearizable(appends, [], final)
    assert f"the append of m-1 (acknowledged at 1.000 with id 1) {where}" in violations


def test_an_unknown_append_told_an_id_sits_there_if_anywhere():
    appends = [ok("m-0", 0, 0.0, 1.0), Append(("m-1",), 0.0, 1.0, UNKNOWN, 5)]
    assert check_linearizable(appends, [], ["m-0", "m-1"]) == [
        "the append of m-1 (outcome unknown, told id 5) sits at ids 1 in the final log"]


def test_a_read_partway_through_a_batch_is_a_violation():
    final = ["b-0", "b-1", "b-2"]
    [violation] = check_linearizable([Append(tuple(final), 0.0, 1.0, OK, 0)],
                                     [page(final, 0.5, 0.6, 2)], final)
    assert violation == ("read on n1 during [0.500, 0.600] saw 2 messages, partway through the batch "
                         "b-0..b-2 at ids 0..2, which lands all at once")


def test_a_batch_split_apart_in_the_final_log_is_a_violation():
    appends = [Append(("b-0", "b-1"), 0.0, 1.0, UNKNOWN), ok("m-0", 1, 0.0, 1.0)]
    violations = check_linearizable(appends, [], ["b-0", "m-0", "b-1"])
    assert "the batch b-0..b-1 (outcome unknown) sits at ids 0, 2 in the final log" in violations


def test_a_read_whose_messages_differ_from_the_final_log_is_a_violation():
    appends = [ok(m, i, 0.0, 1.0) for i, m in enumerate(FINAL)]
    [violation] = check_linearizable(appends, [Read(2.0, 3.0, 1, ("m-2", "m-1"), 3)], FINAL)
    assert violation == "read during [2.000, 3.000] saw m-2 at id 1, but the final log has it at id 2"


def test_a_page_that_runs_past_its_own_length_is_a_violation():
    appends = [ok("m-0", 0, 0.0, 1.0), ok("m-1", 1, 0.0, 1.0), Append(("m-2",), 0.0, 1.0, UNKNOWN)]
    [violation] = check_linearizable(appends, [Read(2.0, 3.0, 0, tuple(FINAL), 2)], FINAL)
    assert "returned ids 0..2 but said the log held 2" in violation


def test_a_message_twice_in_the_final_log_is_a_violation():
    violations = check_linearizable([ok("m-0", 0, 0.0, 1.0)], [], ["m-0", "m-0"])
    assert "m-0 is in the final log twice, at ids 0 and 1" in violations


def test_a_message_sent_by_two_appends_is_a_bad_history():
    violations = check_linearizable([ok("m-0", 0, 0.0, 1.0), ok("m-0", 0, 0.0, 1.0)], [], ["m-0"])
    assert violations == ["m-0 was sent by two appends: the history needs unique messages"]


# -- ties: an append at t is seen by a read at r exactly when t <= r --------


def test_a_read_that_begins_as_an_append_is_acknowledged_must_see_it():
    appends = [ok("m-0", 0, 0.0, 2.0)]
    assert check_linearizable(appends, [page(["m-0"], 2.0, 3.0, 1)], ["m-0"]) == []
    [violation] = check_linearizable(appends, [page(["m-0"], 2.0, 3.0, 0)], ["m-0"])
    assert "acknowledged at 2.000, as the read began: a stale read" in violation


def test_a_read_that_ends_as_an_append_is_sent_may_see_it_or_not():
    appends = [ok("m-0", 0, 2.0, 3.0)]
    for length in (0, 1):
        assert check_linearizable(appends, [page(["m-0"], 1.0, 2.0, length)], ["m-0"]) == []


def test_reads_that_touch_cannot_go_backwards():
    appends = [ok("m-0", 0, 0.0, 10.0)]
    earlier, later = page(["m-0"], 1.0, 2.0, 1), page(["m-0"], 2.0, 3.0, 0)
    [violation] = check_linearizable(appends, [earlier, later], ["m-0"])
    assert "went backwards" in violation


def test_appends_forced_to_one_instant_leave_no_room_for_a_read_between():
    # m-0 was sent at 2.0 and m-1, after it, acknowledged at 2.0: both took
    # effect at 2.0 exactly, so no read can have seen m-0 without m-1.
    appends = [ok("m-0", 0, 2.0, 5.0), ok("m-1", 1, 0.0, 2.0)]
    final = ["m-0", "m-1"]
    assert check_linearizable(appends, [page(final, 0.0, 9.0, 2)], final) == []
    [violation] = check_linearizable(appends, [page(final, 0.0, 9.0, 1, node="between")], final)
    assert "the ids disagree with real time" in violation
    assert "a tie at 2.000 is not enough: read on between during [0.000, 9.000] saw 1 message" in violation


def test_times_that_differ_below_a_millisecond_are_printed_apart():
    [violation] = check_linearizable([ok("m-0", 0, 0.0, 3.1001)], [page(["m-0"], 3.1004, 3.2, 0)], ["m-0"])
    assert "acknowledged at 3.1001, before the read began" in violation


# -- random histories -------------------------------------------------------


@st.composite
def linearizable_histories(draw):
    """A log simulated on a clock: every operation gets a true moment, and an
    interval around it; reads report what the log held at theirs. Integer
    times on purpose, so ties are common. Returns (appends, reads, final)."""
    messages = (f"m-{n}" for n in itertools.count())
    appends, final, effect_times, clock = [], [], [], 0.0
    for index in range(draw(st.integers(1, 10))):
        clock += draw(st.integers(0, 2))
        batch = tuple(itertools.islice(messages, draw(st.integers(1, 3))))
        start = clock - draw(st.integers(0, 3))
        # "lands" and "lost": unknown appends that took effect, and that did not.
        fate = OK if index == 0 else draw(st.sampled_from([OK, OK, "lands", "lost", REFUSED]))
        id_ = None
        if fate in (OK, "lands"):
            id_ = len(final) if fate == OK or draw(st.booleans()) else None
            final += batch
            effect_times += [clock] * len(batch)
        if fate == OK:
            appends.append(Append(batch, start, clock + draw(st.integers(0, 3)), OK, id_))
        else:
            # An unknown append's end is when its client gave up: unrelated to its effect.
            outcome = REFUSED if fate == REFUSED else UNKNOWN
            appends.append(Append(batch, start, start + draw(st.integers(0, 6)), outcome, id_))
    reads = []
    for number in range(draw(st.integers(0, 10))):
        moment = float(draw(st.integers(0, int(clock) + 2)))
        reads.append(_read_at(draw, moment, moment - draw(st.integers(0, 3)),
                              moment + draw(st.integers(0, 3)), final, effect_times, f"reader-{number}"))
    # One read before everything and one after, so that each mutation below
    # always finds an append the read cannot have seen, or must have.
    before = min(a.start for a in appends) - 2
    reads.append(_read_at(draw, before, before - 1, before, final, effect_times, "reader-first"))
    after = max(a.end for a in appends) + 1
    reads.append(_read_at(draw, after, after, after + 1, final, effect_times, "reader-last"))
    return appends, reads, final


def _read_at(draw, moment, start, end, final, effect_times, node) -> Read:
    """A truthful page of a read that took effect at ``moment``."""
    length = bisect.bisect_right(effect_times, moment)
    first = draw(st.integers(0, length + 1))
    shown = final[first:min(length, first + draw(st.integers(0, 3)))]
    return Read(start, end, first, tuple(shown), length, node)


@settings(max_examples=150, deadline=None)
@given(linearizable_histories(), st.data())
def test_random_linearizable_histories_pass_and_a_stale_read_in_them_is_caught(history, data):
    appends, reads, final = history
    assert check_linearizable(appends, reads, final) == []

    # Make one read miss an append acknowledged before the read began.
    acknowledged = [a for a in appends if a.outcome == OK]
    pairs = [(a, r) for a in acknowledged for r in reads if a.end < r.start and r.length > a.id]
    append, read = data.draw(st.sampled_from(pairs))
    shown = final[read.first:min(append.id, read.first + len(read.messages))]
    stale = Read(read.start, read.end, read.first, tuple(shown), append.id, read.node)
    violations = check_linearizable(appends, [stale if r is read else r for r in reads], final)
    assert any(f"on {read.node} during" in v for v in violations), violations


@settings(max_examples=100, deadline=None)
@given(linearizable_histories(), st.data())
def test_a_read_from_the_future_in_a_random_history_is_caught(history, data):
    appends, reads, final = history
    # Make one read see an append that was sent only after the read ended.
    position = {message: id_ for id_, message in enumerate(final)}
    landed = [a for a in appends if a.messages[0] in position]
    pairs = [(a, r) for a in landed for r in reads if r.end < a.start]
    append, read = data.draw(st.sampled_from(pairs))
    length = max(read.length, position[append.messages[0]] + len(append.messages))
    future = Read(read.start, read.end, read.first, read.messages, length, read.node)
    violations = check_linearizable(appends, [future if r is read else r for r in reads], final)
    assert any(f"on {read.node} during" in v for v in violations), violations


def test_a_history_of_100000_operations_checks():
    rng = random.Random(7)
    appends, final, effect_times = [], [], []
    for n in range(60_000):
        moment = n * 0.001
        batch = (f"m-{n}",) if n % 10 else (f"m-{n}", f"m-{n}b")
        appends.append(Append(batch, moment - rng.random() * 0.005, moment + rng.random() * 0.005,
                              OK, len(final)))
        final += batch
        effect_times += [moment] * len(batch)
    reads = []
    for _ in range(40_000):
        moment = rng.random() * 60.0
        length = bisect.bisect_right(effect_times, moment)
        first = max(0, length - 10)
        reads.append(Read(moment - 0.002, moment + 0.002, first, tuple(final[first:length]), length))
    assert check_linearizable(appends, reads, final) == []


# -- recording ---------------------------------------------------------------


@pytest.mark.parametrize("status, body, expected", [
    (201, {"id": 4}, (OK, 4)),
    (200, {"id": 4}, (OK, 4)),
    (504, {"id": 4}, (UNKNOWN, 4)),
    (503, {"id": 4}, (UNKNOWN, 4)),
    (503, {"error": "no quorum"}, (REFUSED, None)),
    (400, {"error": "bad"}, (REFUSED, None)),
    (409, {"id": 4}, (REFUSED, None)),
    (502, {}, (UNKNOWN, None)),
    (504, {}, (UNKNOWN, None)),
    (201, {}, (UNKNOWN, None)),
])
def test_an_answer_is_classified_by_its_status_and_id(status, body, expected):
    assert classify_append(status, body) == expected


def test_a_batch_answer_is_classified_by_its_first_id():
    assert classify_append(201, {"first_id": 3, "last_id": 5, "count": 3}, "first_id") == (OK, 3)


def test_many_threads_record_into_one_history():
    history = LinearHistory()
    final: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(200):
            (message,) = history.new_messages()
            with lock:  # stands in for the log: the append takes effect in here
                final.append(message)
                history.record_append(Append((message,), 0.0, 1.0, OK, len(final) - 1))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history.record_read(Read(2.0, 3.0, 0, tuple(final[:5]), len(final)))
    appends, reads = history.operations()
    assert len(appends) == 1600 and len(set(final)) == 1600 and len(reads) == 1
    assert history.check(final) == []
