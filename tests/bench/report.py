"""From Results to verdicts and text: the targets, the checks, the table.

Targets compare a figure with a goal and say PASS or MISS; they never fail
a run, since timings depend on the machine. Checks are about correctness:
a run whose secondaries do not converge, that loses or invents messages,
or that got errors, fails whatever its speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.bench import catch_up, failover, metrics_cost, paging, tailing
from tests.bench.durability import SOURCE, Durability
from tests.bench.scenarios import (
    BATCH_MESSAGES, CONNECTIONS, DURABLE_LABEL, DURABLE_WS, FAILOVER_LABEL, FAILOVER_W,
    PIPELINE_DELAY_S, Plan, Results, Run,
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
#: A page at any offset of the large log: a ceiling on the slowest median, in ms.
PAGE_GOAL_MS = 5.0
#: /metrics, recording and scraping, as a share of the primary's CPU per request: a ceiling, in %.
METRICS_GOAL_PERCENT = 3.0
#: From kill -9 of a failover cluster's primary to the first 201 of the next: ceilings, in seconds.
FAILOVER_MEDIAN_GOAL_S = 2.0
FAILOVER_MAX_GOAL_S = 3.0
#: A failover cluster's w=3 throughput against the durable fixed-role one: a floor, in %.
FAILOVER_THROUGHPUT_GOAL_PERCENT = 95


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
        return {
            "name": self.name,
            "measured": round(self.measured, 2),
            "goal": round(self.goal, 2),
            "unit": self.unit,
            "at_most": self.at_most,
            "met": self.met,
        }


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def targets(results: Results) -> list[Target]:
    base = results.run("baseline", "bare").load
    log = results.large_log
    memory_goal_mb = (2 * log.payload_bytes + MEMORY_ALLOWANCE_BYTES) / MB
    found = [
        Target(f"throughput w={w}, % of baseline req/s",
               _percent(results.run("throughput", f"w={w}").load.requests_per_s, base.requests_per_s),
               goal, "%", at_most=False)
        for w, goal in THROUGHPUT_GOAL_PERCENT.items()
    ]
    found.append(Target("w=3 over CurveZMQ, % of plain w=3 req/s",
                        _percent(results.run("curve", "w=3, CurveZMQ").load.requests_per_s,
                                 results.run("throughput", "w=3").load.requests_per_s),
                        CURVE_GOAL_PERCENT, "%", at_most=False))
    pipelined = next(r for r in results.runs if r.scenario == "pipelining").load
    found.append(Target(f"pipelining, % of the ideal {IDEAL_PIPELINED_RPS:g} req/s",
                        _percent(pipelined.requests_per_s, IDEAL_PIPELINED_RPS), 90, "%", at_most=False))
    delayed = next(r for r in results.runs if r.scenario == "w1-delay").load
    found.append(Target("w=1 under 1 s delay, p50 / baseline p50",
                        delayed.latency_ms["p50"] / base.latency_ms["p50"], 2, "x", at_most=True))
    found.append(Target(f"GET /messages ({log.messages:,}) on primary", log.read_ms["primary"], 150,
                        "ms", at_most=True))
    for name, memory in log.memory.items():
        found.append(Target(f"RSS {name} after {log.messages:,} messages", memory.rss_bytes / MB,
                            memory_goal_mb, "MB", at_most=True))
    batches = next(r for r in results.runs if r.scenario == "batches")
    found.append(Target(f"batches ({batches.label}), messages/s", batches.load.messages_per_s,
                        BATCHES_GOAL_MESSAGES_PER_S, "msg/s", at_most=False))
    return (found + _tailing_targets(results.tailing) + [_paging_target(results.durability.ready.pages)]
            + _metrics_targets(results) + _durability_targets(results) + _failover_targets(results))


def _tailing_targets(tail: tailing.Tailing) -> list[Target]:
    if not tail.latency_ms:  # none after a problem, which a check reports
        return []
    return [Target(f"tailing {tailing.TAILED}, from an append's answer to the reader, {name}",
                   tail.latency_ms[name], goal, "ms", at_most=True)
            for name, goal in (("p50", TAIL_GOAL_P50_MS), ("p99", TAIL_GOAL_P99_MS))]


def _paging_target(pages: paging.PagedReads) -> Target:
    return Target(f"a page of {paging.PAGE:,} at any offset of {pages.messages:,} messages, slowest median",
                  pages.slowest_ms, PAGE_GOAL_MS, "ms", at_most=True)


def _metrics_targets(results: Results) -> list[Target]:
    cost = results.metrics_cost
    return [Target(f"/metrics at {run.label}, % of the primary's CPU per request",
                   cost.percent(run.load.requests_per_s, run.cpu_us_per_request),
                   METRICS_GOAL_PERCENT, "%", at_most=True)
            for run in results.runs if run.scenario == "throughput"]


def _durability_targets(results: Results) -> list[Target]:
    found = []
    for w in DURABLE_WS:
        durable = results.run("durable", DURABLE_LABEL.format(w=w)).load.requests_per_s
        in_memory = results.run("throughput", f"w={w}").load.requests_per_s
        found.append(Target(f"durable w={w}, % of in-memory w={w} req/s", _percent(durable, in_memory),
                            DURABLE_GOAL_PERCENT, "%", at_most=False))
    ready, recovery = results.durability.ready, results.durability.recovery
    found.append(Target(f"primary ready with {ready.messages:,} messages in DATA_DIR", ready.ready_s,
                        READY_GOAL_S, "s", at_most=True))
    found.append(Target(f"in-memory primary recovers {recovery.messages:,} messages", recovery.recovered_s,
                        RECOVERY_GOAL_S, "s", at_most=True))
    return found


def _failover_targets(results: Results) -> list[Target]:
    kills = results.failover
    fixed = results.run("durable", DURABLE_LABEL.format(w=FAILOVER_W)).load.requests_per_s
    found = [Target(f"failover w={FAILOVER_W}, % of fixed-role durable w={FAILOVER_W} req/s",
                    _percent(results.run("failover", FAILOVER_LABEL).load.requests_per_s, fixed),
                    FAILOVER_THROUGHPUT_GOAL_PERCENT, "%", at_most=False)]
    if kills.kills:
        found += [
            Target(f"kill -9 of the primary to the next one's first 201, median of {len(kills.kills)}",
                   kills.median_s, FAILOVER_MEDIAN_GOAL_S, "s", at_most=True),
            Target(f"kill -9 of the primary to the next one's first 201, max of {len(kills.kills)}",
                   kills.max_s, FAILOVER_MAX_GOAL_S, "s", at_most=True),
        ]
    return found


def checks(results: Results) -> list[Check]:
    found = []
    for run in [*results.runs, results.large_log.load]:
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
    tail = results.tailing
    found.append(Check(f"tailing: every append answered 201, {tailing.TAILED}'s reader saw each of "
                       f"the {tail.samples:,} once, in order", not tail.problem, tail.problem))
    for point in results.catch_up:
        found.append(Check(f"catch-up ({point.messages:,} messages): {catch_up.RESTARTED} restarted "
                           "empty holds the primary's list, every node equal, no duplicates",
                           point.ok, _catch_up_problem(point)))
    kills = results.failover
    found.append(Check(f"failover ({len(kills.kills)} kills): every acknowledged append on every node, "
                       "once, at its id", not kills.problems, "; ".join(kills.problems[:5])))
    return found + _durability_checks(results.durability)


def _catch_up_problem(point: catch_up.CatchUp) -> str:
    if not point.caught_up:
        return f"not caught up {catch_up.CATCH_UP_DEADLINE_S:g} s after its launch"
    return point.consistency.problem


def _durability_checks(durability: Durability) -> list[Check]:
    ready, recovery = durability.ready, durability.recovery
    found = [
        Check(f"ready-time ({ready.messages:,} messages): the primary serves exactly the stored log, "
              "then appends at the next id", not ready.problem, ready.problem),
        Check(f"recovery ({recovery.messages:,} messages): the primary holds exactly {SOURCE}'s log",
              recovery.recovered and not recovery.problem, recovery.problem),
        Check(f"paged reads ({ready.pages.messages:,} messages): every page holds exactly the stored "
              "messages", not ready.pages.problem, ready.pages.problem),
    ]
    consistency = recovery.consistency
    found.append(Check("recovery: secondaries equal the primary, no duplicates",
                       consistency is not None and consistency.ok,
                       consistency.problem if consistency else "the recovery never ended"))
    return found


def table(plan: Plan, machine: dict, results: Results, found_targets: list[Target],
          found_checks: list[Check]) -> str:
    base_rps = results.run("baseline", "bare").load.requests_per_s
    lines = [
        f"Replicated log benchmark, {plan.mode} mode: {machine['cores']} cores, {machine['cpu']}, "
        f"Python {machine['python']}, commit {machine['commit']}, "
        f"load average {machine['load_average_1m']} before the run",
        f"wrk: {CONNECTIONS} connections, {plan.load_seconds} s per run, 100-byte messages; "
        "CPU: the loaded process's (primary or baseline) per request",
        "",
        _row("scenario", "run", "req/s", "vs base", "p50 ms", "p99 ms", "CPU µs/req", "errors",
             "converged"),
    ]
    for run in [*results.runs, results.large_log.load]:
        lines.append(_run_row(run, base_rps))
    log = results.large_log
    lines += [
        "",
        f"GET /messages, {log.messages:,} messages ({log.read_bytes / MB:.1f} MB), median of "
        f"{plan.read_repeats}: " + ", ".join(f"{n} {ms:.1f} ms" for n, ms in log.read_ms.items()),
        f"RSS after {log.messages:,} messages (payload {log.payload_bytes / MB:.1f} MB): "
        + ", ".join(f"{n} {m.rss_bytes / MB:.1f} MB (peak {m.peak_rss_bytes / MB:.1f})"
                    for n, m in log.memory.items()),
        _batches_line(results),
        _tailing_line(results.tailing),
        _catch_up_line(results.catch_up),
        _metrics_line(results),
        *_durability_lines(results.durability),
        _failover_line(results.failover),
        "",
        "targets" + (" (smoke mode: indicative only, never asserted)" if plan.mode == "smoke" else ""),
    ]
    for target in found_targets:
        sign = "<=" if target.at_most else ">="
        lines.append(f"  {'PASS' if target.met else 'MISS'}  {target.name}: "
                     f"{target.measured:,.1f} {target.unit} (goal {sign} {target.goal:,.1f} {target.unit})")
    failed = [check for check in found_checks if not check.ok]
    lines += ["", f"checks: {len(found_checks) - len(failed)} of {len(found_checks)} passed"]
    lines += [f"  FAIL  {check.name}: {check.detail}" for check in failed]
    return "\n".join(lines)


def _run_row(run: Run, base_rps: float) -> str:
    load = run.load
    if run.consistency is None:
        consistent = "-"
    elif run.consistency.ok:
        consistent = f"yes, {run.consistency.seconds:.1f} s"
    else:
        consistent = "NO"
    # Only runs under the baseline's load compare with it; pipelining is bound
    # by the delay and the large-log load is a means, not a figure.
    compared = run.scenario in ("throughput", "durable", "w1-delay")
    ratio = f"{_percent(load.requests_per_s, base_rps):.0f}%" if compared else ""
    cpu = "" if run.cpu_us_per_request is None else f"{run.cpu_us_per_request:.0f}"
    return _row(run.scenario, run.label, f"{load.requests_per_s:.0f}", ratio,
                f"{load.latency_ms['p50']:.1f}", f"{load.latency_ms['p99']:.1f}", cpu,
                str(load.error_count), consistent)


def _batches_line(results: Results) -> str:
    batches = next(r for r in results.runs if r.scenario == "batches").load
    return (f"batches: {batches.messages_per_s:,.0f} messages/s acknowledged "
            f"({batches.requests_per_s:,.0f} POSTs/s of {BATCH_MESSAGES})")


def _tailing_line(tail: tailing.Tailing) -> str:
    if not tail.latency_ms:
        return f"tailing: {tail.problem}"
    latency = tail.latency_ms
    return (f"tailing: {tail.samples:,} appends at w=1, {tailing.PACE_S * 1000:g} ms apart, reached "
            f"{tailing.TAILED}'s long-poll reader p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms "
            f"(min {latency['min']:.2f}, max {latency['max']:.2f}) after the append's answer")


def _catch_up_line(points: list[catch_up.CatchUp]) -> str:
    return (f"catch-up: {catch_up.RESTARTED} restarted empty held the primary's "
            + ", ".join(_catch_up_text(point) for point in points))


def _failover_line(kills: failover.Failover) -> str:
    if not kills.kills:
        return "failover: no kill was measured"
    return (f"failover: {len(kills.kills)} kills of the primary under w=majority load; from the kill to "
            f"the next primary's first 201: median {kills.median_s:.2f} s, max {kills.max_s:.2f} s ("
            + ", ".join(f"{k.recovery_s:.2f}" for k in kills.kills)
            + f"); {kills.acknowledged:,} appends acknowledged")


def _metrics_line(results: Results) -> str:
    cost = results.metrics_cost
    shares = ", ".join(f"{run.label} {cost.percent(run.load.requests_per_s, run.cpu_us_per_request):.2f}%"
                       for run in results.runs if run.scenario == "throughput")
    return (f"/metrics: record_append {cost.record_us:.2f} µs; a scrape {cost.scrape_us:,.0f} µs of the "
            f"primary's CPU ({cost.scrape_bytes / 1000:.1f} kB); at {metrics_cost.SCRAPES_PER_S:g} "
            f"scrape/s, of its CPU per request: {shares}")


def _catch_up_text(point: catch_up.CatchUp) -> str:
    if not point.caught_up:
        return f"{point.messages:,} messages: NOT within {catch_up.CATCH_UP_DEADLINE_S:g} s"
    return (f"{point.messages:,} messages after {point.caught_up_s:.2f} s "
            f"(the first after {point.first_message_s:.2f} s)")


def _durability_lines(durability: Durability) -> list[str]:
    ready, recovery = durability.ready, durability.recovery
    pages = ready.pages
    lines = [
        f"ready-time: a primary with {ready.messages:,} messages in DATA_DIR answered /health after "
        f"{ready.ready_s:.2f} s (store written in {ready.build_s:.1f} s); "
        f"RSS {ready.memory.rss_bytes / MB:.1f} MB (peak {ready.memory.peak_rss_bytes / MB:.1f})",
        f"paged reads on it: a page of {paging.PAGE:,}, median of {paging.READS}, from "
        + ", ".join(f"{start:,} {ms:.2f} ms" for start, ms in pages.median_ms.items())
        + f"; last / first {pages.last_over_first:.2f}x",
    ]
    if recovery.recovered:
        caught_up = recovery.consistency
        after = (f"every node equal {caught_up.seconds:.1f} s later" if caught_up.ok
                 else "the nodes did NOT converge")
        lines.append(f"recovery: an in-memory primary recovered {recovery.messages:,} messages "
                     f"from {SOURCE} in {recovery.recovered_s:.2f} s after its launch "
                     f"(/health 200 after {recovery.ready_s:.2f} s); {after}")
    else:
        lines.append(f"recovery: {recovery.problem}")
    return lines


def _row(*cells: str) -> str:
    widths = (11, 28, 7, 8, 8, 8, 10, 7, 0)
    return "  ".join(
        cell.ljust(width) if i < 2 or i == len(widths) - 1 else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths))
    ).rstrip()


def _percent(part: float, whole: float) -> float:
    return 100 * part / whole if whole else 0.0
