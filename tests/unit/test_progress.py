"""The per-secondary replication state machine, driven without sockets or real time."""

from __future__ import annotations

import random

import pytest

from primary.config import ReplicationSettings
from shared.consensus.history import Run
from shared.consensus.health import Health, health_at
from shared.consensus.progress import INITIAL_RETRY_S, MIN_RETRY_S, Progress
from shared.wire import protocol

SETTINGS = ReplicationSettings(
    heartbeat_interval=1.0, suspect_after=2, unhealthy_after=4, retry_backoff_max=8.0,
    batch_max_entries=10, max_flights=3,
)


HISTORY, RUN = "history-1", Run(1, "r1")


def status(length, incarnation="inc-1", history=HISTORY, run=RUN):
    return protocol.Status("s1", incarnation, length, history, run)


def ack(send, length, acked=None, incarnation="inc-1"):
    ranges = [(send.start, send.stop)] if acked is None else acked
    return protocol.Ack(send.corr_id, status(length, incarnation), ranges)


def send_next(follower, log_length, now):
    send = follower.next_send(log_length, now)
    assert send is not None
    follower.sent(send, send.stop, now)
    return send


@pytest.fixture
def follower():
    f = Progress("s1", "tcp://x:1", SETTINGS, now=0.0, rng=random.Random(1))
    f.follow_run(HISTORY, RUN)
    f.on_status(status(0), 0.0)  # first contact: healthy, empty
    return f


def test_sends_new_entries_in_batches_and_pipelines(follower):
    first = send_next(follower, 25, 0.0)
    second = send_next(follower, 25, 0.0)
    third = send_next(follower, 25, 0.0)
    assert (first.start, first.stop, second.start, second.stop) == (0, 10, 10, 20)
    assert (third.start, third.stop) == (20, 25)
    assert follower.next_send(25, 0.0) is None  # all sent, none overdue


def test_window_of_flights_bounds_what_is_unacknowledged(follower):
    sends = [send_next(follower, 100, 0.0) for _ in range(SETTINGS.max_flights)]
    assert follower.next_send(100, 0.0) is None  # window full
    follower.on_ack(ack(sends[0], 10), 0.1)
    assert follower.next_send(100, 0.1).start == 30


def test_ack_matched_by_corr_id_grows_holdings(follower):
    send = send_next(follower, 3, 0.0)
    assert not follower.holds(0)
    assert follower.on_ack(ack(send, 3), 0.05) is True
    assert all(follower.holds(s) for s in range(3)) and follower.acked_length == 3
    assert follower.retry_deadline(100.0) is None  # no flight left to resend


def test_unknown_and_late_acks_are_ignored(follower):
    send = send_next(follower, 2, 0.0)
    stranger = protocol.Ack("not-ours", status(2), [(0, 2)])
    assert follower.on_ack(stranger, 0.01) is None
    assert not follower.holds(0) and follower.acked_length == 0
    follower.on_ack(ack(send, 2), 0.02)
    assert follower.on_ack(ack(send, 2), 0.03) is None  # late duplicate of a finished flight


def test_ack_cannot_confirm_seqs_outside_its_flight(follower):
    send = send_next(follower, 2, 0.0)
    follower.on_ack(ack(send, 0, acked=[(0, 50)]), 0.01)
    assert follower.retry_deadline(100.0) is None  # 0 and 1 are stored: not resent
    follower.on_status(status(2), 0.02)
    later = follower.next_send(3, 0.03)
    assert (later.start, later.stop) == (2, 3), "seq 2 was never sent, whatever the ACK said"


def test_entries_stored_past_a_gap_are_not_resent_but_count_only_once_it_fills(follower):
    send = send_next(follower, 3, 0.0)
    follower.on_ack(ack(send, 0, acked=[(2, 3)]), 0.01)  # seq 2 stored, 0 and 1 not yet
    assert not follower.holds(2), "a secondary that shows nothing holds nothing for w"
    resend = follower.next_send(3, 1.3)  # the flight is overdue
    assert (resend.start, resend.stop) == (0, 3) and resend.flight is not None
    follower.sent(resend, resend.stop, 1.3)
    follower.on_ack(ack(send, 3, acked=[(0, 2)]), 1.32)
    assert follower.holds(2) and follower.acked_length == 3
    assert follower.retry_deadline(1.4) is None


def test_a_status_length_settles_flights_whose_acks_were_lost(follower):
    send_next(follower, 5, 0.0)
    assert follower.on_status(status(5), 0.5) is True
    assert follower.retry_deadline(0.5) is None  # no flight left to resend


def test_overdue_flight_is_resent_under_a_new_corr_id_with_backoff(follower):
    send = send_next(follower, 3, 0.0)
    deadline = follower.retry_deadline(0.0)
    assert INITIAL_RETRY_S <= deadline <= INITIAL_RETRY_S * 1.25
    assert follower.next_send(3, deadline - 0.01) is None
    resend = follower.next_send(3, deadline)
    assert resend.flight is not None and resend.corr_id != send.corr_id
    assert (resend.start, resend.stop) == (0, 3)
    follower.sent(resend, resend.stop, deadline)
    second_wait = follower.retry_deadline(deadline) - deadline
    assert second_wait >= 2 * INITIAL_RETRY_S  # doubled
    assert follower.on_ack(ack(send, 3), deadline + 0.1)  # a late ACK of the first attempt counts
    assert follower.retry_deadline(100.0) is None  # no flight left to resend
    assert follower.on_ack(ack(resend, 3), deadline + 0.2) is None  # and the second is now late


def test_a_slow_secondary_is_learned_from_the_ack_of_a_resent_flight(follower):
    first = send_next(follower, 1, 0.0)
    follower.on_status(status(0), 1.5)
    resend = follower.next_send(1, 1.5)  # the 1 s first guess was too short
    follower.sent(resend, 1, 1.5)
    follower.on_ack(ack(first, 1), 3.0)  # the first attempt's ACK: a 3 s round trip
    send_next(follower, 2, 3.0)
    assert follower.retry_deadline(3.0) - 3.0 >= 3.0 + MIN_RETRY_S  # not resent again


def test_backoff_is_capped(follower):
    send_next(follower, 1, 0.0)
    now = 0.0
    for _ in range(12):  # a lossy link: PONGs get through, the APPEND never does
        now = follower.retry_deadline(now)
        follower.on_status(status(0), now)
        follower.sent(follower.next_send(1, now), 1, now)
    assert follower.retry_deadline(now) - now <= SETTINGS.retry_backoff_max * 1.25


def test_round_trip_measurement_sets_the_retry_timeout(follower):
    for i in range(8):  # a secondary that takes 3 s, measured on flights sent once
        follower.on_status(status(i), 10.0 * i)  # its PONGs keep it healthy
        send = send_next(follower, i + 1, 10.0 * i)
        follower.on_ack(ack(send, i + 1), 10.0 * i + 3.0)
    follower.on_status(status(8), 100.0)
    send_next(follower, 9, 100.0)
    assert follower.retry_deadline(100.0) - 100.0 >= 3.0 + MIN_RETRY_S


def test_restart_rewinds_to_the_reported_length(follower):
    for _ in range(2):
        send = send_next(follower, 20, 0.0)
        follower.on_ack(ack(send, send.stop), 0.1)
    assert follower.acked_length == 20
    follower.on_status(status(0, incarnation="inc-2"), 1.0)  # restarted empty
    assert follower.acked_length == 0 and not follower.holds(5)
    assert send_next(follower, 20, 1.0).start == 0
    # a reply from the old run, delayed on the way, must not undo the rewind
    assert follower.on_status(status(20, incarnation="inc-1"), 1.1) is False
    assert follower.acked_length == 0


def test_health_follows_missed_heartbeats():
    settings = SETTINGS
    assert health_at(3.9, None, 0.0, settings) is Health.UNKNOWN
    assert health_at(4.0, None, 0.0, settings) is Health.UNHEALTHY
    assert health_at(11.5, 10.0, 0.0, settings) is Health.HEALTHY
    assert health_at(12.0, 10.0, 0.0, settings) is Health.SUSPECTED
    assert health_at(14.0, 10.0, 0.0, settings) is Health.UNHEALTHY


def test_unhealthy_secondary_gets_no_data_until_it_answers(follower):
    send_next(follower, 5, 0.0)
    assert follower.health(10.0) is Health.UNHEALTHY
    assert follower.next_send(50, 10.0) is None
    assert follower.retry_deadline(10.0) is None  # no spinning on an overdue resend
    follower.on_status(status(2), 10.5)  # back, holding 2
    assert follower.health(10.5) is Health.HEALTHY
    assert send_next(follower, 50, 10.5).start == 2  # resends from what it holds


def test_next_health_change_is_the_next_threshold_of_silence(follower):
    follower.on_status(status(0), 10.0)
    assert follower.next_health_change(10.5) == 12.0  # suspected after 2 beats
    assert follower.next_health_change(12.5) == 14.0  # unhealthy after 4
    assert follower.next_health_change(14.5) is None  # nothing left to change
    fresh = Progress("s2", "tcp://x:2", SETTINGS, now=0.0, rng=random.Random(1))
    assert fresh.next_health_change(1.0) == 4.0  # never heard: unhealthy after the grace


def test_a_catch_up_after_a_restart_logs_when_it_finishes(follower, caplog):
    caplog.set_level("INFO", logger="primary.follower")
    follower.on_status(status(2, incarnation="inc-2"), 1.0)  # restarted holding 2 of 5
    follower.note_catch_up(5, 1.0)
    assert "caught up" not in caplog.text
    send = send_next(follower, 5, 1.0)
    follower.on_ack(ack(send, 5, incarnation="inc-2"), 1.25)
    follower.note_catch_up(5, 1.25)
    assert "s1 caught up: 3 messages in 0.25s" in caplog.text


def test_nothing_is_sent_before_a_reply_under_this_run_tells_the_length():
    follower = Progress("s1", "tcp://x:1", SETTINGS, now=0.0, rng=random.Random(1))
    follower.follow_run(HISTORY, RUN)
    follower.on_status(status(7, run=Run(0, "old")), 0.0)  # not yet following this run
    assert follower.next_send(10, 0.0) is None and not follower.holds(0)
    follower.on_status(status(7), 0.1)  # it kept 7 messages across the restart
    send = follower.next_send(10, 0.1)
    assert (send.start, send.stop) == (7, 10), "only the missing tail is sent"


def test_a_secondary_of_another_history_is_diverged_and_never_written_to(follower, caplog):
    follower.on_status(status(3, history="another", run=Run(9, "x")), 0.5)
    assert follower.health(0.5) is Health.DIVERGED
    assert follower.status.health(0.5, SETTINGS) is Health.DIVERGED
    assert follower.next_send(10, 0.5) is None and not follower.holds(0)
    assert "s1 is diverged" in caplog.text and "empty its DATA_DIR" in caplog.text
    follower.on_status(status(0), 0.6)  # emptied and back: it follows again
    assert follower.health(0.6) is Health.HEALTHY and follower.next_send(10, 0.6) is not None


def test_a_secondary_following_a_newer_run_is_diverged(follower):
    follower.on_status(status(3, run=Run(RUN.number + 1, "newer")), 0.5)
    assert follower.health(0.5) is Health.DIVERGED


def test_a_length_below_what_was_acknowledged_rewinds_and_resends(follower):
    send = send_next(follower, 5, 0.0)
    follower.on_ack(ack(send, 5), 0.05)
    assert follower.holds(4)
    follower.on_status(status(0), 0.1)  # same incarnation, yet it shows nothing
    assert not follower.holds(4), "a secondary that shows nothing must not count as holding 4"
    resend = follower.next_send(5, 0.1)
    assert (resend.start, resend.stop) == (0, 5)


def test_silence_while_the_primary_itself_stalled_does_not_count(follower):
    follower.on_status(status(0), 1.0)
    follower.excuse_silence(8.0, 9.5)  # the primary was paused from 1.0 to about 9.5
    assert follower.health(9.5) is Health.HEALTHY
    assert follower.status.health(9.5, SETTINGS) is Health.HEALTHY
    assert follower.health(9.0 + 4 * SETTINGS.heartbeat_interval) is Health.UNHEALTHY


def test_a_secondary_that_claims_entries_never_sent_stays_diverged_until_it_starts_afresh(follower):
    follower.claims_unsent("inc-1", 13, 12)  # a forged frame planted seq 12
    assert follower.health(0.1) is Health.DIVERGED and follower.status.diverged.startswith("it claims 13")
    follower.on_status(status(12), 0.2)  # the primary appended seq 12 meanwhile: no longer "more"...
    assert follower.health(0.2) is Health.DIVERGED  # ...but which of its entries is false is unknown
    assert follower.next_send(20, 0.2) is None  # not written to
    follower.on_status(status(0, incarnation="inc-2"), 0.3)  # restarted without its state
    assert follower.health(0.3) is Health.HEALTHY and follower.status.diverged is None
