"""failover-large-log (issue 29): a failover cluster on a prebuilt log of millions, beside it empty.

Three failover nodes (tests.bench.failover: DATA_DIR, FSYNC=always, default
timeouts), 100-byte messages:

1. **empty**: a fresh cluster: w=3 throughput (wrk, single messages), then
   batches of 100 at w=3, each load checked as usual.
2. **large**: one store of ``messages`` messages (one per entry, as single
   appends leave them) is written directly (tests.bench.stores: the first
   term elected ``primary``), then copied to each node with that node's
   hard state and a new incarnation, as a cluster holds the same entries;
   the three are launched at once: each node's time from its launch to
   /health 200; every node's RSS; the same two loads as on the empty
   cluster, each checked from the stored length on (three copies of the
   stored part are too much to read after every load); every node's RSS
   again, the figure against its goal; then the primary must serve exactly
   the stored messages (read whole, in pages:
   tests.bench.durability.differences), and pages of 1,000 are timed at
   offsets across them (tests.bench.paging), after the RSS figures since
   such reads leave pages in memory; then every node killed and launched
   again at once: the time to the first w=3 201
   (tests.bench.nodes.whole_restart).

The stores take about 150 bytes per message on disk, three times over:
``--large-log N`` sizes them, and they are deleted when the scenario ends
(the node logs stay). Needs this engine's store format (``NEEDS``).

Thread: the benchmark's main thread.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench import durability, failover, nodes, paging, stores
from tests.bench.loads import Loader, MESSAGE_BYTES, Run, say

NEEDS = ("store",)
SCENARIO = "failover-large-log"
TAG = "big"
W = 3
BATCH = 100
#: The node elected in the stored term, whose vote the others gave.
ELECTED = "primary"
MB = 1_000_000


@dataclass
class LargeFailoverLog:
    messages: int
    build_s: float
    #: The empty cluster's runs, and the large one's: (single messages, batches) each.
    empty: list[Run] = field(default_factory=list)
    large: list[Run] = field(default_factory=list)
    ready_s: dict[str, float] = field(default_factory=dict)
    pages: paging.PagedReads | None = None
    #: Where the primary's log departs from the store; empty if nowhere.
    problem: str = ""
    memory_at_start: dict[str, nodes.Memory] = field(default_factory=dict)
    memory: dict[str, nodes.Memory] = field(default_factory=dict)
    restart_s: float | None = None
    store_bytes: int = 0

    @property
    def runs(self) -> list[Run]:
        return self.empty + self.large

    def ratio(self, index: int) -> float | None:
        """The large cluster's req/s over the empty one's, for run ``index`` (0: single, 1: batches)."""
        if len(self.empty) <= index or len(self.large) <= index or not self.empty[index].load.requests_per_s:
            return None
        return self.large[index].load.requests_per_s / self.empty[index].load.requests_per_s

    def to_json(self) -> dict:
        return {
            "messages": self.messages, "build_s": round(self.build_s, 1),
            "store_mb": round(self.store_bytes / MB, 1),
            "runs_empty": [run.label for run in self.empty], "runs_large": [run.label for run in self.large],
            "w3_ratio": _rounded(self.ratio(0)), "batches_ratio": _rounded(self.ratio(1)),
            "ready_s": {name: round(s, 3) for name, s in self.ready_s.items()},
            "paged_reads": self.pages.to_json() if self.pages else None,
            "ok": not self.problem, "problem": self.problem,
            "memory_at_start": {name: m.to_json() for name, m in self.memory_at_start.items()},
            "memory": {name: m.to_json() for name, m in self.memory.items()},
            "restart_to_w3_201_s": None if self.restart_s is None else round(self.restart_s, 3),
        }


def _rounded(ratio: float | None) -> float | None:
    return None if ratio is None else round(ratio, 3)


def run(log_dir: Path, loader: Loader, messages: int) -> LargeFailoverLog:
    with failover.failover_cluster(log_dir / "empty") as cluster:
        primary = cluster[failover.wait_for_primary(cluster)]
        empty = _loads(loader, cluster, primary, "empty log", None)
    store_dir = log_dir / "stores"
    shutil.rmtree(store_dir, ignore_errors=True)
    try:
        say(f"{SCENARIO}: writing a store of {messages:,} messages, then a copy per node")
        started = time.monotonic()
        data_dirs = {name: store_dir / name for name in failover.NAMES}
        first, *others = failover.NAMES
        data_dirs[first].mkdir(parents=True)
        stores.build_store(data_dirs[first], stores.failover_node(ELECTED, first), messages, TAG, MESSAGE_BYTES)
        for name in others:
            stores.copy_store(data_dirs[first], data_dirs[name], stores.failover_node(ELECTED, name))
        found = LargeFailoverLog(messages, time.monotonic() - started, empty,
                                 store_bytes=stores.size_on_disk(data_dirs[first]))
        say(f"{SCENARIO}: written in {found.build_s:.0f} s ({found.store_bytes / MB:,.0f} MB a node); "
            "the three nodes start on it")
        with failover.failover_cluster(log_dir / "large", data_dirs=data_dirs) as cluster:
            found.ready_s = dict(cluster.ready_s)
            primary = cluster[failover.wait_for_primary(cluster)]
            found.memory_at_start = {node.name: nodes.memory(node) for node in cluster.values()}
            found.large = _loads(loader, cluster, primary, f"{messages:,} messages", messages)
            found.memory = {node.name: nodes.memory(node) for node in cluster.values()}
            # After the figures above: a read of the whole log leaves its pages in memory.
            say(f"{SCENARIO}: {primary.name} serves the stored log? (read whole, then pages at offsets)")
            found.problem = durability.differences(primary, messages, TAG, MESSAGE_BYTES, more=True)
            found.pages = paging.time_pages(primary, messages,
                                            lambda seq: stores.message(TAG, seq, MESSAGE_BYTES))
            say(f"{SCENARIO}: every node killed and restarted")
            found.restart_s = nodes.whole_restart(cluster.values(), [node.url for node in cluster.values()],
                                                  W, f"{SCENARIO} restart")
        return found
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


def _loads(loader: Loader, cluster, primary, what: str, from_id: int | None) -> list[Run]:
    return [loader.measure(cluster, SCENARIO, f"w={W}, {what}", W, server=primary, from_id=from_id),
            loader.measure(cluster, SCENARIO, f"w={W}, {BATCH} per POST, {what}", W, batch=BATCH,
                           server=primary, from_id=from_id)]
