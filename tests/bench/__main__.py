"""``python -m tests.bench [--smoke] [--out PATH] [--docs-img]``: run the benchmark, report, judge.

Prints the table on stdout, progress on stderr, writes every figure to the
JSON file and the charts (tests.bench.charts) beside it; ``--docs-img``
also copies the charts to docs/img/bench-<chart>.png, where
docs/benchmarks.md embeds them from. Exit status: 0 when every check
passed (targets never fail a run), 1 when a check failed, 2 when wrk is
missing, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from tests.bench import charts, machine, report, wrk
from tests.bench.scenarios import FULL, SMOKE, Bench
from tests.support.processes import REPO

DEFAULT_OUT = REPO / "bench-results" / "latest.json"
#: Where --docs-img copies the charts, as bench-<chart>.png.
DOCS_IMG = REPO / "docs" / "img"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="CI mode: every scenario for about a second, small logs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"the JSON results file (default: {DEFAULT_OUT.relative_to(REPO)}); "
                             "the charts go beside it")
    parser.add_argument("--docs-img", action="store_true",
                        help=f"also copy the charts to {DOCS_IMG.relative_to(REPO)}/bench-<chart>.png")
    args = parser.parse_args(argv)
    try:
        wrk_path = wrk.ensure_wrk()
    except wrk.WrkMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    plan = SMOKE if args.smoke else FULL
    out = args.out.resolve()
    # Node logs of this run only, kept beside the results for a post-mortem.
    log_dir = out.parent / f"{out.stem}-logs"
    shutil.rmtree(log_dir, ignore_errors=True)

    # Before the run: the load average tells whether something else was busy.
    host = machine.describe(wrk_path)
    started = time.monotonic()
    try:
        results = Bench(plan, wrk_path, log_dir).run_all()
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
    print(report.table(plan, host, results, targets, checks))

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
        "plan": asdict(plan),
        "machine": host,
        "elapsed_s": round(elapsed, 1),
        "ok": ok,
        "runs": [run.to_json() for run in results.runs],
        "large_log": results.large_log.to_json(),
        "tailing": results.tailing.to_json(),
        "catch_up": [point.to_json() for point in results.catch_up],
        "durability": results.durability.to_json(),
        "failover": results.failover.to_json(),
        "metrics_cost": results.metrics_cost.to_json(),
        "charts": {name: path.name for name, path in drawn.items()},
        "targets": [target.to_json() for target in targets],
        "checks": [check.to_json() for check in checks],
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
