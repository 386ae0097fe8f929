"""A simulated cluster of shared.consensus.raft nodes, and the invariants it checks.

One ``random.Random(seed)`` drives everything, so a seed replays a run
exactly: a clock advanced in steps of STEP seconds; a network that drops,
delays (so reorders) and duplicates messages and splits the nodes into
groups for a while; crashes, after which a node keeps only what its Readies
told the harness to persist, and restarts; client writes to the primary.

After every call to a node, Checker looks at the Ready it returned and the
node's state, and raises Violation (an AssertionError naming the seed and
the step) when a Raft guarantee breaks. It keeps, for each node, a hash of
every prefix of its log, so each check costs what changed, not the log's size.

Thread: the test's only.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from shared.consensus.raft import (
    Entry, HardState, RaftNode, Ready, Role, SafetyViolation, VoteReply,
)
from shared.consensus.raft_log import MemoryStorage

STEP = 0.005  # seconds of simulated time per step
ELECTION_TIMEOUT = 0.1
HEARTBEAT_INTERVAL = 0.02


@dataclass(frozen=True)
class Faults:
    """What goes wrong, as chances per message or per step, and how long it lasts."""

    drop: float = 0.05
    duplicate: float = 0.03
    latency: tuple[float, float] = (0.001, 0.015)
    partition: float = 0.004  # per step, while the network is whole
    partition_for: tuple[float, float] = (0.05, 1.5)
    isolate_primary: float = 0.002  # per step, while the network is whole: the primary alone
    crash: float = 0.003  # per step, for each node that is up
    down_for: tuple[float, float] = (0.005, 1.0)
    propose: float = 0.05  # per step: a client writes 1 to 3 entries to the primary


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


class Violation(AssertionError):
    """A Raft guarantee broke, or the cluster did not recover in time."""


class Disk:
    """What a node persisted, applied in the order a Ready gives it: its hard
    state, and its log (a MemoryStorage, which the node reads as it runs)."""

    def __init__(self, caught_up: bool = True) -> None:
        self.hard_state = HardState(caught_up=caught_up)
        self.storage = MemoryStorage()

    def apply(self, ready: Ready) -> None:
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
        self.storage.apply(ready.log)

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self.storage.all_entries


@dataclass
class _Mirror:
    """The checker's view of one node: a hash of each prefix of its log, and its
    commit length in its current life."""

    prefix_hashes: list[int]
    commit_length: int = 0


class Checker:
    """Raft's safety properties, checked incrementally as each Ready comes."""

    def __init__(self, names: tuple[str, ...], where: Callable[[], str],
                 up_nodes: Callable[[], list[RaftNode]]) -> None:
        self._where, self._up_nodes = where, up_nodes
        self._mirrors = {name: _Mirror([]) for name in names}
        self.primaries: dict[int, str] = {}  # term -> the one primary it ever had
        self._prefix_at: dict[tuple[int, int], int] = {}  # (index, term) -> prefix hash
        self._committed: list[int] = []  # prefix hash of each index ever reported committed
        self._committed_by_term: dict[int, int] = {}  # reporter's term -> longest commit length

    def fail(self, what: str) -> None:
        raise Violation(f"{self._where()}: {what}")

    def crashed(self, name: str) -> None:
        self._mirrors[name].commit_length = 0  # the commit length is learned again

    def observe(self, node: RaftNode, ready: Ready) -> None:
        mirror = self._mirrors[node.name]
        if ready.log:
            self._apply_log_changes(node, mirror, ready)
        if len(mirror.prefix_hashes) != node.log_length:
            self.fail(f"{node.name}'s Ready did not report all its log changes")
        if ready.committed != mirror.commit_length:
            self._check_commit(node, mirror, ready.committed)
        if node.role is Role.PRIMARY:
            self._check_primary(node)

    def _apply_log_changes(self, node: RaftNode, mirror: _Mirror, ready: Ready) -> None:
        hashes, changes = mirror.prefix_hashes, ready.log
        if changes.install is not None:
            start = changes.install.start.index
            if start > len(self._committed):
                self.fail(f"{node.name} installed a start at {start}, past what was ever committed")
            mirror.prefix_hashes = hashes = self._committed[:start]
        if changes.truncate_from is not None:
            if changes.truncate_from < mirror.commit_length:
                self.fail(f"{node.name} truncated its log from {changes.truncate_from}, "
                          f"below its commit length {mirror.commit_length}")
            del hashes[changes.truncate_from:]
        if changes.compact is not None and changes.compact > len(self._committed):
            self.fail(f"{node.name} dropped entries up to {changes.compact}, past what was committed")
        for entry in changes.entries:
            index = len(hashes)
            prefix = hash((hashes[-1] if hashes else 0, entry.term, entry.body, entry.count, entry.key))
            # Log matching (§5.3): one (index, term) names one entry, and one prefix, ever.
            if self._prefix_at.setdefault((index, entry.term), prefix) != prefix:
                self.fail(f"log matching: {node.name} holds an entry of term {entry.term} at "
                          f"{index} whose log differs from another node's entry there")
            hashes.append(prefix)

    def _check_commit(self, node: RaftNode, mirror: _Mirror, committed: int) -> None:
        if committed < mirror.commit_length:
            self.fail(f"{node.name}'s commit length went back to {committed}")
        if committed > len(mirror.prefix_hashes):
            self.fail(f"{node.name}'s commit length {committed} is past its log")
        for index in range(mirror.commit_length, committed):
            if index == len(self._committed):
                self._committed.append(mirror.prefix_hashes[index])
            elif self._committed[index] != mirror.prefix_hashes[index]:
                self.fail(f"committed entry {index} changed: {node.name} now commits another entry there")
        if committed > mirror.commit_length:
            mirror.commit_length = committed
            # A commit length grows only by the primary of the node's own term, so
            # these entries were committed by that term: every later primary holds them.
            by_term = self._committed_by_term
            by_term[node.term] = max(by_term.get(node.term, 0), committed)
            for primary in self._current_primaries():
                if primary.term > node.term:
                    self._check_holds_committed(primary, committed)

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
        hashes = self._mirrors[primary.name].prefix_hashes
        if length and (len(hashes) < length or hashes[length - 1] != self._committed[length - 1]):
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
        primary_hashes = self._mirrors[primary.name].prefix_hashes
        for node in nodes:
            mirror = self._mirrors[node.name]
            length = mirror.commit_length
            if length and (len(primary_hashes) < length
                           or primary_hashes[length - 1] != mirror.prefix_hashes[length - 1]):
                self.fail(f"{node.name} committed {length} entries that the primary "
                          f"{primary.name} of term {highest} does not hold")


@dataclass(frozen=True)
class _InFlight:
    sender: str
    to: str
    message: object
    lives: tuple[int, int]  # the sender's and the receiver's life when it was sent


class SimCluster:
    """``size`` nodes, n0, n1, ..., on one simulated network, driven by one seed."""

    def __init__(self, seed: int, size: int, faults: Faults = Faults(),
                 node_class: type[RaftNode] = RaftNode, new_disks_caught_up: bool = True,
                 **node_options) -> None:
        self.seed, self.faults = seed, faults
        self.rng = random.Random(seed)
        self.names = tuple(f"n{i}" for i in range(size))
        self.now, self.step_count = 0.0, 0
        self._node_class, self._node_options = node_class, node_options
        # Disks as a new cluster's nodes find them: empty, and maybe marked as
        # not caught up (what a shell does for a DATA_DIR it has just created).
        self.disks = {name: Disk(caught_up=new_disks_caught_up) for name in self.names}
        self.lives = dict.fromkeys(self.names, 0)  # raised at each crash and restart
        self.nodes: dict[str, RaftNode | None] = dict.fromkeys(self.names)
        self.checker = Checker(self.names, self.where, self.up_nodes)
        self._in_flight: list[tuple[float, int, _InFlight]] = []  # a heap: (when due, order, ...)
        self._order = itertools.count()
        self.groups = dict.fromkeys(self.names, 0)  # nodes talk within a group only
        self._heal_at: float | None = None
        self._restart_at: dict[str, float] = {}
        self._payloads = itertools.count()
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

    def call(self, node: RaftNode, action: Callable[[], Ready]) -> Ready:
        """Runs one call on ``node`` and does what its Ready says: persist, then send."""
        try:
            ready = action()
        except SafetyViolation as error:
            self.checker.fail(f"{node.name} raised SafetyViolation: {error}")
        self.disks[node.name].apply(ready)
        self.checker.observe(node, ready)
        for to, message in ready.messages:
            self._send(node.name, to, message)
        return ready

    def propose(self, node: RaftNode, count: int) -> list[bytes]:
        payloads = [b'"s%d-w%d"' % (self.seed, next(self._payloads)) for _ in range(count)]
        self.call(node, lambda: node.propose([Entry(0, body, 1) for body in payloads], self.now))
        return payloads

    # -- Faults -------------------------------------------------------------------

    def start(self, name: str) -> None:
        self.lives[name] += 1
        self.nodes[name] = self._node_class(
            name, self.names, random.Random(self.rng.random()), election_timeout=ELECTION_TIMEOUT,
            heartbeat_interval=HEARTBEAT_INTERVAL, storage=self.disks[name].storage,
            hard_state=self.disks[name].hard_state,
            **self._node_options)

    def crash(self, name: str) -> None:
        """The node loses all it did not persist, and the messages to and from it."""
        self.nodes[name] = None
        self.lives[name] += 1
        self.checker.crashed(name)

    def partition(self, *groups: tuple[str, ...]) -> None:
        for number, group in enumerate(groups):
            for name in group:
                self.groups[name] = number

    def heal(self) -> None:
        self.groups = dict.fromkeys(self.names, 0)
        self._heal_at = None

    def quiet(self) -> None:
        """Stops the faults: heals the network and restarts every node that is down."""
        self.faults = replace(QUIET, latency=self.faults.latency)
        self.heal()
        self._restart_at = {}
        for name, node in self.nodes.items():
            if node is None:
                self.start(name)

    def _inject_faults(self) -> None:
        rng, faults = self.rng, self.faults
        if self._heal_at is not None and self.now >= self._heal_at:
            self.heal()
        elif self._heal_at is None and rng.random() < faults.partition:
            self.groups = {name: rng.randrange(2) for name in self.names}
            self._heal_at = self.now + rng.uniform(*faults.partition_for)
        elif (self._heal_at is None and rng.random() < faults.isolate_primary
              and (primary := self.primary()) is not None):
            self.groups = {name: int(name == primary.name) for name in self.names}
            self._heal_at = self.now + rng.uniform(*faults.partition_for)
        for name, restart_at in list(self._restart_at.items()):
            if self.now >= restart_at:
                del self._restart_at[name]
                self.start(name)
        for name in self.names:
            if self.nodes[name] is not None and rng.random() < faults.crash:
                self.crash(name)
                self._restart_at[name] = self.now + rng.uniform(*faults.down_for)
        # Any primary takes writes, a deposed one that does not know it yet too.
        primaries = [node for node in self.up_nodes() if node.role is Role.PRIMARY]
        if primaries and rng.random() < faults.propose:
            self.propose(rng.choice(primaries), rng.randint(1, 3))

    def _send(self, sender: str, to: str, message: object) -> None:
        rng, faults = self.rng, self.faults
        copies = 0 if rng.random() < faults.drop else 2 if rng.random() < faults.duplicate else 1
        flight = _InFlight(sender, to, message, (self.lives[sender], self.lives[to]))
        for _ in range(copies):
            deliver_at = self.now + rng.uniform(*faults.latency)
            heapq.heappush(self._in_flight, (deliver_at, next(self._order), flight))

    def _deliver(self, flight: _InFlight) -> None:
        node = self.nodes[flight.to]
        if (node is None or flight.lives != (self.lives[flight.sender], self.lives[flight.to])
                or self.groups[flight.sender] != self.groups[flight.to]):
            return
        self.call(node, lambda: node.step(flight.message, self.now))

    # -- Liveness -------------------------------------------------------------------

    def has_settled_primary(self) -> bool:
        """One primary, and every node up, in its term and following it."""
        primary = self.primary()
        return primary is not None and all(
            node is not None and node.term == primary.term and node.primary == primary.name
            for node in self.nodes.values())

    def has_converged(self, payloads: list[bytes]) -> bool:
        """Every node holds the same log, all of it committed, ``payloads`` included."""
        nodes = self.up_nodes()
        first = self.disks[nodes[0].name].entries
        if not all(self.disks[node.name].entries == first and node.commit_length == node.log_length
                   for node in nodes):
            return False
        return set(payloads) <= {entry.body for entry in first}

    def check_recovers(self, within: float = 5.0) -> None:
        """Once the faults stop, a primary is elected and every node converges on a
        log that holds the writes made meanwhile."""
        self.quiet()
        # Settled for a while, so the primary's check quorum counts only replies
        # sent since the faults stopped: it will not step down under the writes.
        primary = self.run_until_settled(within, settled_for=2 * ELECTION_TIMEOUT)
        payloads = self.propose(primary, 3)
        self.run_until(lambda: self.has_converged(payloads), within, "converged")
        for name, node in self.nodes.items():
            if self.disks[name].storage.length() != node.log_length:
                self.checker.fail(f"{name}'s persisted log differs from its log")

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


def simulate(seed: int, size: int, steps: int, faults: Faults = Faults(),
             node_class: type[RaftNode] = RaftNode, recovers: bool = True,
             **node_options) -> SimCluster:
    """Runs ``steps`` steps of faults, then (if ``recovers``) checks that the
    cluster recovers once they stop. Raises Violation."""
    cluster = SimCluster(seed, size, faults, node_class, **node_options)
    cluster.run(steps)
    if recovers:
        cluster.check_recovers()
    return cluster


def first_safety_violation(seeds: Iterable[int], size: int, steps: int, node_class: type[RaftNode],
                           faults: Faults = Faults(), **node_options) -> tuple[int, str] | None:
    """The first seed whose run breaks a safety property, and the Violation's message."""
    for seed in seeds:
        try:
            simulate(seed, size, steps, faults, node_class, recovers=False, **node_options)
        except Violation as violation:
            return seed, str(violation)
    return None


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


def new_node(name: str = "a", peers: tuple[str, ...] = PEERS, hard_state: HardState = HardState(),
             entries: tuple[Entry, ...] = (), node_class: type[RaftNode] = RaftNode,
             **options) -> RaftNode:
    return node_class(name, peers, random.Random(0), election_timeout=ELECTION_TIMEOUT,
                      heartbeat_interval=HEARTBEAT_INTERVAL, storage=MemoryStorage(entries=entries),
                      hard_state=hard_state, **options)


def elect(node: RaftNode, now: float = 0.0) -> tuple[Ready, float]:
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


def sent(ready: Ready, kind: type) -> list[tuple[str, object]]:
    """The messages of type ``kind`` that ``ready`` sends, with their addressees."""
    return [(to, message) for to, message in ready.messages if isinstance(message, kind)]
