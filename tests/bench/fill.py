"""failover-fill: a log filled in big batches at w=1, the memory it holds, and a whole restart on it.

Two clusters, one after the other, each fresh, every node with a DATA_DIR
and FSYNC=always: the fixed roles (one primary, two secondaries), then a
failover cluster of three (tests.bench.failover), so that the sitting has
both figures side by side. On each:

- **fill**: wrk (32 connections) sends ``messages`` / ``batch`` POSTs of
  ``batch`` unique 100-byte messages at w=1 to the primary; the figure is
  the time from wrk's launch until the primary's /health length holds them
  all (polled every 20 ms), then until every node's does; then every node
  must hold the same list (the consistency check, which also fails the run
  on a duplicate or a loss);
- **RSS** of every node then (VmRSS, and VmHWM, its peak), before the
  consistency check reads the whole log through each;
- **whole restart**: every node killed (SIGKILL) and all launched again at
  once on their stores; the time from that launch to the first w=3 append
  answered 201 (tests.bench.nodes.whole_restart: sent to the primary of
  the fixed roles, to each failover node in turn, since any of them may be
  elected).

Thread: the benchmark's main thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench import failover, nodes
from tests.bench.consistency import wait_for_convergence
from tests.bench.loads import CONVERGENCE_TIMEOUT_S, Loader, Run, say

SCENARIO = "failover-fill"
FIXED, FAILOVER = "fixed roles", "failover"
RESTART_W = 3
MB = 1_000_000


@dataclass
class Fill:
    kind: str  # FIXED or FAILOVER
    run: Run
    #: From wrk's launch until the primary held every message, then until every node did.
    fill_s: float
    converged_s: float
    memory: dict[str, nodes.Memory]
    #: From the whole cluster's relaunch to the first w=3 201.
    restart_s: float

    def to_json(self) -> dict:
        return {"kind": self.kind, "label": self.run.label, "fill_s": round(self.fill_s, 2),
                "converged_s": round(self.converged_s, 2),
                "messages_per_s": round(self.run.log_growth / self.fill_s) if self.run.log_growth else None,
                "memory": {name: m.to_json() for name, m in self.memory.items()},
                "restart_to_w3_201_s": round(self.restart_s, 3)}


@dataclass
class Fills:
    messages: int
    batch: int
    fills: list[Fill] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return [fill.run for fill in self.fills]

    def of(self, kind: str) -> Fill | None:
        return next((fill for fill in self.fills if fill.kind == kind), None)

    def to_json(self) -> dict:
        return {"messages": self.messages, "batch": self.batch, "fills": [f.to_json() for f in self.fills]}


def run(log_dir: Path, loader: Loader, messages: int, batch: int, timeout_s: float) -> Fills:
    found = Fills(messages, batch)
    with nodes.cluster(log_dir / "fixed", durable=True) as cluster:
        found.fills.append(_fill(FIXED, cluster, cluster.primary, cluster.nodes, [cluster.primary.url],
                                 loader, messages, batch, timeout_s))
    with failover.failover_cluster(log_dir / "failover") as cluster:
        primary = cluster[failover.wait_for_primary(cluster)]
        found.fills.append(_fill(FAILOVER, cluster, primary, cluster.values(),
                                 [node.url for node in cluster.values()], loader, messages, batch, timeout_s))
    return found


def _fill(kind: str, cluster, primary, every: list, urls: list[str], loader: Loader, messages: int,
          batch: int, timeout_s: float) -> Fill:
    say(f"{SCENARIO}: {kind}, {messages:,} messages in POSTs of {batch:,} at w=1")
    load = loader.load(primary.url, 1, f"fill-{kind[:5]}", batch=batch, limit=messages // batch,
                       seconds=int(timeout_s))
    launched = time.monotonic()
    result, fill_s, cpu_us = loader.exactly(primary, load, messages, timeout_s, SCENARIO)
    failover.wait(lambda: all(nodes.log_length(node) >= messages for node in every), CONVERGENCE_TIMEOUT_S,
                  "every node to hold the fill")
    converged_s = time.monotonic() - launched
    # Before the check, which reads the whole log through every node.
    memory = {node.name: nodes.memory(node) for node in every}
    consistency = wait_for_convergence(cluster, CONVERGENCE_TIMEOUT_S)
    label = f"{kind}: {messages:,} in POSTs of {batch:,}, w=1"
    filled = Run(SCENARIO, label, result, consistency, consistency.lengths[primary.name], cpu_us)
    say(f"{SCENARIO}: {kind}, every node killed and restarted")
    restart_s = nodes.whole_restart(list(every), urls, RESTART_W, f"{SCENARIO} restart")
    return Fill(kind, filled, fill_s, converged_s, memory, restart_s)
