"""The tailing scenario: how soon a reader long-polling a secondary sees an append.

A writer appends messages to the primary with w=1, one after another,
``PACE_S`` apart, and notes when each append's answer arrived. A reader
long-polls s1 with ``GET /messages?from=N&wait=5``, N being the ``next`` of
its previous answer, and notes when each message arrived. Both run in this
process and read the same monotonic clock, so a message's latency is the
reader's arrival time minus the writer's answer time: what a consumer
tailing a secondary waits for a write its producer has been told is done.
With w=1 the answer does not wait for the secondaries, so a message may
reach the reader before its writer hears back: such a latency is negative.

Afterwards the reader must have seen every appended message exactly once,
in the order of the ids the primary gave.

Threads: ``run`` on the benchmark's main thread starts two threads of its
own, ``tail-writer`` and ``tail-reader``, and waits for both.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

from tests.bench.stores import message
from tests.support.http import post_message, request
from tests.support.processes import Cluster

#: Between one append's answer and the next append: load shaping, not synchronisation.
PACE_S = 0.005
#: The long poll's wait, in seconds.
WAIT_S = 5
#: Beyond the paces between appends: covers a loaded machine, yet ends a broken run.
DEADLINE_MARGIN_S = 30.0
#: The secondary that is tailed.
TAILED = "s1"


@dataclass
class Tailing:
    samples: int
    #: p50, p99, min and max of the per-message latency, in ms; empty after a problem.
    latency_ms: dict[str, float]
    #: What went wrong (an append refused, a message missing, duplicated or
    #: out of order, the deadline); empty when nothing did.
    problem: str

    def to_json(self) -> dict:
        return {"samples": self.samples, "tailed": TAILED, "pace_s": PACE_S, "wait_s": WAIT_S,
                "latency_ms": self.latency_ms, "ok": not self.problem, "problem": self.problem}


@dataclass
class _Writer:
    """The appends, in id order, and when each answer arrived."""

    messages: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    problem: str = ""


@dataclass
class _Reader:
    """The messages in the order read, and when each arrived."""

    messages: list[str] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    problem: str = ""


def run(cluster: Cluster, samples: int, message_bytes: int) -> Tailing:
    """Append ``samples`` messages to a fresh cluster while s1 is tailed."""
    writer, reader = _Writer(), _Reader()
    # Set by whichever thread fails, so that the other stops too.
    failed = threading.Event()
    deadline = time.monotonic() + samples * PACE_S + DEADLINE_MARGIN_S
    threads = [
        threading.Thread(target=_tail, name="tail-reader",
                         args=(cluster[TAILED].url, samples, deadline, reader, failed)),
        threading.Thread(target=_append, name="tail-writer",
                         args=(cluster.primary.url, samples, message_bytes, writer, failed)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    problem = writer.problem or reader.problem or _order_problem(writer, reader, samples)
    if problem:
        return Tailing(samples, {}, problem)
    # The lists are now in id order, the same ids: the n-th of each is one message's.
    latency_ms = [(received - answered) * 1000
                  for received, answered in zip(reader.received_at, writer.answered_at)]
    return Tailing(samples, _summary(latency_ms), "")


def _append(url: str, samples: int, message_bytes: int, writer: _Writer, failed: threading.Event) -> None:
    try:
        for seq in range(samples):
            sent = message("tail", seq, message_bytes)
            response = post_message(url, sent, w=1)
            answered_at = time.monotonic()
            if response.status != 201:
                writer.problem = f"append {seq}: {response.status} {response.body[:200]!r}"
                break
            writer.messages.append(sent)
            writer.ids.append(response.json["id"])
            writer.answered_at.append(answered_at)
            if failed.wait(PACE_S):
                return
    except Exception as exc:  # reported as the scenario's problem, not lost with the thread
        writer.problem = f"tail-writer: {exc!r}"
    if writer.problem:
        failed.set()


def _tail(url: str, samples: int, deadline: float, reader: _Reader, failed: threading.Event) -> None:
    start = 0
    try:
        while len(reader.messages) < samples and not failed.is_set():
            if time.monotonic() >= deadline:
                reader.problem = f"{len(reader.messages)} of {samples} messages read by the deadline"
                break
            response = request("GET", f"{url}/messages?from={start}&wait={WAIT_S}", timeout=WAIT_S + 10)
            received_at = time.monotonic()
            if response.status != 200:
                reader.problem = f"GET /messages?from={start}: {response.status} {response.body[:200]!r}"
                break
            page = response.json
            if page["from"] != start or page["next"] != start + len(page["messages"]):
                reader.problem = f"a page from {start} says from {page['from']}, next {page['next']}"
                break
            reader.messages += page["messages"]
            reader.received_at += [received_at] * len(page["messages"])
            start = page["next"]
    except Exception as exc:  # reported as the scenario's problem, not lost with the thread
        reader.problem = f"tail-reader: {exc!r}"
    if reader.problem:
        failed.set()


def _order_problem(writer: _Writer, reader: _Reader, samples: int) -> str:
    """Whether the reader saw each appended message once, in id order; empty if it did."""
    if writer.ids != list(range(samples)):
        return f"the primary gave ids {writer.ids[:5]}..., not 0..{samples - 1} in order"
    if reader.messages != writer.messages:
        index = next((i for i, (got, sent) in enumerate(zip(reader.messages, writer.messages))
                      if got != sent), min(len(reader.messages), len(writer.messages)))
        return (f"the reader saw {len(reader.messages)} messages for {len(writer.messages)} appended, "
                f"first difference at id {index}")
    return ""


def _summary(latency_ms: list[float]) -> dict[str, float]:
    percentiles = statistics.quantiles(latency_ms, n=100, method="inclusive")
    return {"p50": round(statistics.median(latency_ms), 2), "p99": round(percentiles[98], 2),
            "min": round(min(latency_ms), 2), "max": round(max(latency_ms), 2)}
