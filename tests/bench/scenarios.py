"""The scenarios: which there are, in which order, and how big; each starts the processes it needs.

``SCENARIOS`` lists them in the order they run (``--only`` picks some; the
baseline always runs, so that every sitting has figures beside it):
the bare baseline; throughput at w=1, 2 and 3, then what a /metrics scrape
costs that primary (tests.bench.metrics_cost); the same with DATA_DIR and
FSYNC=always at w=1 and 3 ("durable"); the failover cluster's w=3 beside
it; w=3 again over CurveZMQ; pipelining (w=3, secondaries 0.2 s late); w=1
with secondaries 1 s late; batches (w=3, 100 messages per POST); a large
log (load it, time GET /messages, read the memory); tailing
(tests.bench.tailing); catch-up (tests.bench.catch_up); ready-time (with
the paged reads of tests.bench.paging) and recovery (tests.bench.durability);
the failover cluster's kills and stops (tests.bench.failover), a follower
restarted empty (tests.bench.failover_catch_up), a fill and a whole restart
(tests.bench.fill), a prebuilt large log (tests.bench.large_failover_log),
retention (tests.bench.retention) and linearizable reads
(tests.bench.linearizable). Every cluster is fresh, so a scenario's delays,
log size and data are its own; every load on a cluster ends with the
consistency check (tests.bench.loads), and notes the CPU time per request
of the process it loads. Each scenario's load average before it runs is
recorded.

A scenario that needs what the nodes' checkout lacks (``--code``:
tests.bench.checkout) is skipped, and said so.

Thread: the benchmark's main thread (some scenarios start threads of their own).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench import (
    catch_up, checkout, durability, failover, failover_catch_up, fill, large_failover_log, linearizable,
    machine, metrics_cost, nodes, retention, tailing,
)
from tests.bench.consistency import wait_for_convergence
from tests.bench.loads import CONVERGENCE_TIMEOUT_S, MESSAGE_BYTES, Loader, Run, say
from tests.support.http import request

#: The batches scenario: messages per POST, and its write concern.
BATCH_MESSAGES = 100
BATCH_W = 3
PIPELINE_DELAY_S = 0.2
SLOW_DELAY_S = 1.0
#: The write concerns measured with DATA_DIR, each against the in-memory run at the same w.
DURABLE_WS = (1, 3)
DURABLE_LABEL = "w={w}, DATA_DIR, FSYNC=always"
#: The failover cluster's throughput run: against the durable fixed-role run at the same w.
FAILOVER_W = 3
FAILOVER_LABEL = f"w={FAILOVER_W}, failover (PEERS), DATA_DIR, FSYNC=always"


@dataclass(frozen=True)
class Scenario:
    name: str
    #: What the nodes' checkout must have (tests.bench.checkout.FEATURES).
    needs: tuple[str, ...] = ()


SCENARIOS = tuple(Scenario(*spec) for spec in (
    ("baseline",), ("throughput",), ("durable",), ("failover",), ("curve",), ("pipelining",),
    ("w1-delay",), ("batches",), ("large-log",), ("tailing",), ("catch-up",),
    ("ready-time", durability.NEEDS), ("recovery", durability.NEEDS), ("failover-kills",),
    ("failover-stops",), ("failover-catch-up",), ("failover-fill",),
    ("failover-large-log", large_failover_log.NEEDS), ("retention", retention.NEEDS),
    ("linearizable-reads", linearizable.NEEDS),
))
NAMES = tuple(scenario.name for scenario in SCENARIOS)
#: Run whatever ``--only`` says.
ALWAYS = "baseline"


@dataclass(frozen=True)
class Plan:
    """How long and how big: the full benchmark or the CI smoke run."""

    mode: str
    load_seconds: int
    log_messages: int
    #: GET /messages per node for the large-log read time (the median counts).
    read_repeats: int
    #: Ceiling on loading a log to a size.
    log_load_timeout_s: int
    #: Appends the tailing reader times.
    tail_samples: int
    #: The log lengths a secondary restarted empty catches up with, ascending.
    catch_up_lengths: tuple[int, ...]
    #: Times the failover scenarios kill, and stop, the primary.
    failover_kills: int
    failover_stops: int
    #: The prebuilt stores of ready-time and recovery.
    ready_messages: int
    recovery_messages: int
    #: failover-catch-up: (messages, bytes each) of each case, on a cluster of its own.
    failover_catch_up: tuple[tuple[int, int], ...]
    #: failover-fill: messages, in POSTs of ``fill_batch``.
    fill_messages: int
    fill_batch: int
    #: failover-large-log: messages of the prebuilt stores (``--large-log``).
    large_log_messages: int
    #: retention: messages appended (``--retention``); RETENTION_MESSAGES is a tenth.
    retention_appended: int
    #: linearizable-reads: the log read, the single-client appends a round trip is measured by, and
    #: whether the fixed roles are read too (the failover cluster always is).
    read_log_messages: int
    rtt_samples: int
    read_fixed_roles: bool


FULL = Plan("full", load_seconds=8, log_messages=100_000, read_repeats=7, log_load_timeout_s=1800,
            tail_samples=2_000, catch_up_lengths=(25_000, 50_000, 100_000, 200_000), failover_kills=10,
            failover_stops=10, ready_messages=1_000_000, recovery_messages=100_000,
            failover_catch_up=((1_000_000, 100), (100_000, 1024)), fill_messages=1_000_000,
            fill_batch=1_000, large_log_messages=10_000_000, retention_appended=10_000_000,
            read_log_messages=100_000, rtt_samples=400, read_fixed_roles=True)
SMOKE = Plan("smoke", load_seconds=1, log_messages=2_000, read_repeats=3, log_load_timeout_s=60,
             tail_samples=100, catch_up_lengths=(5_000, 10_000), failover_kills=2, failover_stops=2,
             ready_messages=20_000, recovery_messages=10_000,
             failover_catch_up=((5_000, 100), (1_000, 1024)), fill_messages=20_000, fill_batch=1_000,
             large_log_messages=20_000, retention_appended=20_000, read_log_messages=2_000, rtt_samples=40,
             read_fixed_roles=False)


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
    """What the scenarios that ran found; None (or empty) for those that did not run."""

    #: Every wrk run, in order: the table's rows.
    runs: list[Run] = field(default_factory=list)
    large_log: LargeLog | None = None
    tailing: tailing.Tailing | None = None
    catch_up: list[catch_up.CatchUp] | None = None
    ready: durability.ReadyTime | None = None
    recovery: durability.RecoveryTime | None = None
    failover: failover.Failover | None = None
    failover_stops: failover.Failover | None = None
    failover_catch_up: list[failover_catch_up.FailoverCatchUp] | None = None
    fill: fill.Fills | None = None
    large_failover_log: large_failover_log.LargeFailoverLog | None = None
    retention: retention.Retention | None = None
    linearizable: linearizable.LinearizableReads | None = None
    metrics_cost: metrics_cost.MetricsCost | None = None
    #: The primary's CPU µs and bytes per /metrics scrape, from the throughput cluster.
    scrape: tuple[float, int] | None = None
    #: machine.load_average() before each scenario that ran, and how long it took (s), by name.
    load_averages: dict[str, dict] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    #: Scenarios asked for that did not run, and why.
    skipped: dict[str, str] = field(default_factory=dict)

    def run(self, scenario: str, label: str) -> Run | None:
        return next((r for r in self.runs if r.scenario == scenario and r.label == label), None)

    def runs_of(self, scenario: str) -> list[Run]:
        return [r for r in self.runs if r.scenario == scenario]

    def to_json(self) -> dict:
        def each(value):
            if value is None:
                return None
            return [v.to_json() for v in value] if isinstance(value, list) else value.to_json()

        return {
            "load_averages": self.load_averages,
            "durations_s": self.durations,
            "skipped": self.skipped,
            "runs": [run.to_json() for run in self.runs],
            "large_log": each(self.large_log),
            "tailing": each(self.tailing),
            "catch_up": each(self.catch_up),
            "durability": {"ready_time": each(self.ready), "recovery": each(self.recovery)},
            "failover": each(self.failover),
            "failover_stops": each(self.failover_stops),
            "failover_catch_up": each(self.failover_catch_up),
            "failover_fill": each(self.fill),
            "failover_large_log": each(self.large_failover_log),
            "retention": each(self.retention),
            "linearizable_reads": each(self.linearizable),
            "metrics_cost": each(self.metrics_cost),
        }


class Bench:
    """Runs the scenarios of one plan; each starts and stops its own processes."""

    def __init__(self, plan: Plan, wrk_path: str, log_dir: Path) -> None:
        self.plan = plan
        self._loader = Loader(wrk_path, plan.load_seconds)
        self._log_dir = log_dir

    def run_all(self, selected: tuple[str, ...] = NAMES) -> Results:
        results = Results()
        code = checkout.current()
        for scenario in SCENARIOS:
            if scenario.name != ALWAYS and scenario.name not in selected:
                continue
            missing = code.missing(scenario.needs)
            if missing:
                results.skipped[scenario.name] = f"it {' and '.join(missing)}, which {code.path} lacks"
                say(f"{scenario.name}: SKIPPED: {results.skipped[scenario.name]}")
                continue
            results.load_averages[scenario.name] = machine.load_average()
            started = time.monotonic()
            getattr(self, scenario.name.replace("-", "_"))(results)
            results.durations[scenario.name] = round(time.monotonic() - started, 1)
        if results.scrape is not None:
            # Last, with no cluster left running to compete with the timing.
            say("metrics-cost: timing PrimaryMetrics.record_append")
            results.metrics_cost = metrics_cost.MetricsCost(metrics_cost.record_us(), *results.scrape)
        return results

    # -- the scenarios, in SCENARIOS' order -------------------------------------------------

    def baseline(self, results: Results) -> None:
        with nodes.baseline(self._logs("baseline")) as app:
            say(f"baseline: bare Bottle+Waitress, {self.plan.load_seconds} s")
            result, cpu_us = self._loader.run(app, self._loader.load(app.url, 1, "base"))
            results.runs.append(Run("baseline", "bare", result, cpu_us_per_request=cpu_us))

    def throughput(self, results: Results) -> None:
        """The runs at w=1, 2 and 3, and the primary's CPU µs and bytes per /metrics scrape."""
        with nodes.cluster(self._logs("throughput")) as cluster:
            results.runs += [self._loader.measure(cluster, "throughput", f"w={w}", w) for w in (1, 2, 3)]
            say(f"metrics-cost: {metrics_cost.SCRAPES} scrapes of the primary's /metrics")
            results.scrape = metrics_cost.scrape(cluster.primary)

    def durable(self, results: Results) -> None:
        with nodes.cluster(self._logs("durable"), durable=True) as cluster:
            results.runs += [self._loader.measure(cluster, "durable", DURABLE_LABEL.format(w=w), w)
                             for w in DURABLE_WS]

    def failover(self, results: Results) -> None:
        with failover.failover_cluster(self._logs("failover-throughput")) as cluster:
            elected = failover.wait_for_primary(cluster)
            if elected != "primary":  # it stands first on a fresh cluster: the load goes to it
                raise RuntimeError(f"a fresh failover cluster elected {elected}, not primary")
            results.runs.append(self._loader.measure(cluster, "failover", FAILOVER_LABEL, FAILOVER_W))

    def curve(self, results: Results) -> None:
        with nodes.cluster(self._logs("curve"), curve=True) as cluster:
            results.runs.append(self._loader.measure(cluster, "curve", "w=3, CurveZMQ", 3))

    def pipelining(self, results: Results) -> None:
        with nodes.cluster(self._logs("pipelining"), PIPELINE_DELAY_S) as cluster:
            results.runs.append(self._loader.measure(cluster, "pipelining",
                                                     f"w=3, {PIPELINE_DELAY_S:g} s delay", 3))

    def w1_delay(self, results: Results) -> None:
        with nodes.cluster(self._logs("w1-delay"), SLOW_DELAY_S) as cluster:
            results.runs.append(self._loader.measure(cluster, "w1-delay", f"w=1, {SLOW_DELAY_S:g} s delay", 1))

    def batches(self, results: Results) -> None:
        with nodes.cluster(self._logs("batches")) as cluster:
            label = f"w={BATCH_W}, {BATCH_MESSAGES} messages per POST"
            results.runs.append(self._loader.measure(cluster, "batches", label, BATCH_W, batch=BATCH_MESSAGES))

    def large_log(self, results: Results) -> None:
        count = self.plan.log_messages
        with nodes.cluster(self._logs("large-log")) as cluster:
            primary = cluster.primary
            say(f"large-log: loading {count:,} messages with w=1")
            load = self._loader.load(primary.url, 1, "log", limit=count, seconds=self.plan.log_load_timeout_s)
            loaded, _took, cpu_us = self._loader.exactly(primary, load, count, self.plan.log_load_timeout_s,
                                                         "large-log")
            consistency = wait_for_convergence(cluster, CONVERGENCE_TIMEOUT_S)
            run = Run("large-log", f"load {count:,} messages, w=1", loaded, consistency,
                      consistency.lengths["primary"], cpu_us)
            result = LargeLog(count, count * MESSAGE_BYTES, run)
            reader = cluster["s1"]
            for node in (primary, reader):
                result.read_ms[node.name], result.read_bytes = self._time_reads(node)
            # After the reads, so that memory they keep is counted too.
            result.memory = {node.name: nodes.memory(node) for node in (primary, reader)}
            results.large_log = result

    def tailing(self, results: Results) -> None:
        with nodes.cluster(self._logs("tailing")) as cluster:
            say(f"tailing: {self.plan.tail_samples:,} appends at w=1, {tailing.TAILED} tailed")
            results.tailing = tailing.run(cluster, self.plan.tail_samples, MESSAGE_BYTES)

    def catch_up(self, results: Results) -> None:
        lengths = ", ".join(f"{n:,}" for n in self.plan.catch_up_lengths)
        with nodes.cluster(self._logs("catch-up")) as cluster:
            say(f"catch-up: {catch_up.RESTARTED} restarted empty on logs of {lengths} messages")
            results.catch_up = catch_up.run(cluster, self.plan.catch_up_lengths, MESSAGE_BYTES,
                                            CONVERGENCE_TIMEOUT_S)

    def ready_time(self, results: Results) -> None:
        results.ready = durability.ready_time(self._logs("ready-time"), messages=self.plan.ready_messages,
                                              message_bytes=MESSAGE_BYTES, say=say)

    def recovery(self, results: Results) -> None:
        results.recovery = durability.recovery(self._logs("recovery"), messages=self.plan.recovery_messages,
                                               message_bytes=MESSAGE_BYTES,
                                               convergence_timeout_s=CONVERGENCE_TIMEOUT_S, say=say)

    def failover_kills(self, results: Results) -> None:
        say(f"failover-kills: kill -9 of the primary, {self.plan.failover_kills} times, under "
            "w=majority load")
        results.failover = failover.run(self._logs("failover"), self.plan.failover_kills, "kill")

    def failover_stops(self, results: Results) -> None:
        say(f"failover-stops: SIGTERM to the primary, {self.plan.failover_stops} times, under "
            "w=majority load")
        results.failover_stops = failover.run(self._logs("failover-stops"), self.plan.failover_stops, "term")

    def failover_catch_up(self, results: Results) -> None:
        results.failover_catch_up = failover_catch_up.run(self._logs("failover-catch-up"),
                                                          self.plan.failover_catch_up)

    def failover_fill(self, results: Results) -> None:
        results.fill = fill.run(self._logs("failover-fill"), self._loader, self.plan.fill_messages,
                                self.plan.fill_batch, self.plan.log_load_timeout_s)
        results.runs += results.fill.runs

    def failover_large_log(self, results: Results) -> None:
        results.large_failover_log = large_failover_log.run(self._logs("failover-large-log"), self._loader,
                                                            self.plan.large_log_messages)
        results.runs += results.large_failover_log.runs

    def retention(self, results: Results) -> None:
        results.retention = retention.run(self._logs("retention"), self._loader, self.plan.retention_appended,
                                          self.plan.log_load_timeout_s)
        results.runs += results.retention.runs

    def linearizable_reads(self, results: Results) -> None:
        results.linearizable = linearizable.run(self._logs("linearizable-reads"), self._loader,
                                                self.plan.read_log_messages, self.plan.rtt_samples,
                                                self.plan.read_fixed_roles)
        results.runs += results.linearizable.runs

    # -- helpers ----------------------------------------------------------------------------

    def _time_reads(self, node) -> tuple[float, int]:
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
