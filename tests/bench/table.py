"""The text the benchmark prints: every wrk run as a row, a line per other figure, the targets, the checks.

Only what ran is printed: a scenario left out by ``--only`` has no line,
one skipped under ``--code`` is named with why. The verdicts come from
tests.bench.report.

Thread: the benchmark's main thread, after the run.
"""

from __future__ import annotations

from tests.bench import catch_up, failover, metrics_cost, paging, tailing
from tests.bench.durability import SOURCE
from tests.bench.loads import CONNECTIONS, Run
from tests.bench.report import Check, Target, percent
from tests.bench.scenarios import BATCH_MESSAGES, Plan, Results

MB = 1_000_000


def table(plan: Plan, machine: dict, results: Results, found_targets: list[Target],
          found_checks: list[Check]) -> str:
    base = results.run("baseline", "bare")
    base_rps = base.load.requests_per_s if base else 0.0
    lines = [
        f"Replicated log benchmark, {plan.mode} mode: {machine['cores']} cores, {machine['cpu']}, "
        f"Python {machine['python']}, commit {machine['commit']}, "
        f"load average {machine['load_average_1m']} before the run",
        f"nodes run from: {machine['nodes_from']}"
        + (f" (commit {machine['nodes_commit']})" if machine.get("nodes_commit") else ""),
        f"wrk: {CONNECTIONS} connections, {plan.load_seconds} s per run, 100-byte messages; "
        "CPU: the loaded process's (primary, node read, or baseline) per request",
        "load average (1 min) before each scenario, and its duration: "
        + ", ".join(f"{name} {load['1m']} ({results.durations.get(name, 0):.0f} s)"
                    for name, load in results.load_averages.items()),
        *[f"SKIPPED {name}: {why}" for name, why in results.skipped.items()],
        "",
        _row("scenario", "run", "req/s", "vs base", "p50 ms", "p99 ms", "CPU µs/req", "errors", "converged"),
    ]
    for run in [*results.runs, *([results.large_log.load] if results.large_log else [])]:
        lines.append(_run_row(run, base_rps))
    lines.append("")
    lines += _large_log_lines(plan, results)
    lines += [text for text in (_batches_line(results), _tailing_line(results.tailing),
                                _catch_up_line(results.catch_up), _metrics_line(results)) if text]
    lines += _durability_lines(results)
    lines += [_failover_line(stopped) for stopped in (results.failover, results.failover_stops) if stopped]
    lines += _failover_catch_up_lines(results) + _fill_lines(results) + _large_failover_lines(results)
    lines += _retention_lines(results) + _linearizable_lines(results)
    lines += ["", "targets" + (" (smoke mode: indicative only, never asserted)" if plan.mode == "smoke" else "")]
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
    compared = run.scenario in ("throughput", "durable", "w1-delay") and base_rps
    ratio = f"{percent(load.requests_per_s, base_rps):.0f}%" if compared else ""
    cpu = "" if run.cpu_us_per_request is None else f"{run.cpu_us_per_request:.0f}"
    return _row(run.scenario, run.label, f"{load.requests_per_s:.0f}", ratio,
                f"{load.latency_ms['p50']:.1f}", f"{load.latency_ms['p99']:.1f}", cpu,
                str(load.error_count), consistent)


def _large_log_lines(plan: Plan, results: Results) -> list[str]:
    log = results.large_log
    if log is None:
        return []
    return [
        f"GET /messages, {log.messages:,} messages ({log.read_bytes / MB:.1f} MB), median of "
        f"{plan.read_repeats}: " + ", ".join(f"{n} {ms:.1f} ms" for n, ms in log.read_ms.items()),
        f"RSS after {log.messages:,} messages (payload {log.payload_bytes / MB:.1f} MB): "
        + ", ".join(f"{n} {m.rss_bytes / MB:.1f} MB (peak {m.peak_rss_bytes / MB:.1f})"
                    for n, m in log.memory.items()),
    ]


def _batches_line(results: Results) -> str:
    return "; ".join(f"batches: {run.load.messages_per_s:,.0f} messages/s acknowledged "
                     f"({run.load.requests_per_s:,.0f} POSTs/s of {BATCH_MESSAGES})"
                     for run in results.runs_of("batches"))


def _tailing_line(tail: tailing.Tailing | None) -> str:
    if tail is None:
        return ""
    if not tail.latency_ms:
        return f"tailing: {tail.problem}"
    latency = tail.latency_ms
    return (f"tailing: {tail.samples:,} appends at w=1, {tailing.PACE_S * 1000:g} ms apart, reached "
            f"{tailing.TAILED}'s long-poll reader p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms "
            f"(min {latency['min']:.2f}, max {latency['max']:.2f}) after the append's answer")


def _catch_up_line(points: list[catch_up.CatchUp] | None) -> str:
    if points is None:
        return ""
    return (f"catch-up: {catch_up.RESTARTED} restarted empty held the primary's "
            + ", ".join(_catch_up_text(point) for point in points))


def _catch_up_text(point: catch_up.CatchUp) -> str:
    if not point.caught_up:
        return f"{point.messages:,} messages: NOT within {catch_up.CATCH_UP_DEADLINE_S:g} s"
    return (f"{point.messages:,} messages after {point.caught_up_s:.2f} s "
            f"(the first after {point.first_message_s:.2f} s; {point.messages / point.caught_up_s:,.0f}/s)")


def _failover_line(kills: failover.Failover) -> str:
    if not kills.kills:
        return f"failover ({kills.signal}): no stop was measured"
    return (f"failover: {len(kills.kills)} x {kills.signal} to the primary under w=majority load; from the "
            f"signal to the next primary's first 201: median {kills.median_s:.2f} s, max {kills.max_s:.2f} s ("
            + ", ".join(f"{k.recovery_s:.2f}" for k in kills.kills)
            + f"); {kills.acknowledged:,} appends acknowledged")


def _metrics_line(results: Results) -> str:
    cost = results.metrics_cost
    if cost is None:
        return ""
    shares = ", ".join(f"{run.label} {cost.percent(run.load.requests_per_s, run.cpu_us_per_request):.2f}%"
                       for run in results.runs_of("throughput") if run.cpu_us_per_request)
    return (f"/metrics: record_append {cost.record_us:.2f} µs; a scrape {cost.scrape_us:,.0f} µs of the "
            f"primary's CPU ({cost.scrape_bytes / 1000:.1f} kB); at {metrics_cost.SCRAPES_PER_S:g} "
            f"scrape/s, of its CPU per request: {shares}")


def _durability_lines(results: Results) -> list[str]:
    lines = []
    ready, recovery = results.ready, results.recovery
    if ready:
        pages = ready.pages
        lines += [
            f"ready-time: a primary with {ready.messages:,} messages in DATA_DIR answered /health after "
            f"{ready.ready_s:.2f} s (store written in {ready.build_s:.1f} s); "
            f"RSS {ready.memory.rss_bytes / MB:.1f} MB (peak {ready.memory.peak_rss_bytes / MB:.1f})",
            _pages_line(pages),
        ]
    if recovery and recovery.recovered:
        caught_up = recovery.consistency
        after = (f"every node equal {caught_up.seconds:.1f} s later" if caught_up.ok
                 else "the nodes did NOT converge")
        lines.append(f"recovery: an in-memory primary recovered {recovery.messages:,} messages "
                     f"from {SOURCE} in {recovery.recovered_s:.2f} s after its launch "
                     f"(/health 200 after {recovery.ready_s:.2f} s); {after}")
    elif recovery:
        lines.append(f"recovery: {recovery.problem}")
    return lines


def _pages_line(pages: paging.PagedReads) -> str:
    return (f"paged reads on it: a page of {paging.PAGE:,}, median of {paging.READS}, from "
            + ", ".join(f"{start:,} {ms:.2f} ms" for start, ms in pages.median_ms.items())
            + f"; last / first {pages.last_over_first:.2f}x")


def _failover_catch_up_lines(results: Results) -> list[str]:
    lines = []
    for point in results.failover_catch_up or ():
        what = (f"failover-catch-up: {point.messages:,} messages of {point.message_bytes:,} B "
                f"(appends of {point.per_append:,})")
        if not point.caught_up:
            lines.append(f"{what}: NOT caught up within {point.caught_up_s:.0f} s")
            continue
        transfer = point.transfer_messages_per_s
        lines.append(f"{what}: held by the follower restarted empty {point.caught_up_s:.2f} s after its "
                     f"launch (first message after {point.first_message_s:.2f} s): "
                     f"{point.messages_per_s:,.0f} messages/s"
                     + (f", {transfer:,.0f}/s from the first" if transfer else "")
                     + f"; the primary's RSS {point.rest_rss_bytes / MB:.1f} MB at rest, "
                     f"{point.peak_rss_bytes / MB:.1f} MB at its peak (+{point.growth_bytes / MB:.1f})")
    return lines


def _fill_lines(results: Results) -> list[str]:
    fills = results.fill
    if fills is None:
        return []
    return [f"failover-fill, {fill.kind}: {fills.messages:,} messages in POSTs of {fills.batch:,} at w=1 held "
            f"by the primary after {fill.fill_s:.1f} s ({fills.messages / fill.fill_s:,.0f}/s), by every node "
            f"after {fill.converged_s:.1f} s; RSS "
            + ", ".join(f"{n} {m.rss_bytes / MB:.1f} MB" for n, m in fill.memory.items())
            + f"; whole cluster killed and restarted: first w=3 201 after {fill.restart_s:.2f} s"
            for fill in fills.fills]


def _large_failover_lines(results: Results) -> list[str]:
    big = results.large_failover_log
    if big is None:
        return []
    lines = [
        f"failover-large-log: {big.messages:,} messages written directly in {big.build_s:.0f} s "
        f"({big.store_bytes / MB:,.0f} MB a node); launch to /health 200: "
        + ", ".join(f"{n} {s:.2f} s" for n, s in big.ready_s.items())
        + "; RSS at start: " + ", ".join(f"{n} {m.rss_bytes / MB:.1f} MB" for n, m in big.memory_at_start.items())
        + ", after the loads: " + ", ".join(f"{n} {m.rss_bytes / MB:.1f} MB" for n, m in big.memory.items()),
    ]
    ratios = [f"{what} {100 * big.ratio(i):.0f}%" for i, what in enumerate(("w=3", "batches"))
              if big.ratio(i) is not None]
    if ratios:
        lines.append("failover-large-log: req/s on the large log, % of the empty log's: " + ", ".join(ratios)
                     + (f"; whole cluster restarted: first w=3 201 after {big.restart_s:.2f} s"
                        if big.restart_s is not None else ""))
    if big.pages:
        lines.append(_pages_line(big.pages))
    return lines


def _retention_lines(results: Results) -> list[str]:
    kept = results.retention
    if kept is None:
        return []
    return [f"retention: RETENTION_MESSAGES={kept.bound:,}, {kept.appended:,} appended; store on disk "
            "(file + WAL) of a whole log of {0:,}, at the end of the load, settled {1:.0f} s later: ".format(
                kept.bound, kept.settle_s)
            + "; ".join(f"{n} {kept.at_bound[n] / MB:.1f}, {kept.at_end[n] / MB:.1f}, "
                        f"{kept.settled[n] / MB:.1f} MB ({kept.ratio(n):.2f}x)" for n in kept.settled)
            + "; first ids kept: " + ", ".join(f"{n} {i:,}" for n, i in kept.first_ids.items())]


def _linearizable_lines(results: Results) -> list[str]:
    reads = results.linearizable
    if reads is None:
        return []
    return [f"linearizable-reads, {c.kind}: one round trip {c.round_trip_ms:.2f} ms (single-client p50: "
            f"w=majority {c.majority_p50_ms:.2f} ms - w=1 {c.w1_p50_ms:.2f} ms); pages of 10 from "
            f"{reads.log_messages:,}: "
            + "; ".join(f"{where} {level} {run.load.requests_per_s:,.0f} req/s, p50 "
                        f"{run.load.latency_ms['p50']:.2f} ms, p99 {run.load.latency_ms['p99']:.2f} ms"
                        for (where, level), run in c.runs.items())
            for c in reads.clusters]


def _row(*cells: str) -> str:
    widths = (11, 28, 7, 8, 8, 8, 10, 7, 0)
    return "  ".join(
        cell.ljust(width) if i < 2 or i == len(widths) - 1 else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths))
    ).rstrip()
