"""What the figures were measured on: cores, CPU, Python, wrk, the commit, the load.

``describe`` once before the run; ``load_average`` before each scenario
(tests.bench.scenarios records it), since a sitting lasts long enough for
other work on the machine to come and go.
"""

from __future__ import annotations

import os
import platform
import subprocess

from tests.support.processes import REPO


def describe(wrk_path: str, code: str | None = None) -> dict:
    """``code``: the other checkout the nodes run from (``--code``), if any."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "wrk": _first_line([wrk_path, "-v"]),
        "commit": _first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "nodes_from": code or "this checkout",
        "nodes_commit": _first_line(["git", "-C", code, "describe", "--always", "--dirty"]) if code else None,
        # Other work on the same cores skews every figure; this shows if there was any.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def load_average() -> dict:
    """The load average now: 1, 5 and 15 minutes."""
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _first_line(command: list[str]) -> str:
    # `wrk -v` prints its version, then exits 1: judge by stdout, not the exit code.
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    lines = result.stdout.splitlines()
    return lines[0].strip() if lines else "unknown"
