"""What /metrics costs the primary, as a share of its CPU time per append.

On two cores a noisy machine moves throughput by more than the 3% to be
told apart, so the cost is not taken from two throughput runs, but from
CPU time, which the primary's throughput tracks (it runs GIL-bound):

- recording: every append calls ``PrimaryMetrics.record_append`` once;
  timed here, in this process, with timeit, in µs per call;
- scraping: the primary's CPU time (tests.bench.nodes.cpu_seconds) over
  ``SCRAPES`` GET /metrics back to back, per scrape. Whatever else the
  idle primary does meanwhile (heartbeats) is counted too: it can only
  overstate the cost;
- the cost at a run's w = (recording + scraping × ``SCRAPES_PER_S`` / the
  run's req/s) / the run's CPU time per request (tests.bench.scenarios.Run).

Thread: the benchmark's main thread.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import timeit
from dataclasses import dataclass

from primary.appender import Outcome
from primary.config import PrimaryConfig, SecondarySpec
from primary.metrics import PrimaryMetrics
from tests.bench import nodes
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


def record_us() -> float:
    """µs per ``record_append``, timed in this process on a PrimaryMetrics of a 3-node cluster."""
    # Only the cluster's size matters to recording: the secondaries are never
    # reached, and the store, replicator and appender are read by a scrape only.
    config = dataclasses.replace(PrimaryConfig(), secondaries=tuple(
        SecondarySpec(name, "tcp://127.0.0.1:0") for name in nodes.SECONDARIES))
    metrics = PrimaryMetrics(config, store=None, replicator=None, appender=None)
    # ``started`` anew for each timing: durations stay in the low buckets, as an append's do.
    timer = timeit.Timer(
        "record(w, ok, started)", setup="started = monotonic()",
        globals={"record": metrics.record_append, "w": RECORDED_W, "ok": Outcome.OK,
                 "monotonic": time.monotonic},
    )
    timings = timer.repeat(repeat=RECORD_TIMINGS, number=RECORD_CALLS)
    return statistics.median(timings) / RECORD_CALLS * 1e6


def scrape(primary: Node) -> tuple[float, int]:
    """The primary's CPU µs per GET /metrics, and the answer's size."""
    before = nodes.cpu_seconds(primary)
    for _ in range(SCRAPES):
        response = request("GET", f"{primary.url}/metrics")
        if response.status != 200:
            raise RuntimeError(f"GET /metrics on {primary.name}: {response.status} {response.body[:200]!r}")
    return (nodes.cpu_seconds(primary) - before) * 1e6 / SCRAPES, len(response.body)
