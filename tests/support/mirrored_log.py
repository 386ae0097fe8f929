"""The simulation's disks mirrored into the node's real log on SQLite, and compared.

The seeded simulation (tests/support/raft_sim.py) keeps each node's log in
a MemoryStorage, simple enough to be right by reading; node-io keeps it in
a NodeLog (shared.log.node_log): a window in memory over SQLite, term runs,
the Idempotency-Keys in force, rows retention drops a few at a time. A
``MirroredDisk`` stages every Ready the simulation applies into a NodeLog
of its own directory too, and persists it at random points, so that
several Readies go into one write as in a pass of node-io. A
``MirroredCluster`` reopens that log whenever a node restarts on a disk
that survived, as a restart does, and after every call checks
(``differences``) that the NodeLog answers what the reference answers:
length, start, the terms, checksums and run starts the core reads,
the entries, and the keys in force.

Thread: the test's.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from shared.consensus.raft import RaftNode, Ready
from shared.consensus.raft_log import KeyRecord, MemoryStorage, body_digest
from shared.log.node_log import NodeLog, open_log
from tests.support.raft_sim import Disk, SimCluster

#: Keys the mirrors keep: more than any simulated run writes, so none is pushed out.
KEY_CAPACITY = 100_000
#: Indexes whose terms and checksums are compared after each call (all, on a reopen).
SAMPLED = 12


class MirroredDisk(Disk):
    def __init__(self, caught_up: bool = True, incarnation: str = "") -> None:
        super().__init__(caught_up, incarnation)
        self.directory = tempfile.mkdtemp(prefix="mirrored-log-")
        self.log = open_log(self.directory, "secondary", False, KEY_CAPACITY)
        self.keys_seen: set[str] = set()  # every key an entry or a snapshot brought here

    def apply(self, ready: Ready) -> None:
        super().apply(ready)
        self.log.stage(ready)
        changes = ready.log
        self.keys_seen.update(entry.key for entry in changes.entries if entry.key is not None)
        if changes.install is not None:
            self.keys_seen.update(record.key for record in changes.install.keys)

    def reopen(self) -> None:
        """What a restart does: everything staged was written before the crash
        (the reference keeps all it applied), and the store is read again."""
        self.log.persist()
        self.log.close()
        self.log = open_log(self.directory, "secondary", False, KEY_CAPACITY)

    def close(self) -> None:
        self.log.close()
        for path in Path(self.directory).iterdir():
            path.unlink()
        Path(self.directory).rmdir()


class MirroredCluster(SimCluster):
    """A SimCluster whose disks are MirroredDisks; ``differences`` collects what
    any mirror answered otherwise than its reference. ``close`` when done."""

    disk_class = MirroredDisk

    def __init__(self, seed: int, *args, **kwargs) -> None:
        self._compare_rng = random.Random(seed)
        self.differences: list[str] = []
        self._made: set[MirroredDisk] = set()
        super().__init__(seed, *args, **kwargs)
        self._made.update(self.disks.values())

    def call(self, node: RaftNode, action, forgery: str | None = None) -> Ready | None:
        ready = super().call(node, action, forgery)
        disk = self.disks[node.name]
        if ready is not None:
            if self._compare_rng.random() < 0.7:  # else the next call's Ready joins this write
                disk.log.persist()
            self._compare(node.name, disk, everything=False)
        return ready

    def crash(self, name: str, lose_disk: bool = False) -> None:
        self.disks[name].log.persist()
        super().crash(name, lose_disk)
        self._made.update(self.disks.values())  # a lost disk's new one

    def start(self, name: str) -> None:
        disk = self.disks[name]
        self._made.add(disk)  # an emptied node's new one
        disk.reopen()
        self._compare(name, disk, everything=True)
        super().start(name)

    def close(self) -> None:
        for disk in self._made:
            disk.close()

    def _compare(self, name: str, disk: MirroredDisk, everything: bool) -> None:
        found = differences(disk.storage, disk.log, disk.keys_seen, self._compare_rng, everything)
        self.differences += [f"{self.where()} {name}: {what}" for what in found]


def differences(reference: MemoryStorage, log: NodeLog, keys_seen: set[str], rng: random.Random,
                everything: bool) -> list[str]:
    """What ``log`` answers otherwise than ``reference``: of every index if
    ``everything``, else of the ends and a sample; of every key in ``keys_seen``."""
    start, length = reference.start(), reference.length()
    if (log.start(), log.length()) != (start, length):
        return [f"start and length {log.start()}, {log.length()}; the reference's {start}, {length}"]
    found = []
    indexes = range(start.index, length + 1)
    if not everything and len(indexes) > SAMPLED:
        indexes = {start.index, start.index + 1, length - 1, length,
                   *rng.sample(indexes, SAMPLED - 4)}
    for index in sorted(indexes):
        try:
            answers = (log.term_at(index), log.digest_at(index))
            expected = (reference.term_at(index), reference.digest_at(index))
            if index < length:
                answers += (log.run_start(index),)
                expected += (reference.run_start(index),)
        except Exception as exc:  # noqa: BLE001 - any exception is a difference to report
            found.append(f"reading index {index} raised {exc!r}")
            continue
        if answers != expected:
            found.append(f"at {index}: term, digest, run start {answers}; the reference's {expected}")
    if _all_entries(log, start.index, length) != list(reference.all_entries):
        found.append("the entries differ")
    keys = _keys_in_force(reference)
    for key in keys_seen:
        if log.lookup(key) != keys.get(key):
            found.append(f"key {key!r}: {log.lookup(key)}; the reference's {keys.get(key)}")
    return found


def _all_entries(log: NodeLog, start: int, stop: int) -> list:
    """Entries [start, stop), read as the core reads them: a read may end early
    (at the window, when it began below it), but never empty (then they differ)."""
    entries: list = []
    while start + len(entries) < stop and (more := log.entries(start + len(entries), stop, 1 << 40)):
        entries += more
    return entries


def _keys_in_force(reference: MemoryStorage) -> dict[str, KeyRecord]:
    """The snapshot's keys, then each keyed entry's, the newest winning."""
    keys = {record.key: record for record in reference.snapshot().keys}
    first_id = reference.start().first_id
    for index, entry in enumerate(reference.all_entries, start=reference.start().index):
        if entry.key is not None:
            keys[entry.key] = KeyRecord(entry.key, index, first_id, entry.count, body_digest(entry.body))
        first_id += entry.count
    return keys
