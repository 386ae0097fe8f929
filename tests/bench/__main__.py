"""``python -m tests.bench [--smoke] [--only NAME,...] [--code DIR] [--large-log N] [--retention N] ...``.

Runs the benchmark, reports, judges (``--out PATH``, ``--docs-img``: below). Prints the table on stdout, progress
on stderr, writes every figure to the JSON file and the charts
(tests.bench.charts) beside it; ``--docs-img`` also copies the charts to
docs/img/bench-<chart>.png, where docs/benchmarks.md embeds them from.
``--only`` runs the scenarios named (the baseline always runs); ``--code``
launches the nodes from another checkout (tests.bench.checkout): a
scenario that needs what it lacks is refused when named in ``--only``,
else skipped, and said so. Exit status: 0 when every check passed
(targets never fail a run), 1 when a check failed, 2 when wrk is missing
or the arguments are wrong, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

from tests.bench import charts, checkout, machine, report, table, wrk
from tests.bench.scenarios import ALWAYS, FULL, NAMES, SCENARIOS, SMOKE, Bench
from tests.support.processes import REPO

DEFAULT_OUT = REPO / "bench-results" / "latest.json"
#: Where --docs-img copies the charts, as bench-<chart>.png.
DOCS_IMG = REPO / "docs" / "img"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench",
                                     description="Run the benchmark of the replicated log: report, judge.",
                                     epilog="scenarios, in the order they run: " + ", ".join(NAMES))
    parser.add_argument("--smoke", action="store_true",
                        help="CI mode: every scenario for about a second, small logs")
    parser.add_argument("--only", type=_names, metavar="NAME[,NAME...]",
                        help=f"run only these scenarios ({ALWAYS} always runs besides)")
    parser.add_argument("--code", type=Path, metavar="DIR",
                        help="launch the nodes from the checkout in DIR (its working directory and "
                             "PYTHONPATH), with this Python; the load generator and the baseline stay here")
    parser.add_argument("--large-log", type=int, metavar="N",
                        help="messages of failover-large-log's prebuilt stores (full: 10,000,000; about "
                             "150 bytes each on disk, three times over)")
    parser.add_argument("--retention", type=int, metavar="N",
                        help="messages the retention scenario appends (full: 10,000,000); "
                             "RETENTION_MESSAGES is a tenth of it")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"the JSON results file (default: {DEFAULT_OUT.relative_to(REPO)}); "
                             "the charts go beside it")
    parser.add_argument("--docs-img", action="store_true",
                        help=f"also copy the charts to {DOCS_IMG.relative_to(REPO)}/bench-<chart>.png")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    sizes = {"large_log_messages": args.large_log, "retention_appended": args.retention}
    plan = dataclasses.replace(plan, **{name: value for name, value in sizes.items() if value})
    if plan.retention_appended < 1_000 or plan.large_log_messages < 2_000:
        parser.error("--large-log must be at least 2,000 and --retention at least 1,000")
    selected = args.only or NAMES
    if args.code:
        try:
            code = checkout.use(args.code)
        except ValueError as exc:
            parser.error(str(exc))
        refused = [f"{s.name}: it {' and '.join(code.missing(s.needs))}, which {code.path} lacks"
                   for s in SCENARIOS if args.only and s.name in args.only and code.missing(s.needs)]
        if refused:
            parser.error("--code: cannot run " + "; ".join(refused))
    try:
        wrk_path = wrk.ensure_wrk()
    except wrk.WrkMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    out = args.out.resolve()
    # Node logs of this run only, kept beside the results for a post-mortem.
    log_dir = out.parent / f"{out.stem}-logs"
    shutil.rmtree(log_dir, ignore_errors=True)

    # Before the run: the load average tells whether something else was busy.
    host = machine.describe(wrk_path, str(args.code.resolve()) if args.code else None)
    started = time.monotonic()
    try:
        results = Bench(plan, wrk_path, log_dir).run_all(selected)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"benchmark aborted; node logs in {log_dir}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started

    targets = report.targets(results)
    checks = report.checks(results)
    ok = all(check.ok for check in checks)
    print(table.table(plan, host, results, targets, checks))

    out.parent.mkdir(parents=True, exist_ok=True)
    drawn = charts.write(results, plan, host, out.parent, out.stem)
    if args.docs_img:
        for name, path in drawn.items():
            shutil.copyfile(path, DOCS_IMG / f"bench-{name}.png")
    print(f"\n{'OK' if ok else 'FAILED'} in {elapsed:.0f} s; results in {out}, charts "
          + ", ".join(path.name for path in drawn.values())
          + (f" (copied to {DOCS_IMG})" if args.docs_img else "") + f", node logs in {log_dir}")
    document = {
        "command": shlex.join(["python", "-m", "tests.bench", *argv]),
        "plan": dataclasses.asdict(plan),
        "scenarios": [name for name in NAMES if name == ALWAYS or name in selected],
        "machine": host,
        "elapsed_s": round(elapsed, 1),
        "ok": ok,
        **results.to_json(),
        "charts": {name: path.name for name, path in drawn.items()},
        "targets": [target.to_json() for target in targets],
        "checks": [check.to_json() for check in checks],
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if ok else 1


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(filter(None, (name.strip() for name in raw.split(","))))
    unknown = [name for name in names if name not in NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; "
                                         f"known: {', '.join(NAMES)}")
    return names


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
