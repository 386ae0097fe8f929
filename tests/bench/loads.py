"""One wrk load on a cluster, and what the cluster held after it: a ``Run``.

Every scenario that loads a cluster with wrk goes through ``Loader``:
``measure`` runs wrk for the plan's seconds against a node (the primary by
default), notes that node's CPU time per response, then waits until every
node holds the same list (tests.bench.consistency) and counts what the
log gained; ``exactly`` sends a given number of POSTs and stops wrk once
the primary holds them all (a log loaded to a size), timing that.

All loads: ``CONNECTIONS`` keep-alive connections over ``WRK_THREADS``
threads (closed loop), messages of ``MESSAGE_BYTES`` (tests/bench/post.lua).

Thread: the benchmark's main thread.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass

from tests.bench import nodes, wrk
from tests.bench.consistency import Consistency, wait_for_convergence
from tests.support.processes import Node

CONNECTIONS = 32
#: One wrk thread per core: wrk shares the 2 cores with three servers.
WRK_THREADS = 2
MESSAGE_BYTES = 100
#: Covers the slowest delay and a loaded machine, yet ends a broken run.
CONVERGENCE_TIMEOUT_S = 60.0
#: Seconds between progress lines while a log loads to a size.
PROGRESS_EVERY_S = 15
#: Time between two looks at the primary's length while it loads.
POLL_S = 0.02
#: Numbers each timed load's messages apart from every other's of the sitting (post.lua's TAG).
_TAGS = itertools.count(1)


@dataclass
class Run:
    """One wrk load and, on a cluster, what the cluster held after it."""

    scenario: str
    label: str
    load: wrk.WrkResult
    consistency: Consistency | None = None
    #: Messages the primary's log gained during the run.
    log_growth: int | None = None
    #: CPU time of the loaded process (the primary, or the baseline) per
    #: response: what its throughput is bounded by. None without a response.
    cpu_us_per_request: float | None = None

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario,
            "label": self.label,
            **self.load.to_json(),
            "cpu_us_per_request": (None if self.cpu_us_per_request is None
                                   else round(self.cpu_us_per_request, 1)),
            "log_growth": self.log_growth,
            "consistency": self.consistency.to_json() if self.consistency else None,
        }


@dataclass(frozen=True)
class Loader:
    """wrk, and how long a timed load lasts."""

    wrk: str
    seconds: int

    def load(self, url: str, w: int, tag: str, batch: int = 1, limit: int | None = None,
             seconds: int | None = None) -> wrk.Load:
        return wrk.Load(url, w=w, tag=tag, message_bytes=MESSAGE_BYTES, seconds=seconds or self.seconds,
                        connections=CONNECTIONS, threads=WRK_THREADS, batch=batch, limit=limit)

    def measure(self, cluster, scenario: str, label: str, w: int, batch: int = 1,
                server: Node | None = None, from_id: int | None = None) -> Run:
        """A timed load of ``w`` appends on ``server`` (the cluster's primary by
        default), then the consistency check (from ``from_id`` on, if given)."""
        server = server or cluster.primary
        say(f"{scenario}: {label}, {self.seconds} s")
        before = nodes.log_length(server)
        result, cpu_us = self.run(server, self.load(server.url, w, f"{scenario}-{next(_TAGS)}", batch))
        consistency = wait_for_convergence(cluster, CONVERGENCE_TIMEOUT_S, from_id)
        return Run(scenario, label, result, consistency, consistency.lengths[server.name] - before, cpu_us)

    def run(self, server: Node, load) -> tuple[wrk.WrkResult, float | None]:
        """Run ``load`` against ``server``: wrk's result, and the server's CPU µs per response."""
        cpu_before = nodes.cpu_seconds(server)
        result = wrk.run(self.wrk, load)
        return result, cpu_us_per_request(server, cpu_before, result)

    def exactly(self, primary: Node, load: wrk.Load, count: int, timeout_s: float,
                what: str) -> tuple[wrk.WrkResult, float, float | None]:
        """Run ``load`` (its ``limit`` POSTs) until ``primary`` holds ``count``
        messages: wrk's result, the seconds from wrk's launch until then, and
        the primary's CPU µs per response."""
        cpu_before = nodes.cpu_seconds(primary)
        before = nodes.log_length(primary)
        started = last_said = time.monotonic()
        with wrk.WrkRun(self.wrk, load) as running:
            while (length := nodes.log_length(primary)) < count:
                now = time.monotonic()
                if now - started > timeout_s:
                    raise RuntimeError(f"{what}: the primary holds {length:,} of {count:,} messages "
                                       f"after {timeout_s:g} s of loading")
                if now - last_said >= PROGRESS_EVERY_S:
                    say(f"{what}: {length:,} of {count:,} messages, {(length - before) / (now - started):,.0f}/s")
                    last_said = now
                time.sleep(POLL_S)
            took = time.monotonic() - started
            result = running.interrupt()
        return result, took, cpu_us_per_request(primary, cpu_before, result)


def cpu_us_per_request(server: Node, cpu_before_s: float, result: wrk.WrkResult) -> float | None:
    """The CPU time ``server`` used since ``cpu_before_s``, per response of ``result``."""
    if not result.responses:
        return None
    return (nodes.cpu_seconds(server) - cpu_before_s) * 1e6 / result.responses


_STARTED = time.monotonic()


def say(what: str) -> None:
    """A progress line on stderr, with the seconds since the benchmark began."""
    print(f"-- {time.monotonic() - _STARTED:6.1f} s  {what}", file=sys.stderr, flush=True)
