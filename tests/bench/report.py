"""From Results to verdicts: the targets and the checks (tests.bench.table prints them).

Targets compare a figure with a goal and say PASS or MISS; they never fail
a run, since timings depend on the machine. Checks are about correctness:
a run whose secondaries do not converge, that loses or invents messages,
or that got errors, fails whatever its speed. A scenario that did not run
(``--only``, or skipped under ``--code``) has neither; a target that
compares two scenarios needs both.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.bench import catch_up, paging, tailing
from tests.bench.durability import SOURCE
from tests.bench.loads import CONNECTIONS
from tests.bench.scenarios import (
    DURABLE_LABEL, DURABLE_WS, FAILOVER_LABEL, FAILOVER_W, PIPELINE_DELAY_S, Results,
)

MB = 1_000_000
#: Throughput at a w, as a share of the baseline's req/s: floors, in %.
THROUGHPUT_GOAL_PERCENT = {1: 85, 3: 70}
#: The memory ceiling per process: twice the raw payload plus this.
MEMORY_ALLOWANCE_BYTES = 60 * MB
IDEAL_PIPELINED_RPS = CONNECTIONS / PIPELINE_DELAY_S
#: DATA_DIR with FSYNC=always against memory, at the same w: a floor, in %.
DURABLE_GOAL_PERCENT = 85
#: From a primary's launch to /health 200 on its large DATA_DIR, and to the
#: end of an in-memory primary's recovery: ceilings, in seconds.
READY_GOAL_S = 3.0
RECOVERY_GOAL_S = 3.0
#: Authentication and encryption may cost at most a tenth of w=3 throughput.
CURVE_GOAL_PERCENT = 90
#: Messages appended, replicated to every node and acknowledged per second, in batches.
BATCHES_GOAL_MESSAGES_PER_S = 100_000
#: From an append's answer to a reader tailing a secondary: ceilings, in ms.
TAIL_GOAL_P50_MS = 5.0
TAIL_GOAL_P99_MS = 50.0
#: A page at any offset of a large log: a ceiling on the slowest median, in ms.
PAGE_GOAL_MS = 5.0
#: /metrics, recording and scraping, as a share of the primary's CPU per request: a ceiling, in %.
METRICS_GOAL_PERCENT = 3.0
#: From kill -9 of a failover cluster's primary to the first 201 of the next: ceilings, in seconds.
FAILOVER_MEDIAN_GOAL_S = 2.0
FAILOVER_MAX_GOAL_S = 3.0
#: From SIGTERM (the primary hands its role over) to the next one's first 201: a ceiling on the median.
STOPS_MEDIAN_GOAL_S = 0.3
#: A failover cluster's w=3 throughput against the durable fixed-role one: a floor, in %.
FAILOVER_THROUGHPUT_GOAL_PERCENT = 95
#: A follower restarted empty: the primary's peak RSS during its catch-up, above its RSS at rest.
CATCH_UP_GROWTH_GOAL_MB = 100
#: Issue 29, failover-large-log: w=3 on the large log against the empty one (a floor, in %), RSS per
#: node (MB), each node's ready time and a whole restart's first w=3 201 (s): ceilings.
LARGE_LOG_RATIO_GOAL_PERCENT = 90
LARGE_LOG_RSS_GOAL_MB = 150
LARGE_LOG_READY_GOAL_S = 3.0
LARGE_LOG_RESTART_GOAL_S = 5.0
#: retention: the settled store against one of RETENTION_MESSAGES, a ceiling.
RETENTION_GOAL_RATIO = 2.0
#: Issue 30: a linearizable read's req/s on the primary against a local read's (a floor, in %), and its
#: p50 above the local read's at most one replication round trip plus this (ms).
LINEARIZABLE_GOAL_PERCENT = 80
LINEARIZABLE_MARGIN_MS = 2.0


@dataclass(frozen=True)
class Target:
    name: str
    measured: float
    goal: float
    unit: str
    #: True: the goal is a ceiling; False: a floor.
    at_most: bool

    @property
    def met(self) -> bool:
        return self.measured <= self.goal if self.at_most else self.measured >= self.goal

    def to_json(self) -> dict:
        return {"name": self.name, "measured": round(self.measured, 2), "goal": round(self.goal, 2),
                "unit": self.unit, "at_most": self.at_most, "met": self.met}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def targets(results: Results) -> list[Target]:
    return (_throughput_targets(results) + _large_log_targets(results) + _tailing_targets(results)
            + _paging_targets(results) + _metrics_targets(results) + _durability_targets(results)
            + _failover_targets(results) + _catch_up_targets(results) + _large_failover_targets(results)
            + _retention_targets(results) + _linearizable_targets(results))


def _rps(results: Results, scenario: str, label: str) -> float | None:
    run = results.run(scenario, label)
    return None if run is None else run.load.requests_per_s


def _throughput_targets(results: Results) -> list[Target]:
    found = []
    base = results.run("baseline", "bare")
    for w, goal in THROUGHPUT_GOAL_PERCENT.items():
        rps = _rps(results, "throughput", f"w={w}")
        if base and rps is not None:
            found.append(Target(f"throughput w={w}, % of baseline req/s",
                                percent(rps, base.load.requests_per_s), goal, "%", at_most=False))
    curve, plain = _rps(results, "curve", "w=3, CurveZMQ"), _rps(results, "throughput", "w=3")
    if curve is not None and plain is not None:
        found.append(Target("w=3 over CurveZMQ, % of plain w=3 req/s", percent(curve, plain),
                            CURVE_GOAL_PERCENT, "%", at_most=False))
    for pipelined in results.runs_of("pipelining"):
        found.append(Target(f"pipelining, % of the ideal {IDEAL_PIPELINED_RPS:g} req/s",
                            percent(pipelined.load.requests_per_s, IDEAL_PIPELINED_RPS), 90, "%",
                            at_most=False))
    for delayed in results.runs_of("w1-delay"):
        if base:
            found.append(Target("w=1 under 1 s delay, p50 / baseline p50",
                                delayed.load.latency_ms["p50"] / base.load.latency_ms["p50"], 2, "x",
                                at_most=True))
    for batches in results.runs_of("batches"):
        found.append(Target(f"batches ({batches.label}), messages/s", batches.load.messages_per_s,
                            BATCHES_GOAL_MESSAGES_PER_S, "msg/s", at_most=False))
    return found


def _large_log_targets(results: Results) -> list[Target]:
    log = results.large_log
    if log is None:
        return []
    memory_goal_mb = (2 * log.payload_bytes + MEMORY_ALLOWANCE_BYTES) / MB
    return [Target(f"GET /messages ({log.messages:,}) on primary", log.read_ms["primary"], 150, "ms",
                   at_most=True)] + [
        Target(f"RSS {name} after {log.messages:,} messages", memory.rss_bytes / MB, memory_goal_mb, "MB",
               at_most=True)
        for name, memory in log.memory.items()]


def _tailing_targets(results: Results) -> list[Target]:
    tail = results.tailing
    if tail is None or not tail.latency_ms:  # none after a problem, which a check reports
        return []
    return [Target(f"tailing {tailing.TAILED}, from an append's answer to the reader, {name}",
                   tail.latency_ms[name], goal, "ms", at_most=True)
            for name, goal in (("p50", TAIL_GOAL_P50_MS), ("p99", TAIL_GOAL_P99_MS))]


def _paging_targets(results: Results) -> list[Target]:
    found = []
    for what, pages in (("", results.ready and results.ready.pages),
                        ("failover, ", results.large_failover_log and results.large_failover_log.pages)):
        if pages:
            found.append(Target(f"{what}a page of {paging.PAGE:,} at any offset of {pages.messages:,} "
                                "messages, slowest median", pages.slowest_ms, PAGE_GOAL_MS, "ms", at_most=True))
    return found


def _metrics_targets(results: Results) -> list[Target]:
    cost = results.metrics_cost
    if cost is None:
        return []
    return [Target(f"/metrics at {run.label}, % of the primary's CPU per request",
                   cost.percent(run.load.requests_per_s, run.cpu_us_per_request),
                   METRICS_GOAL_PERCENT, "%", at_most=True)
            for run in results.runs_of("throughput") if run.cpu_us_per_request]


def _durability_targets(results: Results) -> list[Target]:
    found = []
    for w in DURABLE_WS:
        durable = _rps(results, "durable", DURABLE_LABEL.format(w=w))
        in_memory = _rps(results, "throughput", f"w={w}")
        if durable is not None and in_memory is not None:
            found.append(Target(f"durable w={w}, % of in-memory w={w} req/s", percent(durable, in_memory),
                                DURABLE_GOAL_PERCENT, "%", at_most=False))
    if results.ready:
        found.append(Target(f"primary ready with {results.ready.messages:,} messages in DATA_DIR",
                            results.ready.ready_s, READY_GOAL_S, "s", at_most=True))
    if results.recovery:
        found.append(Target(f"in-memory primary recovers {results.recovery.messages:,} messages",
                            results.recovery.recovered_s, RECOVERY_GOAL_S, "s", at_most=True))
    return found


def _failover_targets(results: Results) -> list[Target]:
    found = []
    fixed = _rps(results, "durable", DURABLE_LABEL.format(w=FAILOVER_W))
    elected = _rps(results, "failover", FAILOVER_LABEL)
    if fixed is not None and elected is not None:
        found.append(Target(f"failover w={FAILOVER_W}, % of fixed-role durable w={FAILOVER_W} req/s",
                            percent(elected, fixed), FAILOVER_THROUGHPUT_GOAL_PERCENT, "%", at_most=False))
    kills, stops = results.failover, results.failover_stops
    if kills and kills.kills:
        found += [
            Target(f"kill -9 of the primary to the next one's first 201, median of {len(kills.kills)}",
                   kills.median_s, FAILOVER_MEDIAN_GOAL_S, "s", at_most=True),
            Target(f"kill -9 of the primary to the next one's first 201, max of {len(kills.kills)}",
                   kills.max_s, FAILOVER_MAX_GOAL_S, "s", at_most=True),
        ]
    if stops and stops.kills:
        found.append(Target(f"SIGTERM of the primary to the next one's first 201, median of {len(stops.kills)}",
                            stops.median_s, STOPS_MEDIAN_GOAL_S, "s", at_most=True))
    return found


def _catch_up_targets(results: Results) -> list[Target]:
    return [Target(f"failover follower restarted empty, {point.messages:,} x {point.message_bytes:,} B: "
                   "the primary's peak RSS above its rest", point.growth_bytes / MB, CATCH_UP_GROWTH_GOAL_MB,
                   "MB", at_most=True)
            for point in results.failover_catch_up or () if point.caught_up]


def _large_failover_targets(results: Results) -> list[Target]:
    big = results.large_failover_log
    if big is None:
        return []
    size = f"{big.messages:,} messages"
    found = []
    if big.ratio(0) is not None:
        found.append(Target(f"failover w=3 with {size}, % of the empty log's req/s", 100 * big.ratio(0),
                            LARGE_LOG_RATIO_GOAL_PERCENT, "%", at_most=False))
    found += [Target(f"RSS {name} with {size}", memory.rss_bytes / MB, LARGE_LOG_RSS_GOAL_MB, "MB",
                     at_most=True) for name, memory in big.memory.items()]
    found += [Target(f"{name} with {size}: launch to /health 200", seconds, LARGE_LOG_READY_GOAL_S, "s",
                     at_most=True) for name, seconds in big.ready_s.items()]
    if big.restart_s is not None:
        found.append(Target(f"whole failover cluster with {size} restarted: to the first w=3 201",
                            big.restart_s, LARGE_LOG_RESTART_GOAL_S, "s", at_most=True))
    if len(big.large) > 1:
        found.append(Target(f"failover batches (w=3, 100 per POST) with {size}, messages/s",
                            big.large[1].load.messages_per_s, BATCHES_GOAL_MESSAGES_PER_S, "msg/s",
                            at_most=False))
    return found


def _retention_targets(results: Results) -> list[Target]:
    kept = results.retention
    if kept is None:
        return []
    return [Target(f"retention: {name}'s store after {kept.appended:,} appended, over one of "
                   f"{kept.bound:,} messages", kept.ratio(name), RETENTION_GOAL_RATIO, "x", at_most=True)
            for name in kept.settled if kept.at_bound.get(name)]


def _linearizable_targets(results: Results) -> list[Target]:
    found = []
    for cluster in results.linearizable.clusters if results.linearizable else ():
        local, linear = cluster.runs.get(("primary", "local")), cluster.runs.get(("primary", "linearizable"))
        if not (local and linear):
            continue
        found.append(Target(f"linearizable reads on the {cluster.kind} primary, % of local req/s",
                            percent(linear.load.requests_per_s, local.load.requests_per_s),
                            LINEARIZABLE_GOAL_PERCENT, "%", at_most=False))
        found.append(Target(f"linearizable p50 on the {cluster.kind} primary above local p50 (goal: one "
                            f"round trip, {cluster.round_trip_ms:.2f} ms, + {LINEARIZABLE_MARGIN_MS:g})",
                            linear.load.latency_ms["p50"] - local.load.latency_ms["p50"],
                            cluster.round_trip_ms + LINEARIZABLE_MARGIN_MS, "ms", at_most=True))
    return found


def checks(results: Results) -> list[Check]:
    found = []
    runs = [*results.runs] + ([results.large_log.load] if results.large_log else [])
    for run in runs:
        name = f"{run.scenario} ({run.label})"
        load = run.load
        found.append(Check(f"{name}: no errors", load.error_count == 0,
                           ", ".join(f"{kind} {n}" for kind, n in load.errors.items() if n)))
        if run.consistency is None:
            continue
        found.append(Check(f"{name}: secondaries equal the primary, no duplicates",
                           run.consistency.ok, run.consistency.problem))
        # Every acknowledged message is in the log; nothing is there that was not sent.
        counted = load.acknowledged_messages <= run.log_growth <= load.sent_messages
        found.append(Check(f"{name}: acknowledged <= appended <= sent", counted,
                           f"{load.acknowledged_messages} <= {run.log_growth} <= {load.sent_messages}"))
    if results.tailing:
        tail = results.tailing
        found.append(Check(f"tailing: every append answered 201, {tailing.TAILED}'s reader saw each of "
                           f"the {tail.samples:,} once, in order", not tail.problem, tail.problem))
    for point in results.catch_up or ():
        found.append(Check(f"catch-up ({point.messages:,} messages): {catch_up.RESTARTED} restarted "
                           "empty holds the primary's list, every node equal, no duplicates",
                           point.ok, _catch_up_problem(point)))
    for stopped in (results.failover, results.failover_stops):
        if stopped:
            found.append(Check(f"failover ({len(stopped.kills)} x {stopped.signal}): every acknowledged "
                               "append on every node, once, at its id", not stopped.problems,
                               "; ".join(stopped.problems[:5])))
    for point in results.failover_catch_up or ():
        found.append(Check(f"failover-catch-up ({point.messages:,} x {point.message_bytes:,} B): the "
                           "follower restarted empty holds the log, every node equal, no duplicates",
                           point.ok, "" if point.ok else (point.consistency.problem if point.consistency
                                                          else "not caught up")))
    big = results.large_failover_log
    if big:
        found.append(Check(f"failover-large-log ({big.messages:,} messages): the primary serves exactly "
                           "the stored log", not big.problem, big.problem))
        if big.pages:
            found.append(Check("failover-large-log: every page holds exactly the stored messages",
                               not big.pages.problem, big.pages.problem))
    if results.retention:
        found.append(Check(f"retention: every node keeps {results.retention.bound:,} to a tenth more, and "
                           "answers 410 with first_id below its start", not results.retention.problems,
                           "; ".join(results.retention.problems)))
    return found + _durability_checks(results)


def _catch_up_problem(point: catch_up.CatchUp) -> str:
    if not point.caught_up:
        return f"not caught up {catch_up.CATCH_UP_DEADLINE_S:g} s after its launch"
    return point.consistency.problem


def _durability_checks(results: Results) -> list[Check]:
    found = []
    ready, recovery = results.ready, results.recovery
    if ready:
        found += [
            Check(f"ready-time ({ready.messages:,} messages): the primary serves exactly the stored log, "
                  "then appends at the next id", not ready.problem, ready.problem),
            Check(f"paged reads ({ready.pages.messages:,} messages): every page holds exactly the stored "
                  "messages", not ready.pages.problem, ready.pages.problem),
        ]
    if recovery:
        found.append(Check(f"recovery ({recovery.messages:,} messages): the primary holds exactly "
                           f"{SOURCE}'s log", recovery.recovered and not recovery.problem, recovery.problem))
        consistency = recovery.consistency
        found.append(Check("recovery: secondaries equal the primary, no duplicates",
                           consistency is not None and consistency.ok,
                           consistency.problem if consistency else "the recovery never ended"))
    return found


def percent(part: float, whole: float) -> float:
    return 100 * part / whole if whole else 0.0

