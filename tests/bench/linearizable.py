"""linearizable-reads (issue 30): GET /messages at consistency=linearizable against a local read.

On a failover cluster of three (tests.bench.failover: DATA_DIR,
FSYNC=always), then, in the full run, on the fixed roles (one primary, two
secondaries, in memory), each fresh: the log is grown to ``log_messages`` with appends of
``GROW_BATCH`` at w=3, then wrk (32 connections, get.lua) reads pages of
``LIMIT`` at random offsets of it, for the plan's seconds each, on the
primary and on a secondary (s1), at the default level (local: no
``consistency`` parameter) and at ``consistency=linearizable``, one after
the other in the same sitting: req/s, p50, p99, and any error (a 503: the
read could not be confirmed) fails the run. The primary's linearizable
read costs one read-index round: a heartbeat to the secondaries and a
majority's answers (thesis §6.4); a secondary's asks its primary first.

**One replication round trip**, to judge the linearizable p50 by: the
nodes do not publish their own estimate (shared.consensus.raft_progress
keeps it to itself), so it is measured from outside: ``rtt_samples``
single-client appends to the primary over one keep-alive connection,
alternating w=1 and w=majority, before the reads; the round trip is
p50(w=majority) - p50(w=1). What it counts beyond the network and the
two nodes' passes: the secondary's write of the entry (an fsync, on the
failover cluster), which a read-index heartbeat does not wait for, so it
overstates a read index's round trip rather than understates it.

Needs consistency=linearizable in the nodes' checkout (``NEEDS``).
Thread: the benchmark's main thread.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.bench import catch_up, failover, nodes, wrk
from tests.bench.loads import CONNECTIONS, WRK_THREADS, Loader, Run, say

NEEDS = ("linearizable",)
SCENARIO = "linearizable-reads"
FAILOVER, FIXED = "failover", "fixed roles"
LEVELS = ("local", "linearizable")
LIMIT = 10
#: Messages per append while the log grows: a page cut from an entry re-reads the whole entry
#: (shared.log.documents), so entries of 100 keep that cost small beside the read's own.
GROW_BATCH = 100
MESSAGE_BYTES = 100
READER = "s1"


@dataclass
class ReadCluster:
    """One cluster's reads: runs by (node role, level), and its round trip."""

    kind: str
    primary: str
    round_trip_ms: float
    w1_p50_ms: float
    majority_p50_ms: float
    runs: dict[tuple[str, str], Run] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, "primary": self.primary, "round_trip_ms": round(self.round_trip_ms, 3),
                "round_trip_from": "p50 of single-client w=majority appends minus p50 of w=1 appends",
                "w1_p50_ms": round(self.w1_p50_ms, 3), "majority_p50_ms": round(self.majority_p50_ms, 3),
                "runs": {f"{where}, {level}": run.label for (where, level), run in self.runs.items()}}


@dataclass
class LinearizableReads:
    log_messages: int
    clusters: list[ReadCluster] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return [run for cluster in self.clusters for run in cluster.runs.values()]

    def to_json(self) -> dict:
        return {"log_messages": self.log_messages, "page": LIMIT,
                "clusters": [cluster.to_json() for cluster in self.clusters]}


def run(log_dir: Path, loader: Loader, log_messages: int, rtt_samples: int,
        fixed_roles: bool = True) -> LinearizableReads:
    """On the failover cluster, then (``fixed_roles``) on the fixed roles."""
    found = LinearizableReads(log_messages)
    with failover.failover_cluster(log_dir / "failover") as cluster:
        primary = cluster[failover.wait_for_primary(cluster)]
        reader = next(node for node in cluster.values() if node.name != primary.name)
        found.clusters.append(_measure(FAILOVER, primary, reader, loader, log_messages, rtt_samples))
    if fixed_roles:
        with nodes.cluster(log_dir / "fixed") as cluster:
            found.clusters.append(_measure(FIXED, cluster.primary, cluster[READER], loader, log_messages,
                                           rtt_samples))
    return found


def _measure(kind: str, primary, reader, loader: Loader, log_messages: int, rtt_samples: int) -> ReadCluster:
    say(f"{SCENARIO}: {kind}, a log of {log_messages:,} messages, then {rtt_samples} single appends")
    catch_up.grow(primary, log_messages, f"reads-{kind[:5]}", MESSAGE_BYTES, w=3,
                  batch_bytes=GROW_BATCH * MESSAGE_BYTES)
    w1, majority = _single_appends(primary.url, rtt_samples)
    found = ReadCluster(kind, primary.name, majority - w1, w1, majority)
    for where, node in (("primary", primary), ("secondary", reader)):
        for level in LEVELS:
            label = f"{kind}, {where} ({node.name}), {level}"
            say(f"{SCENARIO}: {label}, {loader.seconds} s")
            load = wrk.ReadLoad(node.url, span=log_messages, limit=LIMIT, consistency=level,
                                seconds=loader.seconds, connections=CONNECTIONS, threads=WRK_THREADS)
            result, cpu_us = loader.run(node, load)
            found.runs[where, level] = Run(SCENARIO, label, result, cpu_us_per_request=cpu_us)
    return found


def _single_appends(url: str, samples: int) -> tuple[float, float]:
    """p50 in ms of appends at w=1 and at w=majority, alternating, one at a time
    over one keep-alive connection."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    times: dict[str, list[float]] = {"1": [], "majority": []}
    try:
        for n in range(samples):
            for w in times:
                body = json.dumps({"message": f"rtt {w} {n}", "w": w if w == "majority" else 1}).encode()
                started = time.perf_counter()
                connection.request("POST", "/messages", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                times[w].append((time.perf_counter() - started) * 1000)
                if response.status != 201:
                    raise RuntimeError(f"{SCENARIO}: a single w={w} append got {response.status}")
    finally:
        connection.close()
    return statistics.median(times["1"]), statistics.median(times["majority"])
