"""retention: a failover cluster that keeps about RETENTION_MESSAGES, and what its store weighs on disk.

A fresh failover cluster of three (tests.bench.failover: DATA_DIR,
FSYNC=always) with RETENTION_MESSAGES = ``appended`` / 10 (1,000,000 of
10,000,000 in the full run; ``--retention N`` sets ``appended``). wrk
appends batches of 100 at w=3 to the primary (32 connections, each POST's
messages unique), in two loads, each stopped once the primary holds what
it was to send (tests.bench.loads.Loader.exactly):

1. up to RETENTION_MESSAGES: the log is then whole (the start moves only
   once the bound is passed by a tenth), and every node's store on disk
   (the .sqlite3 file and its -wal: tests.bench.stores.size_on_disk) is
   what a store of that many messages weighs, grown the same way;
2. up to ``appended``: the start moves all along; the w=3 throughput
   meanwhile is this load's.

After each load the nodes must converge on the same retained list without
duplicates (tests.bench.consistency). After the second the stores are
weighed again once they stop shrinking (the rows below the start are
deleted a few thousand per commit, each followed by an incremental vacuum)
or after ``SETTLE_S``. The checks: every node's start moved, and keeps
between RETENTION_MESSAGES and a tenth more (plus a batch); a read below
the start is ``410`` with ``first_id`` on every node. The figure against
its goal: the settled store over the one of RETENTION_MESSAGES, per node.

Needs RETENTION_* in the nodes' checkout (``NEEDS``). Thread: the
benchmark's main thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench import failover, nodes, stores
from tests.bench.consistency import wait_for_convergence
from tests.bench.loads import CONVERGENCE_TIMEOUT_S, Loader, Run, say
from tests.support.http import get_health, request

NEEDS = ("retention",)
SCENARIO = "retention"
W = 3
BATCH = 100
#: The longest the stores are watched shrinking after the load, and how long unchanged counts as settled.
SETTLE_S = 60.0
STEADY_S = 3.0
MB = 1_000_000


@dataclass
class Retention:
    appended: int
    bound: int
    #: The load up to the bound, and the one past it.
    runs: list[Run] = field(default_factory=list)
    #: Per node: store bytes at the bound (a whole log of that many), at the end of the load, settled.
    at_bound: dict[str, int] = field(default_factory=dict)
    at_end: dict[str, int] = field(default_factory=dict)
    settled: dict[str, int] = field(default_factory=dict)
    settle_s: float = 0.0
    #: Per node: the first id kept, and the id after the last.
    first_ids: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def ratio(self, name: str) -> float:
        return self.settled[name] / self.at_bound[name]

    def to_json(self) -> dict:
        def mb(sizes: dict[str, int]) -> dict[str, float]:
            return {name: round(size / MB, 1) for name, size in sizes.items()}

        return {
            "appended": self.appended, "retention_messages": self.bound,
            "runs": [run.label for run in self.runs],
            "store_mb_at_bound": mb(self.at_bound), "store_mb_at_end": mb(self.at_end),
            "store_mb_settled": mb(self.settled), "settle_s": round(self.settle_s, 1),
            "settled_over_at_bound": {name: round(self.ratio(name), 2) for name in self.settled},
            "first_ids": self.first_ids, "lengths": self.lengths, "problems": self.problems,
        }


def run(log_dir: Path, loader: Loader, appended: int, timeout_s: float) -> Retention:
    bound = appended // 10
    found = Retention(appended, bound)
    env = {"RETENTION_MESSAGES": str(bound)}
    with failover.failover_cluster(log_dir, env=env) as cluster:
        primary = cluster[failover.wait_for_primary(cluster)]
        data_dirs = {node.name: Path(node.env["DATA_DIR"]) for node in cluster.values()}
        for tag, upto, label in (("ret-a", bound, f"w={W}, {BATCH} per POST, up to {bound:,} (nothing dropped)"),
                                 ("ret-b", appended, f"w={W}, {BATCH} per POST, {bound:,} to {appended:,}, "
                                                     f"RETENTION_MESSAGES={bound:,}")):
            say(f"{SCENARIO}: {label}")
            before = nodes.log_length(primary)
            load = loader.load(primary.url, W, tag, batch=BATCH, limit=(upto - before) // BATCH,
                               seconds=int(timeout_s))
            result, _took, cpu_us = loader.exactly(primary, load, upto, timeout_s, SCENARIO)
            if tag == "ret-b":
                found.at_end = {name: stores.size_on_disk(path) for name, path in data_dirs.items()}
            consistency = wait_for_convergence(cluster, CONVERGENCE_TIMEOUT_S)
            found.runs.append(Run(SCENARIO, label, result, consistency,
                                  consistency.lengths[primary.name] - before, cpu_us))
            if tag == "ret-a":
                found.at_bound = {name: stores.size_on_disk(path) for name, path in data_dirs.items()}
        found.settled, found.settle_s = _settled(data_dirs)
        for node in cluster.values():
            health = get_health(node.url)
            found.first_ids[node.name], found.lengths[node.name] = health["first_id"], health["length"]
            found.problems += _problems(node, health, bound)
    return found


def _settled(data_dirs: dict[str, Path]) -> tuple[dict[str, int], float]:
    """The stores' sizes once unchanged for STEADY_S (or after SETTLE_S), and when that was."""
    started = time.monotonic()
    sizes = {name: stores.size_on_disk(path) for name, path in data_dirs.items()}
    changed = started
    while time.monotonic() - changed < STEADY_S and time.monotonic() - started < SETTLE_S:
        time.sleep(0.5)
        now = {name: stores.size_on_disk(path) for name, path in data_dirs.items()}
        if now != sizes:
            sizes, changed = now, time.monotonic()
    return sizes, changed - started


def _problems(node, health: dict, bound: int) -> list[str]:
    found = []
    kept = health["length"] - health["first_id"]
    if not bound <= kept <= bound * 1.1 + BATCH:
        found.append(f"{node.name} keeps {kept:,} messages (ids {health['first_id']:,} to "
                     f"{health['length']:,}), not {bound:,} to a tenth more")
    if health["first_id"] > 0:
        below = request("GET", f"{node.url}/messages?from=0&limit=1")
        first_id = below.json.get("first_id") if below.status == 410 else None
        if first_id != health["first_id"]:
            found.append(f"{node.name}: a read below the start got {below.status} "
                         f"{below.body[:120]!r}, not 410 with first_id {health['first_id']:,}")
    return found
