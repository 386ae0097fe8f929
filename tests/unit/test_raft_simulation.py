"""shared.consensus.raft under a seeded simulation.

The simulation (tests/support/raft_sim.py) runs whole clusters through lost,
late, repeated and reordered messages, partitions and crashes, checking
Raft's safety after every call to a node, then checks that the cluster
recovers once the faults stop and that what its clients saw is
linearizable. A failure names its seed and step: replay it with
``simulate(seed, size, steps, ...)``. The rules one at a time, driven by
hand, are in test_raft_rules.py; the newer faults (lost disks, forgeries,
previous lives, compaction, fixed roles, reads) in test_raft_faults.py.

The demos break one rule each, by overriding one method, and show that the
simulation finds the violation on a kept seed, which the intact rules pass:
so the passing runs mean something. A change to the core changes every
run's course, so a kept seed may stop showing it: ``first_violation`` over
range(200) finds new ones in seconds.

Sweeps are sized to keep every test_raft_*.py file under a minute together;
RAFT_SIM_SEEDS=N widens every sweep N times, for a longer run by hand.
"""

from __future__ import annotations

import os

import pytest

from shared.consensus.raft import HardState, RaftNode
from tests.support.raft_sim import (
    CRASHY, PRIMARY_HUNTER, STORMY, Faults, assert_caught, rejoin_after_isolation, simulate,
)

STEPS = 2000  # 10 s of simulated time: a hundred election timeouts
PROFILES = {"default": Faults(), "stormy": STORMY, "primary-hunter": PRIMARY_HUNTER, "crashy": CRASHY}
#: Seeds that failed once, while the harness or the core was being written.
KEPT_SEEDS = [
    (22, 3, "stormy"),  # the primary stepped down just after settling: writes lost, not converged
    (60, 3, "default"), (65, 3, "default"),  # primaries were still cut off after the faults stopped
    (25, 3, "primary-hunter"), (51, 3, "primary-hunter"), (77, 3, "primary-hunter"),
    (5, 5, "primary-hunter"), (14, 5, "primary-hunter"), (15, 5, "primary-hunter"),
]


def seeds(count: int, first: int = 0) -> range:
    """``count`` seeds from ``first``, times RAFT_SIM_SEEDS (1 unless set)."""
    return range(first, first + count * int(os.environ.get("RAFT_SIM_SEEDS", "1")))


def batch_for(seed: int) -> int:
    """Half the runs send at most 4 entries at a time: a lagging secondary then
    catches up over many round trips, holding entries no AppendEntries has checked."""
    return 4 if seed % 2 else 64


# -- The simulation ---------------------------------------------------------------

@pytest.mark.parametrize("seed", seeds(40))
def test_a_faulty_run_of_3_nodes_keeps_raft_safe_and_then_recovers(seed):
    simulate(seed, 3, STEPS, max_batch=batch_for(seed))


@pytest.mark.parametrize("seed", seeds(16))
def test_a_faulty_run_of_5_nodes_keeps_raft_safe_and_then_recovers(seed):
    simulate(seed, 5, STEPS, max_batch=batch_for(seed))


@pytest.mark.parametrize("profile", ["stormy", "primary-hunter", "crashy"])
@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(3, first=200))
def test_harsher_faults_keep_raft_safe_too(seed, size, profile):
    simulate(seed, size, STEPS, PROFILES[profile])


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(6, first=300))
def test_a_new_cluster_whose_nodes_all_start_not_caught_up_elects_and_stays_safe(seed, size):
    """What a shell does for a DATA_DIR it has just created: the nodes must still elect."""
    simulate(seed, size, STEPS, new_disks_caught_up=False)


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(6))
def test_nodes_that_stand_at_once_keep_raft_safe_and_recover(seed, size):
    # Every node stands at its first tick (and again each heartbeat while no
    # term has begun), restarts included: far more eager than the one node the
    # shell lets, and still only PreVote's questions change nothing.
    simulate(seed, size, STEPS, PRIMARY_HUNTER, new_disks_caught_up=False, stands_at_once=True)


@pytest.mark.parametrize(("seed", "size", "profile"), KEPT_SEEDS)
def test_kept_regression_seeds(seed, size, profile):
    simulate(seed, size, STEPS, PROFILES[profile])


# -- Each rule broken on purpose is caught -------------------------------------------

class ForgetsItsVote(RaftNode):
    def _hard_state(self):
        return HardState(self.term, None)  # a restart forgets whom it voted for


class IgnoresTheElectionRestriction(RaftNode):
    def _log_is_up_to_date(self, last_log_term, log_length):
        return True


class CountsReplicasOfOlderTerms(RaftNode):
    def _may_commit(self, length):
        return True


class WithoutPreVote(RaftNode):
    def _campaigns_with_pre_vote(self):
        return False


LOST_COMMITTED_ENTRY = ("leader completeness", "committed entry")

def test_a_vote_that_is_not_persisted_lets_two_primaries_share_a_term():
    assert_caught(ForgetsItsVote, [163, 204], 5, STEPS, CRASHY, ("two primaries in term",))


def test_without_the_election_restriction_a_committed_entry_is_lost():
    assert_caught(IgnoresTheElectionRestriction, [0, 1], 3, STEPS, Faults(), LOST_COMMITTED_ENTRY)


def test_committing_an_older_terms_entry_by_counting_replicas_loses_it():
    """Figure 8 of the paper. One entry per AppendEntries keeps a secondary's
    match on the older entry, before the new primary's no-op, for a round trip."""
    assert_caught(CountsReplicasOfOlderTerms, [2, 3], 3, STEPS, PRIMARY_HUNTER, LOST_COMMITTED_ENTRY, max_batch=1)


def test_with_pre_vote_a_node_that_was_cut_off_rejoins_without_deposing_the_primary():
    before, after = rejoin_after_isolation(RaftNode)
    assert after == before


def test_without_pre_vote_a_node_that_was_cut_off_deposes_the_primary_on_return():
    (_, term_before), (_, term_after) = rejoin_after_isolation(WithoutPreVote)
    assert term_after > term_before + 1  # it raised its term alone, then forced it on all
