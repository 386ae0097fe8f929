"""shared.consensus.raft under the newer faults of the seeded simulation.

Lost disks (with whole-cluster restarts, long logs and small batches),
messages from a node's previous life, a forger, compaction with keyed writes
(so snapshots, in chunks), the fixed roles, leadership transfers, and
clients that read on every node: each profile of tests/support/raft_sim.py
runs a few seeds, checks the invariants after every call, then that the
cluster recovers and that what its clients saw is linearizable. Each also
checks that its fault happened, so a passing run means the fault was met.

The demos switch one fix of the rewritten core off, by overriding one
method (of RaftNode, or of the Recovery a fixed primary without its log
runs), and show that a kept seed finds the violation the fix prevents,
which the intact core passes (raft_sim.assert_caught). The other new fixes
are shown by hand in test_raft_rules.py.

The sweeps tell the nodes of each connection that comes up (``connections``),
as the shells do; the demos and test_raft_simulation.py do not, so that their
seeds replay as they did.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace

import pytest

from shared.consensus import raft, raft_recovery
from shared.consensus.raft import RaftNode, Role
from tests.support.raft_sim import (
    COMPACTING, CRASHY, FORGED, FORGED_ENTRIES, FORGERIES, LATE, LOST_DISKS, READS, WHOLE_RESTARTS, Faults, assert_caught,
    first_violation, simulate,
)

STEPS = 2000  # 10 s of simulated time
#: Every crash loses the disk, and the node is back within a round trip,
#: while the votes of the term it left are still in flight.
QUICK_LOST_DISKS = replace(CRASHY, lose_disk=1.0, late=0.5)
#: The fixed roles with every log in memory.
IN_MEMORY = {"fixed": True, "primary_in_memory": True, "secondaries_in_memory": True, "connections": True}
#: A fixed primary cut off from every secondary while it fetches its log,
#: with RECOVERY_TIMEOUT 0.3 s, and pages of 4 entries (safety only: what a
#: secondary cut off before the decision held is forgiven, which the clients'
#: history would not be).
CUT_OFF_FETCHING = (Faults(read=0.1, cut_off_fetching=0.1),
                    {"fixed": True, "primary_in_memory": True, "connections": True,
                     "recovery_timeout": 0.3, "max_batch": 4})

#: A fixed primary whose recovery often ends before a member of the cluster it
#: led answers (RECOVERY_TIMEOUT 0.3 s, partitions, cut off while it fetches),
#: every log in memory: it begins new clusters, which empty secondaries join,
#: and the next recovery hears members of both.
ABANDONED_CLUSTERS = (Faults(read=0.1, cut_off_fetching=0.1, partition=0.02),
                      {**IN_MEMORY, "recovery_timeout": 0.3})


def seeds(count: int, first: int = 0) -> range:
    """``count`` seeds from ``first``, times RAFT_SIM_SEEDS (1 unless set)."""
    return range(first, first + count * int(os.environ.get("RAFT_SIM_SEEDS", "1")))


def meets_its_fault(seed: int, count: int, met: bool) -> bool:
    """Whether a run met the fault its sweep is about, where that is asserted:
    each of the sweep's ``count`` default seeds does (which proves the sweep
    tests something); of the seeds RAFT_SIM_SEEDS adds, checked for safety,
    a few meet no such fault (no restart came while it could strike)."""
    return met or seed >= count


# -- Each fault, its invariants checked throughout, then recovery and linearizability ------

@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(5))
def test_lost_disks_with_whole_restarts_and_long_logs_keep_raft_safe(seed, size):
    """At most one disk lost at a time, only while the others are intact (the
    assumption Raft's guarantees rest on); 4 entries per AppendEntries, so a
    log is many batches long and a restarted primary's commit length is stale."""
    cluster = simulate(seed, size, STEPS, LOST_DISKS, connections=True, max_batch=4)
    assert cluster.counts.lost_disks


def test_lost_disks_meet_whole_cluster_restarts():
    """Not every seed restarts the whole cluster; the sweep above does."""
    runs = [simulate(seed, 3, STEPS, LOST_DISKS, connections=True, max_batch=4).counts for seed in seeds(5)]
    assert sum(counts.restarts_all for counts in runs) and all(counts.lost_disks for counts in runs)


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(5))
def test_messages_from_a_previous_life_keep_raft_safe(seed, size):
    cluster = simulate(seed, size, STEPS, LATE, connections=True)
    assert cluster.counts.late


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(5))
def test_forged_frames_are_refused_or_harmless_and_the_cluster_still_recovers(seed, size):
    cluster = simulate(seed, size, STEPS, FORGED, connections=True)
    assert cluster.counts.forged and cluster.counts.refused


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(3))
def test_entries_no_log_could_hold_are_refused_and_the_cluster_still_recovers(seed, size):
    cluster = simulate(seed, size, STEPS, FORGED_ENTRIES, connections=True)
    assert cluster.counts.refused["implausible entries"]


def test_every_kind_of_forgery_is_met_and_refused():
    refused = Counter()
    for seed in range(3):
        refused += simulate(seed, 3, STEPS, FORGED, recovers=False).counts.refused
    assert set(FORGERIES) <= set(refused)


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(4))
def test_compaction_and_snapshots_keep_raft_safe(seed, size):
    """Snapshots carry the Idempotency-Keys of the compacted writes; the checker
    compares each installed start with the committed log. (One chunk each:
    the chunks' own rules are driven by hand in test_raft_rules.py.)"""
    cluster = simulate(seed, size, STEPS, COMPACTING, connections=True)
    assert cluster.counts.compactions and cluster.checker.committed.keys


def test_lagging_secondaries_are_sent_snapshots():
    assert sum(simulate(seed, 3, STEPS, COMPACTING).counts.snapshots_installed for seed in range(3))


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(4))
def test_whole_cluster_restarts_keep_raft_safe(seed, size):
    cluster = simulate(seed, size, STEPS, WHOLE_RESTARTS, connections=True)
    assert cluster.counts.restarts_all


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(5))
def test_reads_on_every_node_across_transfers_are_linearizable(seed, size):
    cluster = simulate(seed, size, STEPS, READS, connections=True)
    assert cluster.history.reads and cluster.counts.transfers


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(4))
def test_the_fixed_roles_keep_one_primary_and_what_it_committed(seed, size):
    """n0 a FIXED_PRIMARY on a disk, the others FIXED_SECONDARY: the default
    faults, reads forwarded to the primary, the primary's restarts included."""
    cluster = simulate(seed, size, STEPS, Faults(read=0.1), fixed=True, connections=True)
    assert set(cluster.checker.primaries.values()) == {"n0"} and len(cluster.checker.primaries) > 1


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(4))
def test_a_fixed_primary_in_memory_takes_its_log_over_at_each_restart(seed, size):
    """The same, with n0's log in memory: each restart recovers the log from the
    secondaries (raft_recovery) before a new term begins; nothing committed is lost."""
    cluster = simulate(seed, size, STEPS, Faults(read=0.1), fixed=True, primary_in_memory=True,
                       connections=True)
    assert set(cluster.checker.primaries.values()) == {"n0"}
    assert meets_its_fault(seed, 4, cluster.counts.recoveries > 1)


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(4))
def test_fixed_secondaries_in_memory_that_restart_lose_nothing_committed(seed, size):
    """Every node's log in memory: a secondary's crash loses its log too,
    wherever no committed entry can go with it (raft_sim: the others hold
    them all), in some runs while the primary fetches its log from it (a
    kept seed below meets that for certain)."""
    cluster = simulate(seed, size, STEPS, Faults(read=0.1), **IN_MEMORY)
    assert meets_its_fault(seed, 4, cluster.counts.recoveries > 1 and cluster.counts.lost_logs > 0)


@pytest.mark.parametrize("seed", seeds(6))
def test_a_fixed_primary_cut_off_while_it_fetches_its_log_keeps_what_its_sources_held(seed):
    """Safety throughout; and once the network heals, the recovery ends (it
    waits for silent sources, however long: not for ever once they answer)."""
    faults, options = CUT_OFF_FETCHING
    cluster = simulate(seed, 3, STEPS, faults, recovers=False, **options)
    assert meets_its_fault(seed, 6, cluster.counts.recoveries > 0 and cluster.counts.cut_off_fetching > 0)
    cluster.quiet()
    primary = cluster.nodes["n0"]
    cluster.run_until(lambda: primary.role is Role.PRIMARY, 15.0, "the primary's recovery ended")


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", seeds(4))
def test_a_fixed_primary_that_left_a_cluster_recovers_the_one_it_led_last(seed, size):
    """Safety only: a recovery that hears members of a cluster the primary left
    and of the one it led since takes the newer, and loses nothing it committed."""
    faults, options = ABANDONED_CLUSTERS
    cluster = simulate(seed, size, STEPS, faults, recovers=False, **options)
    assert meets_its_fault(seed, 4, cluster.counts.recoveries > 1)


# -- Each new fix switched off is caught ------------------------------------------------------

class CaughtUpByAnyCommitLength(RaftNode):
    """The rule before the review: a secondary that lost its disk counts as
    caught up once its match reaches the commit length its primary has,
    stale (after a restart) or not."""

    def _vouches_for(self, progress):
        return progress.incarnation if progress.match >= self._log.commit_length else None


class VotesAsIfItLostNothing(RaftNode):
    """A node that lost its disk votes as if it had voted in no term."""

    def _may_vote_before_caught_up(self, request, now):
        return True


class ReadsWithoutConfirming(RaftNode):
    """Answers a read with its commit length at once: neither waits for its
    term's first entry to be committed nor asks a majority whether it is
    still primary."""

    def _take_read(self, read, now):
        self._answer_read(read, self._log.commit_length)


class KeepsAnEmptyLogsCluster(RaftNode):
    """A fixed secondary that never held an entry still refuses a primary of
    another cluster than the one it heard first."""

    def _may_join_another_cluster(self, message):
        return False


class RunsAboveWhatItHeardOnly(RaftNode):
    """Begins a run after recovering only above the terms it heard, as it did:
    a run begun without hearing a member of the cluster it led may then rank
    below that cluster's, whose longer log the next recovery takes back."""

    def _run_after_recovery(self, recovery):
        return max(self._term, recovery.highest_term) + 1


class TakesAnyEntryTerms(RaftNode):
    """Takes entries whatever their terms, as long as §5.3's check passes."""

    @staticmethod
    def _check_entry_terms(message):
        pass


class WithoutTermBound(RaftNode):
    """Takes any term a frame carries."""

    def _check_term(self, message):
        pass


def test_a_stale_commit_length_that_catches_up_a_lost_disk_loses_committed_entries():
    """The review's scenario, found by the lost-disk profile on its own: a
    primary re-elected after a restart (commit length 0 again) vouches for the
    node that lost its disk on its first frame; once that primary dies, the
    node's vote elects a lagging one, which lacks committed entries."""
    assert_caught(CaughtUpByAnyCommitLength, [1, 6], 3, STEPS, LOST_DISKS, ("leader completeness",),
                  max_batch=4)


def test_a_lost_disk_that_votes_as_if_it_never_voted_elects_two_primaries_in_a_term():
    assert_caught(VotesAsIfItLostNothing, [8, 86], 3, STEPS, QUICK_LOST_DISKS, ("two primaries in term",))


def test_without_the_term_bound_a_forged_huge_term_leaves_the_cluster_unable_to_elect():
    """The nodes take a term past what the wire carries (2**53): their next
    ballot cannot be sent, and once the faults stop no primary is elected."""
    assert_caught(WithoutTermBound, [0, 1], 3, STEPS, FORGED, ("no primary",), recovers=True)


def test_entries_taken_whatever_their_terms_let_a_forged_term_overwrite_committed_entries():
    """One forged entry of a term far above every real one: its holder's log
    outranks every other, so it is elected without entries committed before."""
    assert_caught(TakesAnyEntryTerms, [0, 1], 3, STEPS, FORGED_ENTRIES,
                  ("committed entry", "leader completeness"), connections=True)


def test_reads_answered_without_confirmation_are_not_linearizable():
    assert_caught(ReadsWithoutConfirming, [0, 1], 3, STEPS, READS, ("not linearizable",), recovers=True)


def test_runs_numbered_only_above_the_terms_heard_recover_a_cluster_the_primary_left():
    faults, options = ABANDONED_CLUSTERS
    assert_caught(RunsAboveWhatItHeardOnly, [47, 111], 3, STEPS, faults,
                  ("which a secondary that answered it held",), **options)


def test_an_empty_fixed_secondary_that_keeps_its_first_cluster_never_follows_a_recovered_primary():
    """An in-memory primary restarts without hearing it and names a new cluster:
    refusing that cluster, with nothing to keep, leaves it out for good."""
    assert_caught(KeepsAnEmptyLogsCluster, [48], 3, STEPS, Faults(read=0.1), ("no primary",), recovers=True,
                  fixed=True, primary_in_memory=True, connections=True)


# -- The recovery's rules switched off (raft_recovery, in the core's place) ------------------

class EndsAtAnyEmptyPage(raft_recovery.Recovery):
    """Takes a source's empty page as the log's end, as it did, though a
    candidate said it held more. (Of a source that restarted empty, only the
    page that answers the first fetch is empty and taken: later ones begin
    where it holds nothing, and the page check passes it over.)"""

    def _on_end_of(self, source, now):
        self._finish(self.cluster, now)


class TakesTheClusterMostKeep(raft_recovery.Recovery):
    """Takes the cluster most answering members keep (then the longest log),
    as it did, however old its newest run."""

    @staticmethod
    def _choose_cluster(holders):
        counts = Counter(reply.cluster for reply in holders.values())
        longest = {c: max(r.log_length for r in holders.values() if r.cluster == c) for c in counts}
        return max(counts, key=lambda c: (counts[c], longest[c]))


class GivesUpSilentSources(raft_recovery.Recovery):
    """Passes a source silent for RECOVERY_TIMEOUT over for good, as it did,
    and with none left ends with what it took."""

    def _on_silent_source(self, silent, now):
        self._pass_over(silent, "did not answer a fetch", now)


def assert_recovery_rule_caught(monkeypatch, broken: type, kept_seeds: list[int], faults: Faults,
                                **options) -> int:
    """assert_caught for a rule of raft_recovery: some kept seed's run loses what
    a secondary that answered the recovery held with ``broken`` in the core,
    and is safe with the rule intact."""
    tried = []
    for seed in kept_seeds:
        intact = first_violation([seed], 3, STEPS, RaftNode, faults, **options)
        with monkeypatch.context() as patched:
            patched.setattr(raft, "Recovery", broken)
            found = first_violation([seed], 3, STEPS, RaftNode, faults, **options)
        if intact is None and found and "which a secondary that answered it held" in found[1]:
            return seed
        tried.append(f"{seed}: {intact[1] if intact else found[1] if found else 'no violation'}")
    raise AssertionError(f"no seed caught {broken.__name__} ({'; '.join(tried)})")


def test_a_recovery_that_ends_at_any_empty_page_loses_what_the_others_held(monkeypatch):
    """The source restarts in memory before the first fetch (a secondary in
    memory comes back empty) and answers it with an empty page: taken as the
    log's end, the recovery lacked what the other secondary held,
    acknowledged entries included."""
    seed = assert_recovery_rule_caught(monkeypatch, EndsAtAnyEmptyPage, [33, 41, 59], Faults(read=0.1),
                                       **IN_MEMORY)
    assert simulate(seed, 3, STEPS, Faults(read=0.1), **IN_MEMORY).counts.lost_while_primary_fetched


def test_a_recovery_that_gives_up_silent_sources_loses_what_they_held(monkeypatch):
    """Every source falls silent mid-fetch (the primary is cut off): ending with
    what it took, the new run truncated the rest on the secondaries."""
    faults, options = CUT_OFF_FETCHING
    assert_recovery_rule_caught(monkeypatch, GivesUpSilentSources, [0, 1, 8], faults, **options)


def test_a_recovery_that_takes_the_cluster_most_keep_loses_the_newer_one_s_writes(monkeypatch):
    """Members of a cluster the primary left outnumber those of the one it led
    since: taking theirs dropped what the newer cluster had committed."""
    faults, options = ABANDONED_CLUSTERS
    assert_recovery_rule_caught(monkeypatch, TakesTheClusterMostKeep, [96], faults, **options)
