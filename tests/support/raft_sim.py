"""A simulated cluster of shared.consensus.raft nodes, the faults it suffers,
and the invariants it checks.

One ``random.Random(seed)`` drives everything, so a seed replays a run
exactly: a clock advanced in steps of STEP seconds, the network, the faults,
the clients. The faults (``Faults``; each new one is off by default, and
draws nothing from the seed while off, so an older profile replays the same
run):

- the network drops, delays (so reorders) and duplicates messages, and
  splits the nodes into groups for a while; a message whose sender or
  receiver restarted since it was sent is dropped, or (``late``) still
  arrives, at the receiver's new life;
- a node crashes, keeping only what its Readies told the harness to
  persist, and restarts; or the whole cluster does at once;
- a node loses its disk as it crashes, and restarts from an empty one not
  caught up (a shell marks a DATA_DIR it has just created so). At most one
  disk is lost at a time, and only while every other node's is intact:
  Raft's guarantees rest on a majority of disks that keep what they
  acknowledged and voted. A lost disk counts as intact again once its node
  is caught up (it persisted a vote floor) and, as the harness judges from
  the committed log, has held every entry committed so far: a broken rule
  under test may make the node believe the first too early;
- a forger injects frames no node sent (``Forger``);
- a fixed primary is cut off from every secondary while it fetches its log
  (``cut_off_fetching``);
- the primary compacts its log now and then, and some writes carry an
  Idempotency-Key, so lagging secondaries are sent snapshots with keys;
- the primary hands its role over (``transfer_leadership``).

Clients write to any primary and read (``read_index``) on any node; the
appends and reads are recorded in simulated time (``ClientHistory``).

The fixed configuration runs n0 as a FIXED_PRIMARY and the others as
FIXED_SECONDARY; ``primary_in_memory`` wipes n0's disk at each of its
restarts, so it recovers its log from the secondaries (raft_recovery), and
``secondaries_in_memory`` the secondaries' at each of theirs, a recovery's
sources mid-fetch included.
With ``connections``, the harness tells nodes when a connection comes up
(``peer_connected``), as a shell does: at each start, both ways, and
across a partition that heals.

After every call to a node, Checker looks at the Ready it returned and the
node's state, and raises Violation (an AssertionError naming the seed and
the step) when a guarantee breaks; see Checker for which. Every check costs
what the call changed, not the log's size. ``check_recovers`` then stops the
faults and checks that the cluster elects, converges, and that what the
clients saw is linearizable (tests/support/linearizability.py).

Thread: the test's only.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from shared.consensus.raft import (
    MAX_TERM, MAX_TERM_JUMP, Entry, HardState, Mode, NotPrimary, RaftNode, Ready, Refused, Role,
    SafetyViolation, VoteReply,
)
from shared.consensus.raft_log import KeyRecord, MemoryStorage, Snapshot, body_digest, digest_after
from shared.consensus.raft_messages import (
    AppendEntries, AppendReply, Heartbeat, HeartbeatReply, Message, PreVoteRequest, StateReply,
    VoteRequest,
)
from shared.wire.frames import MAX_SEQ
from tests.support.linearizability import OK, REFUSED, UNKNOWN, Append, Read, check_linearizable

STEP = 0.005  # seconds of simulated time per step
ELECTION_TIMEOUT = 0.1
HEARTBEAT_INTERVAL = 0.02
#: The largest term a frame carries on the wire (shared.wire: JSON numbers
#: stay exact up to 2**53): the simulated network cannot carry a larger one.
WIRE_MAX_TERM = MAX_SEQ


#: The kinds of frames the forger (``Forger``) sends by default.
FORGERIES = ("huge term", "another sender", "unasked reply")


@dataclass(frozen=True)
class Faults:
    """What goes wrong, as chances per message, per step or per crash, and how long it lasts."""

    drop: float = 0.05
    duplicate: float = 0.03
    latency: tuple[float, float] = (0.001, 0.015)
    partition: float = 0.004  # per step, while the network is whole
    partition_for: tuple[float, float] = (0.05, 1.5)
    isolate_primary: float = 0.002  # per step, while the network is whole: the primary alone
    crash: float = 0.003  # per step, for each node that is up
    down_for: tuple[float, float] = (0.005, 1.0)
    propose: float = 0.05  # per step: a client writes 1 to 3 entries to the primary
    #: Per message whose sender or receiver restarted since it was sent: it arrives anyway.
    late: float = 0.0
    #: Per crash: the disk is lost with it (within the limit in the module's docstring).
    lose_disk: float = 0.0
    restart_all: float = 0.0  # per step: every node crashes, and each restarts in down_for
    forge: float = 0.0  # per step: the forger injects one frame
    forgeries: tuple[str, ...] = FORGERIES  # the kinds of frames the forger picks from
    compact: float = 0.0  # per step: the primary compacts to a random committed length
    keyed: float = 0.0  # per entry written: it carries an Idempotency-Key
    transfer: float = 0.0  # per step: the primary hands its role over
    #: Per step while a fixed primary fetches its log: it is cut off alone, for partition_for.
    cut_off_fetching: float = 0.0
    read: float = 0.0  # per step: a client reads (read_index) on a random node


#: The faults stop; the network still delays and reorders.
QUIET = Faults(drop=0.0, duplicate=0.0, partition=0.0, isolate_primary=0.0, crash=0.0, propose=0.0)
#: Lossy, slow (latency past the heartbeat interval), split often, and busy.
STORMY = Faults(drop=0.2, duplicate=0.05, latency=(0.001, 0.05), partition=0.03,
                partition_for=(0.02, 0.3), crash=0.01, down_for=(0.005, 0.2), propose=0.3)
#: Nodes crash often and come back within a round trip, while votes are still in flight.
CRASHY = Faults(crash=0.03, down_for=(0.001, 0.02))
#: Each new primary is soon cut off alone, often before its first entries are
#: replicated: the paper's Figure 8 needs two of those in a row.
PRIMARY_HUNTER = Faults(isolate_primary=0.1, partition_for=(0.01, 0.3))
#: Lost disks, with what makes them dangerous: a busy writer, so that logs are
#: longer than one batch (run it with a small max_batch), whole-cluster
#: restarts, so that every commit length is stale at once (a restarted node
#: learns it again), and lagging nodes (partitions). At most one disk is
#: lost at a time, and only while the others are intact (the module's docstring).
LOST_DISKS = Faults(crash=0.01, down_for=(0.005, 0.3), propose=0.4, partition=0.01,
                    partition_for=(0.05, 0.5), lose_disk=0.5, restart_all=0.004, late=0.3)
#: Messages from a node's previous life arrive after it restarted, often.
LATE = Faults(crash=0.02, down_for=(0.001, 0.05), latency=(0.001, 0.04), late=0.5, propose=0.2)
#: The forger at work, on top of the default faults.
FORGED = Faults(forge=0.05)
#: The forger sends, in its primary's name, entries no log could hold.
FORGED_ENTRIES = Faults(forge=0.05, forgeries=("implausible entries",))
#: Compaction under a busy writer whose writes often carry keys, and partitions
#: long enough for a secondary to fall behind the primary's start.
COMPACTING = Faults(compact=0.05, keyed=0.3, propose=0.3, partition=0.01)
#: Whole-cluster restarts, besides the single crashes.
WHOLE_RESTARTS = Faults(restart_all=0.005, down_for=(0.005, 0.3), propose=0.2)
#: Clients read on every node while the primary changes, often by transfer.
READS = Faults(read=0.2, propose=0.2, transfer=0.01, isolate_primary=0.01)


class Violation(AssertionError):
    """A guarantee broke, or the cluster did not recover in time."""


class Disk:
    """What a node persisted, applied in the order a Ready gives it: its hard
    state, and its log (a MemoryStorage, which the node reads as it runs).
    ``incarnation`` names the lives of a node that find this disk: a shell
    names a life anew unless its log survives whole, and the simulation's
    disks survive every crash whole (as with FSYNC=always) unless lost."""

    def __init__(self, caught_up: bool = True, incarnation: str = "") -> None:
        self.hard_state = HardState(caught_up=caught_up)
        self.storage = MemoryStorage()
        self.incarnation = incarnation

    def apply(self, ready: Ready) -> None:
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
        self.storage.apply(ready.log)

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self.storage.all_entries


def messages_of(entry: Entry) -> list[str]:
    """The messages an entry holds: its body is their JSON string literals, joined by commas."""
    return json.loads(b"[" + entry.body + b"]") if entry.count else []


# -- The invariants -------------------------------------------------------------------

@dataclass
class _Mirror:
    """The checker's view of one node's log: a hash of each of its prefixes,
    where the first ``base`` are the committed log's (it installed a snapshot
    there) and ``own`` holds the rest; and its commit length in its current life."""

    base: int = 0
    own: list[int] = field(default_factory=list)
    commit_length: int = 0
    term: int = 0  # the node's term at its last Ready

    def __len__(self) -> int:
        return self.base + len(self.own)


class _CommittedLog:
    """Every entry ever reported committed, by any node, in order: the hash of
    each prefix, each entry's checksum chain, the messages, and the keys.
    State machine safety makes this one log."""

    def __init__(self) -> None:
        self.hashes: list[int] = []
        self.digests: list[int] = []
        self.entries: list[Entry] = []
        self.first_ids = [0]  # messages before each index
        self.messages: list[str] = []
        self.ids: dict[str, int] = {}  # message -> its id
        self.keys: list[KeyRecord] = []  # of its keyed entries, by index

    def __len__(self) -> int:
        return len(self.hashes)

    def add(self, prefix_hash: int, entry: Entry) -> None:
        index = len(self.hashes)
        self.hashes.append(prefix_hash)
        self.digests.append(digest_after(self.digests[-1] if self.digests else 0, entry))
        self.entries.append(entry)
        if entry.key is not None:
            self.keys.append(KeyRecord(entry.key, index, self.first_ids[-1], entry.count,
                                       body_digest(entry.body)))
        for message in messages_of(entry):
            self.ids[message] = len(self.messages)
            self.messages.append(message)
        self.first_ids.append(len(self.messages))

    def keys_before(self, length: int) -> tuple[KeyRecord, ...]:
        return tuple(self.keys[:bisect.bisect_left([k.index for k in self.keys], length)])

    def cut(self, length: int) -> None:
        """Forget the entries from ``length`` on (a recovery dropped them, as it may)."""
        for message in self.messages[self.first_ids[length]:]:
            del self.ids[message]
        del self.messages[self.first_ids[length]:]
        del self.hashes[length:], self.digests[length:], self.entries[length:], self.first_ids[length + 1:]
        self.keys = list(self.keys_before(length))


class Checker:
    """The guarantees, checked incrementally as each Ready comes:

    - election safety: at most one primary per term;
    - log matching (§5.3): one (index, term) names one entry and one prefix;
    - leader completeness (§5.4): a primary holds every entry committed in
      an earlier term, from its election on;
    - state machine safety: an index committed anywhere holds the same entry
      everywhere, for ever; a commit length never goes back in a node's life
      (but a fixed secondary's, to its log's start, when a newer run of its
      primary begins: that run decides again what is committed), nor past
      its log; no node truncates below it;
    - a Ready reports every change to the log;
    - (in SimCluster.call) a refused message changed nothing, and until the
      forger's first frame no node refuses a message another node sent;
    - a snapshot installed is the committed log's start: its checksum, its
      message count and the Idempotency-Keys in force there.

    The fixed primary without a disk promises less (raft_recovery): the log
    it recovers holds every committed entry that a secondary which answered
    its StateRequest held (``recovered``); what only silent secondaries held
    may be lost, and is then forgiven (``forgiven`` counts it; those
    secondaries' commit lengths are no longer compared). Log matching by
    (index, term) is not checked there (``terms_name_one_writer`` False): a
    new life begins a term above every term its secondaries answered with,
    which its previous life may have begun too, unheard; the two lives'
    entries at one (index, term) differ, and the checksums tell them apart."""

    def __init__(self, names: tuple[str, ...], where: Callable[[], str],
                 up_nodes: Callable[[], list[RaftNode]], storage_of: Callable[[str], MemoryStorage],
                 terms_name_one_writer: bool = True) -> None:
        self._where, self._up_nodes, self._storage_of = where, up_nodes, storage_of
        self._terms_name_one_writer = terms_name_one_writer
        self._mirrors = {name: _Mirror() for name in names}
        self.primaries: dict[int, str] = {}  # term -> the one primary it ever had
        self._prefix_at: dict[tuple[int, int], int] = {}  # (index, term) -> prefix hash
        self.committed = _CommittedLog()
        self._committed_by_term: dict[int, int] = {}  # reporter's term -> longest commit length
        self.forgiven = 0  # committed entries a recovery dropped, as it may
        self._holds_forgiven: set[str] = set()  # nodes whose commit length covers some of them
        #: Told the first message id a recovery forgave, before the committed log forgets it.
        self.on_forgiven: Callable[[int], None] = lambda first_id: None

    def fail(self, what: str) -> None:
        raise Violation(f"{self._where()}: {what}")

    def restarted(self, name: str, start_index: int) -> None:
        """A new life: the commit length is learned again, from the log's start."""
        self._mirrors[name].commit_length = start_index
        self._holds_forgiven.discard(name)

    def lost_disk(self, name: str) -> None:
        self._mirrors[name] = _Mirror()

    def hash_at(self, name: str, length: int) -> int:
        """The hash of the first ``length`` entries of ``name``'s log (0 for none)."""
        mirror = self._mirrors[name]
        if not length:
            return 0
        if length <= mirror.base:
            return self.committed.hashes[length - 1]
        return mirror.own[length - 1 - mirror.base]

    def agreement(self, name: str) -> int:
        """How many leading entries of ``name``'s log are the committed log's."""
        low, high = 0, min(len(self._mirrors[name]), len(self.committed))
        while low < high:  # prefix hashes chain: once they differ, they differ after
            middle = (low + high + 1) // 2
            if self.hash_at(name, middle) == self.committed.hashes[middle - 1]:
                low = middle
            else:
                high = middle - 1
        return low

    def observe(self, node: RaftNode, ready: Ready, recovered: int | None = None) -> None:
        """``recovered``: the fixed primary ended its recovery in this Ready, and
        this many leading committed entries were held by a secondary that answered it."""
        mirror = self._mirrors[node.name]
        if ready.log:
            self._apply_log_changes(node, mirror, ready)
        if len(mirror) != node.log_length:
            self.fail(f"{node.name}'s Ready did not report all its log changes")
        if recovered is not None:
            self._check_recovery(node, recovered)
        if self._forgets_commit(node, mirror, ready.committed):
            mirror.commit_length = node.log_start.index  # what it learns again is checked next
        if ready.committed != mirror.commit_length:
            self._check_commit(node, mirror, ready.committed)
        mirror.term = node.term
        if node.role is Role.PRIMARY:
            self._check_primary(node)

    def _apply_log_changes(self, node: RaftNode, mirror: _Mirror, ready: Ready) -> None:
        changes = ready.log
        if changes.install is not None:
            self._check_snapshot(node, changes.install)
            mirror.base, mirror.own = changes.install.start.index, []
        if changes.truncate_from is not None:
            if changes.truncate_from < max(mirror.commit_length, mirror.base):
                self.fail(f"{node.name} truncated its log from {changes.truncate_from}, "
                          f"below its commit length {mirror.commit_length}")
            del mirror.own[changes.truncate_from - mirror.base:]
        if changes.compact is not None and changes.compact > len(self.committed):
            self.fail(f"{node.name} dropped entries up to {changes.compact}, past what was committed")
        for entry in changes.entries:
            index = len(mirror)
            prefix = hash((self.hash_at(node.name, index), entry.term, entry.body, entry.count, entry.key))
            # Log matching (§5.3): one (index, term) names one entry, and one prefix, ever.
            if self._terms_name_one_writer and self._prefix_at.setdefault((index, entry.term), prefix) != prefix:
                self.fail(f"log matching: {node.name} holds an entry of term {entry.term} at "
                          f"{index} whose log differs from another node's entry there")
            mirror.own.append(prefix)

    def _check_snapshot(self, node: RaftNode, snapshot: Snapshot) -> None:
        start, committed = snapshot.start, self.committed
        if start.index > len(committed):
            self.fail(f"{node.name} installed a start at {start.index}, past what was ever committed")
        if start.index and start.digest != committed.digests[start.index - 1]:
            self.fail(f"{node.name} installed a start at {start.index} whose checksum is not "
                      f"the committed log's")
        if start.first_id != committed.first_ids[start.index]:
            self.fail(f"{node.name} installed a start that counts {start.first_id} messages "
                      f"before {start.index}; the committed log has {committed.first_ids[start.index]}")
        if snapshot.keys != committed.keys_before(start.index):
            self.fail(f"{node.name} installed a start at {start.index} whose keys are not "
                      f"those of the committed entries before it")

    @staticmethod
    def _forgets_commit(node: RaftNode, mirror: _Mirror, committed: int) -> bool:
        """A fixed secondary that a newer run reached: it forgot its commit
        length, and may have learned the new run's, lower, in the same call."""
        return node.mode is Mode.FIXED_SECONDARY and node.term > mirror.term and committed < mirror.commit_length

    def _check_recovery(self, primary: RaftNode, promised: int) -> None:
        kept = self.agreement(primary.name)
        if kept < promised:
            self.fail(f"{primary.name} recovered a log without committed entry {kept}, which a "
                      f"secondary that answered it held ({promised} committed entries)")
        if kept < len(self.committed):
            self.forgiven += len(self.committed) - kept
            self.on_forgiven(self.committed.first_ids[kept])
            self.committed.cut(kept)
            for term, length in self._committed_by_term.items():
                self._committed_by_term[term] = min(length, kept)
            self._holds_forgiven |= {name for name, mirror in self._mirrors.items()
                                     if mirror.commit_length > kept}

    def _check_commit(self, node: RaftNode, mirror: _Mirror, committed: int) -> None:
        if committed < mirror.commit_length:
            self.fail(f"{node.name}'s commit length went back to {committed}")
        if committed > len(mirror):
            self.fail(f"{node.name}'s commit length {committed} is past its log")
        for index in range(mirror.commit_length, committed):
            prefix = self.hash_at(node.name, index + 1)
            if index == len(self.committed):
                self.committed.add(prefix, self._entry_at(node, index))
            elif self.committed.hashes[index] != prefix:
                self.fail(f"committed entry {index} changed: {node.name} now commits another entry there")
        mirror.commit_length = committed
        # A commit length grows only by the primary of the node's own term, so
        # these entries were committed by that term: every later primary holds them.
        by_term = self._committed_by_term
        by_term[node.term] = max(by_term.get(node.term, 0), committed)
        for primary in self._current_primaries():
            if primary.term > node.term:
                self._check_holds_committed(primary, committed)

    def _entry_at(self, node: RaftNode, index: int) -> Entry:
        """A newly committed entry, read from the node's disk (it was applied first)."""
        return self._storage_of(node.name).entry(index)

    def _check_primary(self, node: RaftNode) -> None:
        known = self.primaries.get(node.term)
        if known is None:  # just elected; what is committed later is checked as it comes
            self.primaries[node.term] = node.name
            earlier = [length for term, length in self._committed_by_term.items() if term < node.term]
            self._check_holds_committed(node, max(earlier, default=0))
        elif known != node.name:
            self.fail(f"two primaries in term {node.term}: {known} and {node.name}")

    def _check_holds_committed(self, primary: RaftNode, length: int) -> None:
        """Leader completeness (§5.4): a primary holds every entry committed before its term."""
        if length and (len(self._mirrors[primary.name]) < length
                       or self.hash_at(primary.name, length) != self.committed.hashes[length - 1]):
            self.fail(f"leader completeness: {primary.name}, primary of term {primary.term}, "
                      f"lacks entries of the first {length} committed before its term")

    def _current_primaries(self) -> list[RaftNode]:
        return [node for node in self._up_nodes() if node.role is Role.PRIMARY]

    def check_agreement(self) -> None:
        """Every node's committed prefix is a prefix of the log of the primary of the
        highest term, when there is one."""
        nodes = self._up_nodes()
        if not nodes:
            return
        highest = max(node.term for node in nodes)
        primary = next((n for n in nodes if n.role is Role.PRIMARY and n.term == highest), None)
        if primary is None:
            return
        for node in nodes:
            length = self._mirrors[node.name].commit_length
            if length and node.name not in self._holds_forgiven and (len(self._mirrors[primary.name]) < length
                           or self.hash_at(primary.name, length) != self.hash_at(node.name, length)):
                self.fail(f"{node.name} committed {length} entries that the primary "
                          f"{primary.name} of term {highest} does not hold")


# -- What the clients saw ---------------------------------------------------------------

@dataclass
class _PendingAppend:
    node: str
    life: int
    term: int
    index: int
    message: str
    start: float


@dataclass
class _PendingRead:
    start: float
    index: int | None = None  # the commit length to wait for, once confirmed


class ClientHistory:
    """The appends and reads clients made, in simulated time, as
    tests/support/linearizability.py models them.

    An append (one entry of one message) starts when proposed and ends when
    its primary first reports it committed (ok, at the id its entry's
    messages got); if that primary stepped down or crashed first, its
    outcome is unknown. A read starts at read_index; once the node names the
    commit length to wait for, the read ends when the node's commit length
    reaches it, returning the node's committed log (its length, and its last
    message as the page). A read that fails (None) or whose node crashes is
    not recorded: it answered nothing."""

    def __init__(self, committed: _CommittedLog) -> None:
        self._committed = committed
        self.appends: list[Append] = []
        self.reads: list[Read] = []
        self._pending_appends: dict[str, list[_PendingAppend]] = {}
        self._pending_reads: dict[str, dict[int, _PendingRead]] = {}  # node -> request -> read
        self._requests = itertools.count(1)

    def proposed(self, node: RaftNode, life: int, indexes: range, messages: list[str], now: float) -> None:
        pending = self._pending_appends.setdefault(node.name, [])
        for index, message in zip(indexes, messages):
            pending.append(_PendingAppend(node.name, life, node.term, index, message, now))

    def refused(self, messages: list[str], now: float) -> None:
        for message in messages:
            self.appends.append(Append((message,), now, now, REFUSED))

    def new_read(self, node: RaftNode, now: float) -> int:
        request = next(self._requests)
        self._pending_reads.setdefault(node.name, {})[request] = _PendingRead(now)
        return request

    def after_call(self, node: RaftNode, life: int, ready: Ready, now: float) -> None:
        self._settle_appends(node, life, ready.committed, now)
        pending = self._pending_reads.get(node.name)
        if not pending:
            return
        for request, index in ready.reads:
            read = pending.get(request)
            if read is None:
                continue  # asked by an earlier life: no client waits for it any more
            if index is None:
                del pending[request]
            else:
                read.index = index
        self._complete_reads(node, pending, now)

    def crashed(self, name: str) -> None:
        for append in self._pending_appends.pop(name, []):
            self._end_unknown(append)
        self._pending_reads.pop(name, None)

    def end_all_unknown(self) -> None:
        for name in list(self._pending_appends):
            self.crashed(name)

    def forgive(self, first_id: int) -> None:
        """A recovery forgave the committed messages from ``first_id`` on (only
        silent secondaries held them: the documented limit, Checker): the
        appends answered there so far may be lost, and the reads that saw them
        are not judged. Later appends may get those ids again, and are judged."""
        self.appends = [replace(append, end=None, outcome=UNKNOWN)
                        if append.outcome == OK and append.id >= first_id else append
                        for append in self.appends]
        self.reads = [read for read in self.reads if read.length <= first_id]

    def _settle_appends(self, node: RaftNode, life: int, committed: int, now: float) -> None:
        pending = self._pending_appends.get(node.name)
        if not pending:
            return
        still_primary = node.role is Role.PRIMARY
        left = []
        for append in pending:
            if append.life != life or not still_primary or node.term != append.term:
                self._end_unknown(append)
            elif committed > append.index:
                self.appends.append(Append((append.message,), append.start, now, OK,
                                           self._committed.first_ids[append.index]))
            else:
                left.append(append)
        self._pending_appends[node.name] = left

    def _end_unknown(self, append: _PendingAppend) -> None:
        self.appends.append(Append((append.message,), append.start, None, UNKNOWN))

    def _complete_reads(self, node: RaftNode, pending: dict[int, _PendingRead], now: float) -> None:
        for request, read in list(pending.items()):
            if read.index is not None and node.commit_length >= read.index:
                del pending[request]
                if node.commit_length > len(self._committed):
                    continue  # it still counts entries a recovery forgave (Checker): not judged
                length = self._committed.first_ids[node.commit_length]
                page = tuple(self._committed.messages[length - 1:length])
                self.reads.append(Read(read.start, now, max(length - 1, 0), page, length, node.name))

    def violations(self, final_length: int) -> list[str]:
        """check_linearizable's verdict, against the committed log's first ``final_length`` entries."""
        final_log = self._committed.messages[:self._committed.first_ids[final_length]]
        return check_linearizable(self.appends, self.reads, final_log)


# -- The forger ---------------------------------------------------------------------------

class Forger:
    """Frames no node sent, of three kinds, each one a node must refuse or
    take harmlessly:

    - **huge term**: a heartbeat, an empty AppendEntries, a vote or pre-vote
      request with a term above MAX_TERM, just below it, or far above the
      receiver's (past MAX_TERM_JUMP);
    - **another sender**: a heartbeat or AppendEntries in the receiver's
      term from a node that is not that term's primary;
    - **unasked reply**: an AppendReply or HeartbeatReply to a primary
      answering a seq it never sent, or claiming entries it never sent;
    - **implausible entries** (a profile of its own, FORGED_ENTRIES): in the
      name of the receiver's primary, right after the receiver's log, one
      entry of a term above the frame's (up to MAX_TERM) or below the last
      it holds: taken, a term far above every real one would let the node
      outrank every log in elections.

    Plain mode cannot tell a lie that is possible from the truth: a forged
    heartbeat of the receiver's primary may commit its whole log, a forged
    reply may claim a match a secondary never had. So the forged frames
    claim nothing a node could act on if taken: a heartbeat commits nothing
    (commit length 0), an AppendEntries's prefix is one the receiver lacks
    (it is rejected), a forged seq is one no primary reaches. What is held
    is that no forged frame crashes a node or bricks the cluster, and that
    the safety checks hold for what the real nodes sent."""

    def __init__(self, rng: random.Random, names: tuple[str, ...], primaries: dict[int, str],
                 kinds: tuple[str, ...], storage_of: Callable[[str], MemoryStorage]) -> None:
        self._rng, self._names, self._primaries, self._kinds = rng, names, primaries, kinds
        self._storage_of = storage_of  # each node's log as persisted: what the forger reads to fit in

    def forge(self, target: RaftNode) -> tuple[str, Message]:
        kind = self._rng.choice(self._kinds)
        if kind == "unasked reply" and target.role is not Role.PRIMARY:
            kind = "another sender"
        if kind == "huge term":
            return kind, self._huge_term(target)
        if kind == "another sender":
            return kind, self._another_sender(target)
        if kind == "implausible entries":
            return kind, self._implausible_entries(target)
        return kind, self._unasked_reply(target)

    def _someone_else(self, target: RaftNode, but: str | None = None) -> str:
        return self._rng.choice([n for n in self._names if n not in (target.name, but)])

    def _huge_term(self, target: RaftNode) -> Message:
        rng = self._rng
        term = rng.choice([MAX_TERM + 1 + rng.randrange(2), MAX_TERM - rng.randrange(1000),
                           target.term + MAX_TERM_JUMP + 1 + rng.randrange(1 << 20)])
        sender = self._someone_else(target)
        return rng.choice([
            Heartbeat(sender, term, 1 << 40, 0),
            self._rejected_append(sender, term, target),
            VoteRequest(sender, term, 0, 0),
            PreVoteRequest(sender, term, 0, 0),
        ])

    def _another_sender(self, target: RaftNode) -> Message:
        sender = self._someone_else(target, but=self._primaries.get(target.term))
        if self._rng.random() < 0.5:
            return Heartbeat(sender, target.term, 1 << 40, 0)
        return self._rejected_append(sender, target.term, target)

    @staticmethod
    def _rejected_append(sender: str, term: int, target: RaftNode) -> AppendEntries:
        """Entries after a prefix the target lacks: it can only reject them."""
        return AppendEntries(sender, term, 1 << 40, target.log_length + 1, term, 0, (), 0)

    def _implausible_entries(self, target: RaftNode) -> Message:
        rng, log = self._rng, self._storage_of(target.name)
        length = log.length()
        last_term = log.term_at(length)
        term = rng.choice([target.term + 1 + rng.randrange(100), MAX_TERM]
                          + ([rng.randrange(last_term)] if last_term > 1 else []))
        sender = self._primaries.get(target.term) or self._someone_else(target)
        return AppendEntries(sender, target.term, 1 << 40, length, last_term, log.digest_at(length),
                             (Entry(max(term, 1), json.dumps("forged").encode(), 1),), 0,
                             log.start().index, target.cluster)

    def _unasked_reply(self, target: RaftNode) -> Message:
        rng = self._rng
        sender = self._someone_else(target)
        never_sent_seq = (1 << 40) + rng.randrange(1000)
        return rng.choice([
            AppendReply(sender, target.term, never_sent_seq, True, match_length=target.log_length),
            AppendReply(sender, target.term, 1, True, match_length=target.log_length + 1 + rng.randrange(9)),
            AppendReply(sender, target.term, 1, False, retry_length=target.log_length + 1),
            HeartbeatReply(sender, target.term, never_sent_seq, target.log_length),
        ])


# -- The cluster -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _InFlight:
    sender: str
    to: str
    message: Message
    lives: tuple[int, int]  # the sender's and the receiver's life when it was sent
    #: A StateReply: how many leading committed entries its sender held then.
    holds_committed: int = 0


@dataclass
class Counts:
    """What happened in a run, for the tests that check a fault was exercised."""

    refused: Counter = field(default_factory=Counter)  # forgery kind, or "real" -> Refused
    forged: Counter = field(default_factory=Counter)  # forgery kind -> injected
    late: int = 0  # messages from or to a previous life delivered
    lost_disks: int = 0
    restarts_all: int = 0
    compactions: int = 0
    snapshots_installed: int = 0
    transfers: int = 0
    recoveries: int = 0  # a fixed primary took its log over from its secondaries
    lost_logs: int = 0  # fixed secondaries in memory that lost their log
    lost_while_primary_fetched: int = 0  # of them, while their primary recovered its log
    cut_off_fetching: int = 0  # a fixed primary cut off while it fetched its log
    #: fixed secondaries left keeping another cluster's log after the faults (an
    #: in-memory primary that recovered without them: the documented limit)
    diverged: int = 0
    unsent: int = 0  # frames whose term the wire cannot carry


class SimCluster:
    """``size`` nodes, n0, n1, ..., on one simulated network, driven by one seed."""

    #: What each node's disk is (tests/support/mirrored_log.py mirrors it into the real log).
    disk_class: type[Disk] = Disk

    def __init__(self, seed: int, size: int, faults: Faults = Faults(),
                 node_class: type[RaftNode] = RaftNode, new_disks_caught_up: bool = True,
                 fixed: bool = False, primary_in_memory: bool = False, secondaries_in_memory: bool = False,
                 connections: bool = False, **node_options) -> None:
        self.seed, self.faults = seed, faults
        self.rng = random.Random(seed)
        self.names = tuple(f"n{i}" for i in range(size))
        self.fixed, self.primary_in_memory, self.connections = fixed, primary_in_memory, connections
        self.secondaries_in_memory = secondaries_in_memory
        self.now, self.step_count = 0.0, 0
        # A window of 8 frames unless told, not the product's 64: the simulation's
        # loads are light, and a small window meets flow control's limits often.
        self._node_class, self._node_options = node_class, {"window": 8, **node_options}
        # Disks as a new cluster's nodes find them: empty, and maybe marked as
        # not caught up (what a shell does for a DATA_DIR it has just created).
        self.disks = {name: self.disk_class(new_disks_caught_up, f"{name}.0") for name in self.names}
        self.lives = dict.fromkeys(self.names, 0)  # raised at each crash and restart
        self.nodes: dict[str, RaftNode | None] = dict.fromkeys(self.names)
        self.checker = Checker(self.names, self.where, self.up_nodes, lambda name: self.disks[name].storage,
                               terms_name_one_writer=not primary_in_memory)
        self.history = ClientHistory(self.checker.committed)
        self.checker.on_forgiven = self.history.forgive
        self.forger = Forger(self.rng, self.names, self.checker.primaries, faults.forgeries,
                             lambda name: self.disks[name].storage)
        self.counts = Counts()
        self._in_flight: list[tuple[float, int, _InFlight]] = []  # a heap: (when due, order, ...)
        self._order = itertools.count()
        self.groups = dict.fromkeys(self.names, 0)  # nodes talk within a group only
        self._heal_at: float | None = None
        self._restart_at: dict[str, float] = {}
        self._payloads = itertools.count()
        #: The fixed primary's recovery: for each secondary that answered before
        #: it decided, how many leading committed entries that secondary held.
        self._answers: dict[str, int] = {}
        self._restoring: set[str] = set()  # lost their disk, and not yet held all committed since
        for name in self.names:
            self.start(name)

    def where(self) -> str:
        return f"seed={self.seed} step={self.step_count} t={self.now:.3f}s"

    def up_nodes(self) -> list[RaftNode]:
        return [node for node in self.nodes.values() if node is not None]

    def primary(self) -> RaftNode | None:
        """The primary of the highest term, if there is one."""
        primaries = [node for node in self.up_nodes() if node.role is Role.PRIMARY]
        return max(primaries, key=lambda node: node.term, default=None)

    # -- Driving it -------------------------------------------------------------

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def step(self) -> None:
        self.step_count += 1
        self.now += STEP
        self._inject_faults()
        while self._in_flight and self._in_flight[0][0] <= self.now:
            self._deliver(heapq.heappop(self._in_flight)[2])
        for node in self.up_nodes():
            self.call(node, lambda node=node: node.tick(self.now))
        self.checker.check_agreement()

    def run_until(self, condition: Callable[[], bool], within: float, what: str) -> None:
        deadline = self.now + within
        while not condition():
            if self.now >= deadline:
                self.checker.fail(f"not {what} within {within}s of simulated time")
            self.step()

    def call(self, node: RaftNode, action: Callable[[], Ready], forgery: str | None = None) -> Ready | None:
        """Runs one call on ``node`` and does what its Ready says: persist, then
        send. A message the node refuses is dropped (None), as a shell does."""
        before, was_recovering = _observable(node), node.role is Role.RECOVERING
        try:
            ready = action()
        except Refused as refusal:
            if _observable(node) != before:
                self.checker.fail(f"{node.name} refused a message, but changed: {before} -> "
                                  f"{_observable(node)}")
            if forgery is None and not self.counts.forged:
                # Only a forger's lies (believed) can make a real node's message look impossible.
                self.checker.fail(f"{node.name} refused a message a node sent: {refusal}")
            self.counts.refused[forgery or "real"] += 1
            return None
        except SafetyViolation as error:
            self.checker.fail(f"{node.name} raised SafetyViolation: {error}")
        self.disks[node.name].apply(ready)
        recovered = None
        if was_recovering and node.role is Role.PRIMARY:
            recovered = max(self._answers.values(), default=0)
            self.counts.recoveries += 1
        self.checker.observe(node, ready, recovered)
        if ready.log.install is not None:
            self.counts.snapshots_installed += 1
        self.history.after_call(node, self.lives[node.name], ready, self.now)
        if node.name in self._restoring and self.checker.agreement(node.name) == len(self.checker.committed):
            self._restoring.discard(node.name)
        for to, message in ready.messages:
            self._send(node.name, to, message)
        return ready

    def propose(self, node: RaftNode, count: int) -> list[str]:
        """A client writes ``count`` entries of one message each; returns the messages."""
        messages = [f"s{self.seed}-w{next(self._payloads)}" for _ in range(count)]
        entries = [Entry(0, json.dumps(message).encode(), 1, self._maybe_key()) for message in messages]
        try:
            ready = self.call(node, lambda: node.propose(entries, self.now))
        except NotPrimary:  # it is handing its role over
            self.history.refused(messages, self.now)
            return messages
        self.history.proposed(node, self.lives[node.name], ready.proposed, messages, self.now)
        return messages

    def _maybe_key(self) -> str | None:
        keyed = self.faults.keyed and self.rng.random() < self.faults.keyed
        return f"k{next(self._payloads)}" if keyed else None

    def read(self, node: RaftNode) -> None:
        """A client asks ``node`` for a linearizable read."""
        request = self.history.new_read(node, self.now)
        self.call(node, lambda: node.read_index(request, self.now))

    # -- Nodes: start, crash, lose a disk ------------------------------------------

    def start(self, name: str) -> None:
        self.lives[name] += 1
        disk = self.disks[name]
        mode, peers = self._mode_and_peers(name)
        self.nodes[name] = self._node_class(
            name, peers, random.Random(self.rng.random()), election_timeout=ELECTION_TIMEOUT,
            heartbeat_interval=HEARTBEAT_INTERVAL, storage=disk.storage, hard_state=disk.hard_state,
            mode=mode, incarnation=disk.incarnation, run_floor=self._run_floor(), **self._node_options)
        self.checker.restarted(name, disk.storage.start().index)
        if mode is Mode.FIXED_PRIMARY:
            self._answers = {}
        if self.connections and self.step_count:
            self._connect([(name, other) for other in self.names if other != name])

    def _run_floor(self) -> int:
        """The fixed primary's clock, which node-io passes in seconds: here in
        milliseconds of simulated time, since a node may be down for 5 ms."""
        return int(self.now * 1000)

    def _connect(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Connections came up between these nodes: each end is told of the other."""
        for one, other in pairs:
            for node, peer in ((self.nodes[one], other), (self.nodes[other], one)):
                if node is not None and peer in node.peers:
                    self.call(node, lambda node=node, peer=peer: node.peer_connected(peer, self.now))

    def _mode_and_peers(self, name: str) -> tuple[Mode, tuple[str, ...]]:
        if not self.fixed:
            return Mode.ELECTED, self.names
        if name == self.names[0]:
            return Mode.FIXED_PRIMARY, self.names
        return Mode.FIXED_SECONDARY, (name,)  # it knows no peers: it follows whoever writes

    def crash(self, name: str, lose_disk: bool = False) -> None:
        """The node loses all it did not persist, and the messages to and from it;
        with ``lose_disk`` (or an in-memory fixed primary), what it persisted too."""
        self.nodes[name] = None
        self.lives[name] += 1
        self.history.crashed(name)
        incarnation = f"{name}.{self.lives[name]}"
        if lose_disk:
            # What a shell does for a DATA_DIR it has just created.
            self.disks[name] = self.disk_class(caught_up=False, incarnation=incarnation)
            self.counts.lost_disks += 1
            self._restoring.add(name)
        elif self.primary_in_memory and name == self.names[0]:
            self.disks[name] = self.disk_class(incarnation=incarnation)
        elif self.secondaries_in_memory and name != self.names[0] and self._may_lose_log(name):
            # What a shell does for a log in memory. What it answered a
            # recovery no longer holds: that recovery promises none of it.
            self.disks[name] = self.disk_class(caught_up=False, incarnation=incarnation)
            self._answers.pop(name, None)
            self._restoring.add(name)
            self.counts.lost_logs += 1
            if self.nodes[self.names[0]].role is Role.RECOVERING:
                self.counts.lost_while_primary_fetched += 1
        else:
            return
        self.checker.lost_disk(name)

    def may_lose_disk(self, name: str) -> bool:
        """At most one lost disk at a time, only while the others are intact, and
        once every other node has taken part in an election (its term is not 0):
        before that, a new cluster's first-election rule cannot tell a lost disk
        from a node that has not started yet (docs/architecture.md)."""
        return not self.fixed and all(
            self.disks[other].hard_state.caught_up and other not in self._restoring
            and self.disks[other].hard_state.term > 0
            for other in self.names if other != name)

    def _may_lose_log(self, secondary: str) -> bool:
        """A fixed secondary in memory loses its log with a crash only where no
        committed entry can be lost with it: no other node is restoring its
        log, every other secondary holds every committed entry, and the
        primary is up and not deciding what to recover (an empty secondary
        that answers it looks like a new cluster's: with the others silent
        for two heartbeats, it would begin a new one, the documented limit).
        Otherwise it crashes as if it had a disk. The primary, in memory too,
        does not crash until the secondary is restored (``_crash_for_a_while``)."""
        primary, committed = self.nodes[self.names[0]], len(self.checker.committed)
        return (primary is not None and (primary.role is not Role.RECOVERING or primary.recovery.fetching)
                and not self._restoring and all(self.checker.agreement(other) == committed
                                                for other in self.names[1:] if other != secondary))

    def partition(self, *groups: tuple[str, ...]) -> None:
        for number, group in enumerate(groups):
            for name in group:
                self.groups[name] = number

    def heal(self) -> None:
        split = [(one, other) for one, other in itertools.combinations(self.names, 2)
                 if self.groups[one] != self.groups[other]]
        self.groups = dict.fromkeys(self.names, 0)
        self._heal_at = None
        if self.connections:
            self._connect(split)

    def empty(self, name: str) -> None:
        """Stops a node, empties its log, and starts it again."""
        self.crash(name)
        self.disks[name] = self.disk_class(caught_up=False, incarnation=f"{name}.{self.lives[name]}")
        self.checker.lost_disk(name)
        self.start(name)

    def quiet(self) -> None:
        """Stops the faults: heals the network and restarts every node that is down."""
        self.faults = replace(QUIET, latency=self.faults.latency)
        self.heal()
        self._restart_at = {}
        for name, node in self.nodes.items():
            if node is None:
                self.start(name)

    # -- Faults -------------------------------------------------------------------

    def _inject_faults(self) -> None:
        rng, faults = self.rng, self.faults
        self._split_network()
        for name, restart_at in list(self._restart_at.items()):
            if self.now >= restart_at:
                del self._restart_at[name]
                self.start(name)
        for name in self.names:
            if self.nodes[name] is not None and rng.random() < faults.crash:
                self._crash_for_a_while(name)
        # Any primary takes writes, a deposed one that does not know it yet too.
        primaries = [node for node in self.up_nodes() if node.role is Role.PRIMARY]
        if primaries and rng.random() < faults.propose:
            self.propose(rng.choice(primaries), rng.randint(1, 3))
        if faults.restart_all and rng.random() < faults.restart_all:
            self.counts.restarts_all += 1
            for name in rng.sample(self.names, len(self.names)):  # any of them may lose its disk
                if self.nodes[name] is not None:
                    self._crash_for_a_while(name)
        if faults.compact and rng.random() < faults.compact:
            self._compact_on_the_primary()
        if faults.transfer and rng.random() < faults.transfer and (primary := self.primary()):
            self.counts.transfers += 1
            self.call(primary, lambda: primary.transfer_leadership(self.now))
        if faults.read and rng.random() < faults.read and (up := self.up_nodes()):
            self.read(rng.choice(up))
        if faults.forge and rng.random() < faults.forge and (up := self.up_nodes()):
            self._inject_forgery(rng.choice(up))

    def _split_network(self) -> None:
        rng, faults = self.rng, self.faults
        if self._heal_at is not None and self.now >= self._heal_at:
            self.heal()
        elif self._heal_at is None and rng.random() < faults.partition:
            self.groups = {name: rng.randrange(2) for name in self.names}
            self._heal_at = self.now + rng.uniform(*faults.partition_for)
        elif (faults.cut_off_fetching and self._heal_at is None and self._fixed_primary_fetching()
              and rng.random() < faults.cut_off_fetching):
            self.groups = {name: int(name == self.names[0]) for name in self.names}
            self._heal_at = self.now + rng.uniform(*faults.partition_for)
            self.counts.cut_off_fetching += 1
        elif (self._heal_at is None and rng.random() < faults.isolate_primary
              and (primary := self.primary()) is not None):
            self.groups = {name: int(name == primary.name) for name in self.names}
            self._heal_at = self.now + rng.uniform(*faults.partition_for)

    def _fixed_primary_fetching(self) -> bool:
        primary = self.nodes[self.names[0]]
        return (self.fixed and primary is not None and primary.role is Role.RECOVERING
                and primary.recovery.fetching)

    def _crash_for_a_while(self, name: str) -> None:
        rng, faults = self.rng, self.faults
        if self.secondaries_in_memory and name == self.names[0] and self._restoring:
            return  # what was committed since may be held by it and that secondary alone
        lose_disk = bool(faults.lose_disk) and self.may_lose_disk(name) and rng.random() < faults.lose_disk
        self.crash(name, lose_disk)
        self._restart_at[name] = self.now + rng.uniform(*faults.down_for)

    def _compact_on_the_primary(self) -> None:
        primary = self.primary()
        if primary is not None and primary.commit_length > primary.log_start.index:
            length = self.rng.randint(primary.log_start.index + 1, primary.commit_length)
            self.counts.compactions += 1
            self.call(primary, lambda: primary.compact(length))

    def _inject_forgery(self, target: RaftNode) -> None:
        kind, message = self.forger.forge(target)
        self.counts.forged[kind] += 1
        self.call(target, lambda: target.step(message, self.now), forgery=kind)

    # -- The network -----------------------------------------------------------------

    def _send(self, sender: str, to: str, message: Message) -> None:
        if message.term > WIRE_MAX_TERM:
            self.counts.unsent += 1  # the shell cannot encode it: it never leaves
            return
        rng, faults = self.rng, self.faults
        copies = 0 if rng.random() < faults.drop else 2 if rng.random() < faults.duplicate else 1
        holds = self.checker.agreement(sender) if isinstance(message, StateReply) else 0
        flight = _InFlight(sender, to, message, (self.lives[sender], self.lives[to]), holds)
        for _ in range(copies):
            deliver_at = self.now + rng.uniform(*faults.latency)
            heapq.heappush(self._in_flight, (deliver_at, next(self._order), flight))

    def _deliver(self, flight: _InFlight) -> None:
        node = self.nodes[flight.to]
        if node is None or self.groups[flight.sender] != self.groups[flight.to]:
            return
        if flight.lives != (self.lives[flight.sender], self.lives[flight.to]):
            if not (self.faults.late and self.rng.random() < self.faults.late):
                return
            self.counts.late += 1
        if (isinstance(flight.message, StateReply) and node.role is Role.RECOVERING
                and not node.recovery.fetching):
            self._answers[flight.sender] = flight.holds_committed
        self.call(node, lambda: node.step(flight.message, self.now))

    # -- Liveness, and the clients' view ------------------------------------------------

    def has_settled_primary(self) -> bool:
        """One primary, and every node up (but the diverged), in its term and following it."""
        primary = self.primary()
        return primary is not None and all(
            node is not None and node.term == primary.term and node.primary == primary.name
            for node in self.nodes.values() if node not in self.diverged(primary))

    def diverged(self, primary: RaftNode) -> list[RaftNode]:
        """Fixed secondaries that keep the log of a cluster other than ``primary``'s:
        an in-memory primary that recovered without hearing them named a new
        one, or took back the one it led last. They refuse it, and rightly:
        what they hold was never committed, or was committed in a cluster the
        primary left (the checker forgave it then: the documented limit)."""
        if not self.primary_in_memory:
            return []
        return [node for node in self.up_nodes() if node is not primary and node.log_length
                and node.cluster not in (None, primary.cluster)]

    def has_converged(self, messages: list[str]) -> bool:
        """Every node (but the diverged) holds the same log, all of it committed,
        ``messages`` included."""
        primary = self.primary()
        nodes = [node for node in self.up_nodes() if primary is None or node not in self.diverged(primary)]
        length = nodes[0].log_length
        last = self.checker.hash_at(nodes[0].name, length)
        if not all(node.log_length == length and node.commit_length == length
                   and self.checker.hash_at(node.name, length) == last for node in nodes):
            return False
        ids, first_ids = self.checker.committed.ids, self.checker.committed.first_ids
        return all(ids.get(message, first_ids[length]) < first_ids[length] for message in messages)

    def check_recovers(self, within: float = 5.0) -> None:
        """Once the faults stop, a primary is elected and every node converges on a
        log that holds the writes made meanwhile; and what the clients saw is
        linearizable against that log."""
        self.quiet()
        # Settled for a while, so the primary's check quorum counts only replies
        # sent since the faults stopped: it will not step down under the writes.
        primary = self.run_until_settled(within, settled_for=2 * ELECTION_TIMEOUT)
        diverged = self.diverged(primary)
        self.counts.diverged = len(diverged)
        for node in diverged:  # the README's remedy: an operator empties it, and it joins
            self.empty(node.name)
        messages = self.propose(primary, 3)
        self.run_until(lambda: self.has_converged(messages), within, "converged")
        for name, node in self.nodes.items():
            if self.disks[name].storage.length() != node.log_length:
                self.checker.fail(f"{name}'s persisted log differs from its log")
        self.history.end_all_unknown()
        violations = self.history.violations(primary.commit_length)
        if violations:
            self.checker.fail("not linearizable: " + "; ".join(violations[:3]))

    def run_until_settled(self, within: float, settled_for: float) -> RaftNode:
        """Runs until one primary has been followed by every node for ``settled_for``."""
        deadline, settled, since = self.now + within, None, self.now
        while True:
            primary = self.primary() if self.has_settled_primary() else None
            current = primary and (primary.name, primary.term)
            if current != settled:
                settled, since = current, self.now
            if primary is not None and self.now - since >= settled_for:
                return primary
            if self.now >= deadline:
                self.checker.fail(f"no primary that every node follows within {within}s")
            self.step()


def _observable(node: RaftNode) -> tuple:
    """What a refused message must not change."""
    return (node.term, node.voted_for, node.role, node.primary, node.log_length, node.commit_length,
            node.caught_up, node.log_start)


def simulate(seed: int, size: int, steps: int, faults: Faults = Faults(),
             node_class: type[RaftNode] = RaftNode, recovers: bool = True,
             **options) -> SimCluster:
    """Runs ``steps`` steps of faults, then (if ``recovers``) checks that the
    cluster recovers once they stop. ``options`` go to SimCluster (and on to
    the nodes). Raises Violation."""
    cluster = SimCluster(seed, size, faults, node_class, **options)
    cluster.run(steps)
    if recovers:
        cluster.check_recovers()
    return cluster


def first_violation(seeds: Iterable[int], size: int, steps: int, node_class: type[RaftNode],
                    faults: Faults = Faults(), recovers: bool = False,
                    **options) -> tuple[int, str] | None:
    """The first seed whose run breaks a guarantee (safety only, unless
    ``recovers``), and the Violation's message."""
    for seed in seeds:
        try:
            simulate(seed, size, steps, faults, node_class, recovers=recovers, **options)
        except Violation as violation:
            return seed, str(violation)
    return None


def assert_caught(broken: type[RaftNode], kept_seeds: Iterable[int], size: int, steps: int,
                  faults: Faults, expected: tuple[str, ...], recovers: bool = False, **options) -> int:
    """Some seed of ``kept_seeds`` makes a run of ``broken`` break one of the
    ``expected`` guarantees (safety only, unless ``recovers``), and the same
    run with the rules intact does not: the demo that a check can fail. The
    seeds are tried in order; returns the first that shows it."""
    tried = []
    for seed in kept_seeds:
        found = first_violation([seed], size, steps, broken, faults, recovers, **options)
        tried.append(f"{seed}: {found[1] if found else 'no violation'}")
        if (found is not None and any(what in found[1] for what in expected)
                and first_violation([seed], size, steps, RaftNode, faults, recovers, **options) is None):
            return seed
    raise AssertionError(f"no seed caught {broken.__name__} ({'; '.join(tried)})")


def rejoin_after_isolation(node_class: type[RaftNode], seed: int = 1,
                           away: float = 1.0) -> tuple[tuple[str, int], tuple[str, int]]:
    """Settles a quiet 3-node cluster, cuts one secondary off for ``away`` seconds,
    then lets it back for as long. Returns the primary and its term before and after."""
    cluster = SimCluster(seed, 3, QUIET, node_class)
    primary = cluster.run_until_settled(within=2.0, settled_for=ELECTION_TIMEOUT)
    before = (primary.name, primary.term)
    cut_off = next(name for name in cluster.names if name != primary.name)
    cluster.partition((cut_off,), tuple(name for name in cluster.names if name != cut_off))
    cluster.run(round(away / STEP))
    cluster.heal()
    primary = cluster.run_until_settled(within=2.0, settled_for=away)
    return before, (primary.name, primary.term)


# -- Driving one node by hand, for the tests of single rules -------------------------

PEERS = ("a", "b", "c")


class HandNode:
    """One RaftNode driven by hand as a shell drives it: each call's Ready is
    applied to the node's disk before it returns, so the next call reads what
    this one wrote. Everything else reads through to the node."""

    def __init__(self, node: RaftNode, disk: Disk) -> None:
        self.node, self.disk = node, disk

    def __getattr__(self, name: str):
        return getattr(self.node, name)

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Its log's entries after its start, as persisted."""
        return self.disk.entries

    def tick(self, now: float) -> Ready:
        return self._applied(self.node.tick(now))

    def step(self, message: Message, now: float) -> Ready:
        return self._applied(self.node.step(message, now))

    def propose(self, entries: Iterable[Entry], now: float = 0.0) -> Ready:
        return self._applied(self.node.propose(list(entries), now))

    def read_index(self, request: int, now: float) -> Ready:
        return self._applied(self.node.read_index(request, now))

    def compact(self, length: int) -> Ready:
        return self._applied(self.node.compact(length))

    def transfer_leadership(self, now: float) -> Ready:
        return self._applied(self.node.transfer_leadership(now))

    def peer_connected(self, peer: str, now: float) -> Ready:
        return self._applied(self.node.peer_connected(peer, now))

    def _applied(self, ready: Ready) -> Ready:
        self.disk.apply(ready)
        return ready


def new_node(name: str = "a", peers: tuple[str, ...] = PEERS, hard_state: HardState = HardState(),
             entries: Iterable[Entry] = (), node_class: type[RaftNode] = RaftNode,
             snapshot: Snapshot = Snapshot(), **options) -> HandNode:
    disk = Disk()
    disk.hard_state, disk.storage = hard_state, MemoryStorage(snapshot, entries)
    node = node_class(name, peers, random.Random(0), election_timeout=ELECTION_TIMEOUT,
                      heartbeat_interval=HEARTBEAT_INTERVAL, storage=disk.storage,
                      hard_state=hard_state, **options)
    return HandNode(node, disk)


def elect(node: HandNode, now: float = 0.0) -> tuple[Ready, float]:
    """Makes ``node`` primary with the votes of the first peers after it; returns
    the Ready in which it became primary, and the time then."""
    node.tick(now)  # starts the election timer
    now += 2 * ELECTION_TIMEOUT
    node.tick(now)
    voters = [peer for peer in node.peers if peer != node.name][:len(node.peers) // 2]
    for voter in voters:
        node.step(VoteReply(voter, node.term + 1, granted=True, pre_vote=True), now)
    for voter in voters:
        ready = node.step(VoteReply(voter, node.term, granted=True, pre_vote=False), now)
    assert node.role is Role.PRIMARY
    return ready, now


def message(term: int, text: str, key: str | None = None) -> Entry:
    """An entry of one message, as a client's write makes it."""
    return Entry(term, json.dumps(text).encode(), 1, key)


def digest_of(entries: Iterable[Entry]) -> int:
    """The checksum of a log of ``entries`` (shared.consensus.raft_log.digest_after)."""
    digest = 0
    for entry in entries:
        digest = digest_after(digest, entry)
    return digest


def sent(ready: Ready, kind: type) -> list[tuple[str, Message]]:
    """The messages of type ``kind`` that ``ready`` sends, with their addressees."""
    return [(to, message) for to, message in ready.messages if isinstance(message, kind)]
