"""What /metrics costs the primary, as a share of its CPU time per append.

On two cores a noisy machine moves throughput by more than the 3% to be
told apart, so the cost is not taken from two throughput runs, but from
CPU time, which the primary's throughput tracks (it runs GIL-bound):

- recording: every append calls ``PrimaryMetrics.record_append`` once;
  timed with timeit, in µs per call, in a Python process of its own
  started from the checkout the nodes run from (tests.bench.checkout), so
  that ``--code`` times that checkout's metrics (``RECORD_TIMER`` speaks
  the fixed primary's metrics API of this engine and of the one before);
- scraping: the primary's CPU time (tests.bench.nodes.cpu_seconds) over
  ``SCRAPES`` GET /metrics back to back, per scrape. Whatever else the
  idle primary does meanwhile (heartbeats) is counted too: it can only
  overstate the cost;
- the cost at a run's w = (recording + scraping × ``SCRAPES_PER_S`` / the
  run's req/s) / the run's CPU time per request (tests.bench.scenarios.Run).

Thread: the benchmark's main thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from tests.bench import checkout, nodes
from tests.support.http import request
from tests.support.processes import Node

#: One scrape a second: 15 times Prometheus' default scrape_interval (15 s).
SCRAPES_PER_S = 1.0
#: Scrapes timed back to back: enough CPU time to dwarf a 10 ms clock tick.
SCRAPES = 200
#: record_append calls per timing, and timings; the median counts.
RECORD_CALLS = 20_000
RECORD_TIMINGS = 7
#: The write concern recorded: the cluster's largest, as any is bound up front alike.
RECORDED_W = 1 + len(nodes.SECONDARIES)


@dataclass(frozen=True)
class MetricsCost:
    #: µs per record_append call.
    record_us: float
    #: The primary's CPU µs per GET /metrics.
    scrape_us: float
    #: The size of a scrape's answer.
    scrape_bytes: int

    def percent(self, requests_per_s: float, cpu_us_per_request: float) -> float:
        """The share of a run's CPU time per request that metrics take, in %."""
        per_request_us = self.record_us + self.scrape_us * SCRAPES_PER_S / requests_per_s
        return 100 * per_request_us / cpu_us_per_request

    def to_json(self) -> dict:
        return {"record_us": round(self.record_us, 3), "scrape_us": round(self.scrape_us, 1),
                "scrape_bytes": self.scrape_bytes, "scrapes_per_s": SCRAPES_PER_S}


#: Run by ``record_us`` in the nodes' checkout: prints the median µs per call.
#: Only the cluster's size matters to recording: whatever else PrimaryMetrics
#: takes (the node, the log, the appender) is read by a scrape only.
RECORD_TIMER = """
import dataclasses, inspect, json, statistics, sys, time, timeit
from primary.config import PrimaryConfig, SecondarySpec
from primary.metrics import PrimaryMetrics
try:
    from shared.node.appends import Outcome
except ImportError:
    from primary.appender import Outcome
names, w, calls, timings = json.loads(sys.argv[1])
config = dataclasses.replace(PrimaryConfig(), secondaries=tuple(
    SecondarySpec(name, "tcp://127.0.0.1:0") for name in names))
others = len(inspect.signature(PrimaryMetrics).parameters) - 1
metrics = PrimaryMetrics(config, *[None] * others)
# ``started`` anew for each timing: durations stay in the low buckets, as an append's do.
timer = timeit.Timer("record(w, ok, started)", setup="started = monotonic()",
                     globals={"record": metrics.record_append, "w": w, "ok": Outcome.OK,
                              "monotonic": time.monotonic})
print(statistics.median(timer.repeat(repeat=timings, number=calls)) / calls * 1e6)
"""


def record_us() -> float:
    """µs per ``record_append`` on a PrimaryMetrics of a 3-node cluster (see RECORD_TIMER)."""
    code = checkout.current().path
    arguments = json.dumps([list(nodes.SECONDARIES), RECORDED_W, RECORD_CALLS, RECORD_TIMINGS])
    done = subprocess.run([sys.executable, "-c", RECORD_TIMER, arguments], cwd=code, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(code), "PYTHONSAFEPATH": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"timing record_append in {code} failed:\n{done.stderr}")
    return float(done.stdout.split()[-1])


def scrape(primary: Node) -> tuple[float, int]:
    """The primary's CPU µs per GET /metrics, and the answer's size."""
    before = nodes.cpu_seconds(primary)
    for _ in range(SCRAPES):
        response = request("GET", f"{primary.url}/metrics")
        if response.status != 200:
            raise RuntimeError(f"GET /metrics on {primary.name}: {response.status} {response.body[:200]!r}")
    return (nodes.cpu_seconds(primary) - before) * 1e6 / SCRAPES, len(response.body)
