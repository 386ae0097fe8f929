"""The run's charts, as PNG files beside its JSON: throughput, latency, catch-up.

- ``throughput``: req/s of the baseline and of each w, in memory, with
  DATA_DIR and FSYNC=always, and over CurveZMQ; each bar also as a share
  of the baseline, and the throughput targets marked;
- ``latency``: p50 and p99 of every wrk run, and of the tailing reader
  (from an append's answer to the reader), on a logarithmic axis;
- ``catch-up``: how long a secondary restarted empty takes to hold the
  whole log, against the log's length, and how much of it is the transfer;
- ``failover``: per kill -9 of a failover cluster's primary, the time to
  the next primary's first ``201``, with the goals marked.

A chart whose scenarios did not run (``--only``, ``--code``) is not drawn;
one whose bars are partly missing draws the rest.

matplotlib draws them through its object interface, without pyplot: a
``Figure`` saved to a PNG file is rendered by the Agg backend, and no
display or global figure state is involved. Each file is
``<prefix>-<chart>.png``, the prefix being the JSON file's stem (so
``latest-throughput.png`` beside ``latest.json``). Thread: the benchmark's
main thread, after the run.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from tests.bench import catch_up, tailing
from tests.bench.report import FAILOVER_MAX_GOAL_S, FAILOVER_MEDIAN_GOAL_S, THROUGHPUT_GOAL_PERCENT
from tests.bench.loads import CONNECTIONS, MESSAGE_BYTES
from tests.bench.scenarios import DURABLE_LABEL, DURABLE_WS, Plan, Results

SIZE_IN = (9, 5)
DPI = 110
#: Where a latency bar at or below zero is drawn on the logarithmic axis (its label says the truth).
LOG_FLOOR_MS = 0.01
#: Inches per row of the latency chart, once its rows outgrow SIZE_IN.
ROW_IN = 0.3


def write(results: Results, plan: Plan, machine: dict, folder: Path, prefix: str) -> dict[str, Path]:
    """Draw every chart into ``folder``; the files written, by chart name."""
    subtitle = (f"{plan.mode} mode, {machine['cores']} cores, commit {machine['commit']}, "
                f"load average {machine['load_average_1m']} before the run"
                + (" (smoke: indicative only)" if plan.mode == "smoke" else ""))
    written = {}
    for name, draw, drawn in (("throughput", _throughput, bool(results.runs_of("throughput"))),
                              ("latency", _latency, True), ("catch-up", _catch_up, bool(results.catch_up)),
                              ("failover", _failover, bool(results.failover and results.failover.kills))):
        if not drawn:
            continue
        rows = len(_latency_rows(results)) if name == "latency" else 0
        figure = Figure(figsize=(SIZE_IN[0], max(SIZE_IN[1], ROW_IN * rows)), dpi=DPI)
        draw(figure.subplots(), results)
        figure.text(0.99, 0.01, subtitle, ha="right", va="bottom", fontsize=8, color="dimgray")
        figure.tight_layout(rect=(0, 0.03, 1, 1))
        written[name] = folder / f"{prefix}-{name}.png"
        figure.savefig(written[name])
    return written


def _throughput(axes, results: Results) -> None:
    base = results.run("baseline", "bare").load.requests_per_s
    groups = ["baseline", "w=1", "w=2", "w=3"]
    series = {
        "in memory": {"baseline": base,
                      **{f"w={w}": _rps(results, "throughput", f"w={w}") for w in (1, 2, 3)}},
        "DATA_DIR, FSYNC=always": {f"w={w}": _rps(results, "durable", DURABLE_LABEL.format(w=w))
                                   for w in DURABLE_WS},
        "CurveZMQ": {"w=3": _rps(results, "curve", "w=3, CurveZMQ")},
    }
    series = {name: {group: rps for group, rps in values.items() if rps is not None}
              for name, values in series.items()}
    series = {name: values for name, values in series.items() if values}
    width = 0.8 / len(series)
    # Each group centred on the bars it has.
    present = {group: [name for name, values in series.items() if group in values] for group in groups}
    for name, values in series.items():
        positions = []
        for group in values:
            rank, count = present[group].index(name), len(present[group])
            positions.append(groups.index(group) + width * (rank - (count - 1) / 2))
        bars = axes.bar(positions, list(values.values()), width, label=name)
        axes.bar_label(bars, [f"{v:,.0f}\n{100 * v / base:.0f}%" for v in values.values()], fontsize=7)
    for w, goal in THROUGHPUT_GOAL_PERCENT.items():
        x, height = groups.index(f"w={w}"), base * goal / 100
        axes.hlines(height, x - 0.45, x + 0.45, colors="black", linestyles="dashed",
                    label="target, % of the baseline" if w == 1 else None)
        # Left of the line, in the gap between groups: above it, the label
        # would collide with a bar's own label when the bar nears the target.
        axes.annotate(f"target {goal}%", (x - 0.45, height), textcoords="offset points", xytext=(-3, 0),
                      ha="right", va="center", fontsize=7)
    axes.set_xticks(range(len(groups)), ["baseline\n(bare Bottle+Waitress)", "w=1", "w=2", "w=3"])
    axes.set_xlabel("write concern")
    axes.set_ylabel("acknowledged appends per second (req/s)")
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_title(f"Append throughput by write concern (wrk, {CONNECTIONS} connections, "
                   f"{MESSAGE_BYTES}-byte messages)")
    axes.set_ylim(0, base * 1.25)
    axes.legend(fontsize=8, loc="upper right")
    axes.grid(axis="y", alpha=0.3)


def _rps(results: Results, scenario: str, label: str) -> float | None:
    run = results.run(scenario, label)
    return None if run is None else run.load.requests_per_s


def _latency_rows(results: Results) -> list[tuple[str, dict]]:
    rows = [(f"{run.scenario}: {run.label}", run.load.latency_ms)
            for run in [*results.runs, *([results.large_log.load] if results.large_log else [])]]
    if results.tailing and results.tailing.latency_ms:
        rows.append((f"tailing: append answered → read on {tailing.TAILED}", results.tailing.latency_ms))
    return rows[::-1]  # the first run on top


def _latency(axes, results: Results) -> None:
    rows = _latency_rows(results)
    height = 0.4
    for offset, (percentile, color) in enumerate((("p50", "tab:blue"), ("p99", "tab:orange"))):
        values = [latency[percentile] for _, latency in rows]
        positions = [i + (offset - 0.5) * height for i in range(len(rows))]
        bars = axes.barh(positions, [max(v, LOG_FLOOR_MS) for v in values], height, label=percentile,
                         color=color)
        axes.bar_label(bars, [f"{v:.1f}" if abs(v) >= 1 else f"{v:.2f}" for v in values], fontsize=7,
                       padding=2)
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axes.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    axes.set_xlabel("latency (ms, logarithmic)")
    axes.set_title("Latency per scenario: p50 and p99")
    axes.legend(fontsize=8, loc="lower right")
    axes.grid(axis="x", alpha=0.3, which="both")


def _catch_up(axes, results: Results) -> None:
    points = [point for point in results.catch_up if point.caught_up]
    lengths = [point.messages for point in points]
    axes.plot(lengths, [point.caught_up_s for point in points], marker="o",
              label="from its launch (start-up, the primary noticing, transfer)")
    axes.plot(lengths, [point.caught_up_s - point.first_message_s for point in points], marker="s",
              label="transfer only: from its first message")
    for point in points:
        axes.annotate(f"{point.caught_up_s:.2f} s", (point.messages, point.caught_up_s),
                      textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    axes.set_xlabel(f"log length (messages of {MESSAGE_BYTES} bytes)")
    axes.set_ylabel("seconds until it holds the whole log")
    axes.set_title(f"Catch-up of a secondary ({catch_up.RESTARTED}) restarted empty, "
                   "against the log's length")
    axes.set_xlim(0, max(lengths, default=1) * 1.1)
    axes.set_ylim(0, max((point.caught_up_s for point in points), default=1) * 1.25)
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.legend(fontsize=8, loc="upper left")
    axes.grid(alpha=0.3)


def _failover(axes, results: Results) -> None:
    kills = results.failover.kills
    numbers = range(1, len(kills) + 1)
    bars = axes.bar(numbers, [kill.recovery_s for kill in kills], color="tab:blue")
    axes.bar_label(bars, labels=[f"{kill.recovery_s:.2f} s\n{kill.new_primary}" for kill in kills],
                   fontsize=7)
    for goal, label, style in ((FAILOVER_MEDIAN_GOAL_S, "goal: median", "--"),
                               (FAILOVER_MAX_GOAL_S, "goal: max", ":")):
        axes.axhline(goal, color="tab:red", linestyle=style, linewidth=1, label=f"{label} {goal:g} s")
    axes.set_xlabel("kill -9 of the primary (the bar names the node elected next)")
    axes.set_ylabel("seconds to the next primary's first 201")
    axes.set_title("Failover: time to recover per kill, three nodes, default timeouts, w=majority load")
    axes.set_xticks(list(numbers))
    axes.set_ylim(0, max([FAILOVER_MAX_GOAL_S, *(kill.recovery_s for kill in kills)]) * 1.3)
    axes.legend(fontsize=8, loc="upper right")
    axes.grid(alpha=0.3, axis="y")
