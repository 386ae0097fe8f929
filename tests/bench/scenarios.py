"""The scenarios: each starts the processes it needs, loads them and checks them.

In order: the bare baseline; throughput at w=1, 2 and 3, then what a
/metrics scrape costs that primary (tests.bench.metrics_cost); the same
with DATA_DIR and FSYNC=always at w=1 and 3 ("durable"); w=3 again with
replication over CurveZMQ, to compare with the plain w=3; pipelining (w=3,
secondaries 0.2 s late); w=1 with secondaries 1 s late; batches (w=3, 100
messages per POST); a large log (load it, time GET /messages, read the
memory); tailing (tests.bench.tailing); catch-up (tests.bench.catch_up);
the durability scenarios of tests.bench.durability (a primary's start on a
large DATA_DIR, with the paged reads of tests.bench.paging on it, an
in-memory primary's recovery); the failover cluster's w=3 throughput,
beside the durable fixed-role one, and its kills (tests.bench.failover);
and what recording an append in the metrics costs. Every cluster is fresh, so a scenario's delays, log size
and data are its own, and every load on a cluster ends with the
consistency check. Every wrk run also notes the CPU time per request of
the process it loads.

Thread: the benchmark's main thread (tailing starts two of its own).
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench import catch_up, durability, failover, metrics_cost, nodes, tailing, wrk
from tests.bench.consistency import Consistency, wait_for_convergence
from tests.support.http import request
from tests.support.processes import Cluster, Node

CONNECTIONS = 32
#: One wrk thread per core: wrk shares the 2 cores with three servers.
WRK_THREADS = 2
MESSAGE_BYTES = 100
#: The batches scenario: messages per POST, and its write concern.
BATCH_MESSAGES = 100
BATCH_W = 3
PIPELINE_DELAY_S = 0.2
SLOW_DELAY_S = 1.0
#: Covers the slowest delay and a loaded machine, yet ends a broken run.
CONVERGENCE_TIMEOUT_S = 60.0
#: The write concerns measured with DATA_DIR, each against the in-memory run at the same w.
DURABLE_WS = (1, 3)
DURABLE_LABEL = "w={w}, DATA_DIR, FSYNC=always"
#: The failover cluster's throughput run: against the durable fixed-role run at the same w.
FAILOVER_W = 3
FAILOVER_LABEL = f"w={FAILOVER_W}, failover (PEERS), DATA_DIR, FSYNC=always"
#: Seconds between progress lines while the large log loads.
PROGRESS_EVERY_S = 15


@dataclass(frozen=True)
class Plan:
    """How long and how big: the full benchmark or the CI smoke run."""

    mode: str
    load_seconds: int
    log_messages: int
    #: GET /messages per node for the large-log read time (the median counts).
    read_repeats: int
    #: Ceiling on loading the large log.
    log_load_timeout_s: int
    #: Appends the tailing reader times.
    tail_samples: int
    #: The log lengths a secondary restarted empty catches up with, ascending.
    catch_up_lengths: tuple[int, ...]
    #: Times the failover scenario kills the primary.
    failover_kills: int


# Even a primary as slow as 60 appends/s loads its 100,000 messages in time.
FULL = Plan("full", load_seconds=8, log_messages=100_000, read_repeats=7, log_load_timeout_s=1800,
            tail_samples=2_000, catch_up_lengths=(25_000, 50_000, 100_000, 200_000), failover_kills=10)
SMOKE = Plan("smoke", load_seconds=1, log_messages=2_000, read_repeats=3, log_load_timeout_s=60,
             tail_samples=100, catch_up_lengths=(5_000, 10_000), failover_kills=2)


@dataclass
class Run:
    """One wrk load and, on a cluster, what the cluster held after it."""

    scenario: str
    label: str
    load: wrk.WrkResult
    consistency: Consistency | None = None
    #: Messages the primary's log gained during the run.
    log_growth: int | None = None
    #: CPU time of the loaded process (the primary, or the baseline) per
    #: response: what its throughput is bounded by. None without a response.
    cpu_us_per_request: float | None = None

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario,
            "label": self.label,
            **self.load.to_json(),
            "cpu_us_per_request": (None if self.cpu_us_per_request is None
                                   else round(self.cpu_us_per_request, 1)),
            "log_growth": self.log_growth,
            "consistency": self.consistency.to_json() if self.consistency else None,
        }


@dataclass
class LargeLog:
    messages: int
    payload_bytes: int
    load: Run
    #: Median GET /messages time per node, in ms, and the response size.
    read_ms: dict[str, float] = field(default_factory=dict)
    read_bytes: int = 0
    memory: dict[str, nodes.Memory] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "messages": self.messages,
            "payload_bytes": self.payload_bytes,
            "load": self.load.to_json(),
            "read_ms": self.read_ms,
            "read_bytes": self.read_bytes,
            "memory": {name: m.to_json() for name, m in self.memory.items()},
        }


@dataclass
class Results:
    runs: list[Run]
    large_log: LargeLog
    tailing: tailing.Tailing
    catch_up: list[catch_up.CatchUp]
    durability: durability.Durability
    failover: failover.Failover
    metrics_cost: metrics_cost.MetricsCost

    def run(self, scenario: str, label: str) -> Run:
        return next(r for r in self.runs if r.scenario == scenario and r.label == label)


class Bench:
    """Runs the scenarios of one plan; each starts and stops its own processes."""

    def __init__(self, plan: Plan, wrk_path: str, log_dir: Path) -> None:
        self.plan = plan
        self._wrk = wrk_path
        self._log_dir = log_dir

    def run_all(self) -> Results:
        baseline = self.baseline()
        throughput, (scrape_us, scrape_bytes) = self.throughput()
        runs = [baseline, *throughput, *self.durable_throughput(), self.failover_throughput(),
                self.curve(), self.pipelining(), self.w1_under_delay(), self.batches()]
        large_log = self.large_log()
        tail = self.tailing_latency()
        catching_up = self.catch_up_times()
        start_ups = self.start_ups()
        kills = self.failover_kills()
        # Last, with no cluster left running to compete with this process.
        self._say("metrics-cost: timing PrimaryMetrics.record_append in this process")
        cost = metrics_cost.MetricsCost(metrics_cost.record_us(), scrape_us, scrape_bytes)
        return Results(runs, large_log, tail, catching_up, start_ups, kills, cost)

    def baseline(self) -> Run:
        with nodes.baseline(self._logs("baseline")) as app:
            self._say(f"baseline: bare Bottle+Waitress, {self.plan.load_seconds} s")
            result, cpu_us = self._wrk_run(app, self._load(app.url, 1, "base"))
            return Run("baseline", "bare", result, cpu_us_per_request=cpu_us)

    def throughput(self) -> tuple[list[Run], tuple[float, int]]:
        """The runs at w=1, 2 and 3, and the primary's CPU µs and bytes per /metrics scrape."""
        with nodes.cluster(self._logs("throughput")) as cluster:
            runs = [self._measure(cluster, "throughput", f"w={w}", w) for w in (1, 2, 3)]
            self._say(f"metrics-cost: {metrics_cost.SCRAPES} scrapes of the primary's /metrics")
            return runs, metrics_cost.scrape(cluster.primary)

    def durable_throughput(self) -> list[Run]:
        with nodes.cluster(self._logs("durable"), durable=True) as cluster:
            return [self._measure(cluster, "durable", DURABLE_LABEL.format(w=w), w) for w in DURABLE_WS]

    def failover_throughput(self) -> Run:
        with failover.failover_cluster(self._logs("failover-throughput")) as cluster:
            elected = failover.wait_for_primary(cluster)
            if elected != "primary":  # it stands first on a fresh cluster: the load goes to it
                raise RuntimeError(f"a fresh failover cluster elected {elected}, not primary")
            return self._measure(cluster, "failover", FAILOVER_LABEL, FAILOVER_W)

    def failover_kills(self) -> failover.Failover:
        self._say(f"failover: kill -9 of the primary, {self.plan.failover_kills} times, under "
                  f"w=majority load")
        return failover.run(self._logs("failover"), self.plan.failover_kills)

    def curve(self) -> Run:
        with nodes.cluster(self._logs("curve"), curve=True) as cluster:
            return self._measure(cluster, "curve", "w=3, CurveZMQ", 3)

    def pipelining(self) -> Run:
        with nodes.cluster(self._logs("pipelining"), PIPELINE_DELAY_S) as cluster:
            return self._measure(cluster, "pipelining", f"w=3, {PIPELINE_DELAY_S:g} s delay", 3)

    def w1_under_delay(self) -> Run:
        with nodes.cluster(self._logs("w1-delay"), SLOW_DELAY_S) as cluster:
            return self._measure(cluster, "w1-delay", f"w=1, {SLOW_DELAY_S:g} s delay", 1)

    def batches(self) -> Run:
        with nodes.cluster(self._logs("batches")) as cluster:
            label = f"w={BATCH_W}, {BATCH_MESSAGES} messages per POST"
            return self._measure(cluster, "batches", label, BATCH_W, batch=BATCH_MESSAGES)

    def large_log(self) -> LargeLog:
        count = self.plan.log_messages
        with nodes.cluster(self._logs("large-log")) as cluster:
            primary = cluster.primary
            self._say(f"large-log: loading {count:,} messages with w=1")
            load = wrk.Load(
                primary.url, w=1, tag="log", message_bytes=MESSAGE_BYTES,
                seconds=self.plan.log_load_timeout_s, connections=CONNECTIONS,
                threads=WRK_THREADS, limit=count,
            )
            cpu_before = nodes.cpu_seconds(primary)
            with wrk.WrkRun(self._wrk, load) as running:
                self._wait_for_length(primary, count)
                loaded = running.interrupt()
            cpu_us = _cpu_us_per_request(primary, cpu_before, loaded)
            consistency = wait_for_convergence(cluster, CONVERGENCE_TIMEOUT_S)
            run = Run("large-log", f"load {count:,} messages, w=1", loaded, consistency,
                      consistency.lengths["primary"], cpu_us)
            result = LargeLog(count, count * MESSAGE_BYTES, run)
            reader = cluster["s1"]
            for node in (primary, reader):
                result.read_ms[node.name], result.read_bytes = self._time_reads(node)
            # After the reads, so that memory they keep is counted too.
            result.memory = {node.name: nodes.memory(node) for node in (primary, reader)}
            return result

    def tailing_latency(self) -> tailing.Tailing:
        with nodes.cluster(self._logs("tailing")) as cluster:
            self._say(f"tailing: {self.plan.tail_samples:,} appends at w=1, {tailing.TAILED} tailed")
            return tailing.run(cluster, self.plan.tail_samples, MESSAGE_BYTES)

    def catch_up_times(self) -> list[catch_up.CatchUp]:
        lengths = ", ".join(f"{n:,}" for n in self.plan.catch_up_lengths)
        with nodes.cluster(self._logs("catch-up")) as cluster:
            self._say(f"catch-up: {catch_up.RESTARTED} restarted empty on logs of {lengths} messages")
            return catch_up.run(cluster, self.plan.catch_up_lengths, MESSAGE_BYTES,
                                CONVERGENCE_TIMEOUT_S)

    def start_ups(self) -> durability.Durability:
        """ready-time and recovery: how fast a node with a large log is up."""
        sizes = durability.SIZES[self.plan.mode]
        return durability.Durability(
            durability.ready_time(self._logs("ready-time"), messages=sizes.ready_messages,
                                  message_bytes=MESSAGE_BYTES, say=self._say),
            durability.recovery(self._logs("recovery"), messages=sizes.recovery_messages,
                                message_bytes=MESSAGE_BYTES,
                                convergence_timeout_s=CONVERGENCE_TIMEOUT_S, say=self._say),
        )

    def _measure(self, cluster: Cluster | failover.FailoverNodes, scenario: str, label: str, w: int,
                 batch: int = 1) -> Run:
        self._say(f"{scenario}: {label}, {self.plan.load_seconds} s")
        before = nodes.log_length(cluster.primary)
        tag = f"{scenario}-w{w}"
        result, cpu_us = self._wrk_run(cluster.primary, self._load(cluster.primary.url, w, tag, batch))
        consistency = wait_for_convergence(cluster, CONVERGENCE_TIMEOUT_S)
        return Run(scenario, label, result, consistency, consistency.lengths["primary"] - before, cpu_us)

    def _wrk_run(self, server: Node, load: wrk.Load) -> tuple[wrk.WrkResult, float | None]:
        """Run ``load`` against ``server``: wrk's result, and the server's CPU µs per response."""
        cpu_before = nodes.cpu_seconds(server)
        result = wrk.run(self._wrk, load)
        return result, _cpu_us_per_request(server, cpu_before, result)

    def _load(self, url: str, w: int, tag: str, batch: int = 1) -> wrk.Load:
        return wrk.Load(url, w=w, tag=tag, message_bytes=MESSAGE_BYTES, seconds=self.plan.load_seconds,
                        connections=CONNECTIONS, threads=WRK_THREADS, batch=batch)

    def _wait_for_length(self, primary: Node, count: int) -> None:
        """Wait until the primary holds ``count`` messages, saying how it goes."""
        started = last_said = time.monotonic()
        while (length := nodes.log_length(primary)) < count:
            now = time.monotonic()
            if now - started > self.plan.log_load_timeout_s:
                raise RuntimeError(f"the primary holds {length:,} of {count:,} messages after "
                                   f"{self.plan.log_load_timeout_s} s of loading")
            if now - last_said >= PROGRESS_EVERY_S:
                self._say(f"large-log: {length:,} of {count:,} messages, {length / (now - started):.0f}/s")
                last_said = now
            time.sleep(0.2)

    def _time_reads(self, node: Node) -> tuple[float, int]:
        """Median GET /messages time in ms, and the response's size."""
        times, size = [], 0
        for _ in range(self.plan.read_repeats):
            response = request("GET", f"{node.url}/messages", timeout=60)
            if response.status != 200:
                raise RuntimeError(f"GET /messages on {node.name}: {response.status} {response.body[:200]!r}")
            times.append(response.elapsed * 1000)
            size = len(response.body)
        return round(statistics.median(times), 1), size

    def _logs(self, scenario: str) -> Path:
        return self._log_dir / scenario

    def _say(self, what: str) -> None:
        print(f"-- {what}", file=sys.stderr, flush=True)


def _cpu_us_per_request(server: Node, cpu_before_s: float, result: wrk.WrkResult) -> float | None:
    """The CPU time ``server`` used since ``cpu_before_s``, per response of ``result``."""
    if not result.responses:
        return None
    return (nodes.cpu_seconds(server) - cpu_before_s) * 1e6 / result.responses
