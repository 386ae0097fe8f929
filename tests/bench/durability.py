"""The durability scenarios: how fast a primary with a large DATA_DIR is ready,
and how fast an in-memory primary recovers a log from a secondary.

Both need a node that already holds a large log. Loading one through HTTP
would take minutes, so tests.bench.stores writes the node's DATA_DIR
directly, in this engine's format: a fixed primary's store for
ready-time, a fixed secondary's for recovery, each holding the first run
of one cluster (term 1, the cluster's name). They cannot run against
another checkout's nodes (``--code``): the scenarios say so (``NEEDS``).

- **ready-time**: a primary alone (no secondaries, so nothing but its own
  log counts) starts on a DATA_DIR of ``ready_messages``; the figure is the
  time from the process's launch until GET /health answers 200. Then its
  log must equal what was stored, the paged reads of tests.bench.paging
  are timed on it, and an append must get the next id.
- **recovery**: s1 starts on a DATA_DIR of ``recovery_messages``, s2 starts
  empty in memory, then a primary in memory with both as SECONDARIES; the
  figure is the time from the primary's launch until its /health says
  ``"recovering": false`` with every message in its length. Then its log
  must equal s1's, and all three nodes must converge (s2 is caught up
  after the recovery).

The stores are big and rebuilt every run, so each is deleted once its
scenario ends; the node logs stay. The durable throughput runs (FSYNC=always
at w=1 and w=3) are ordinary loads, in tests.bench.scenarios.

Thread: the benchmark's main thread.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tests.bench import nodes, paging, stores
from tests.bench.consistency import Consistency, wait_for_convergence
from tests.bench.stores import message
from tests.support.http import get_health, post_message, request
from tests.support.processes import Node

#: What both scenarios need of the checkout the nodes run from (tests.bench.checkout).
NEEDS = ("store",)
#: Entries per GET /messages page while a node's log is compared with the store.
COMPARE_PAGE = 50_000
#: Time between two looks at /health while the primary recovers.
POLL_S = 0.02
#: Covers RECOVERY_TIMEOUT (10 s by default) and the fetch, yet ends a broken run.
RECOVERY_DEADLINE_S = 60.0
#: The secondary that holds the log the primary recovers, and the empty one.
SOURCE, EMPTY = nodes.SECONDARIES


@dataclass
class StartUp:
    """A node started on a store written for it, and what it then held."""

    messages: int
    #: How long writing the store took (not a target; tells the run's cost).
    build_s: float
    #: From the node's launch until GET /health answered 200.
    ready_s: float
    #: What the check after it found wrong; empty when nothing was.
    problem: str

    def to_json(self) -> dict:
        return {
            "messages": self.messages,
            "build_s": round(self.build_s, 2),
            "ready_s": round(self.ready_s, 3),
            "ok": not self.problem,
            "problem": self.problem,
        }


@dataclass
class ReadyTime(StartUp):
    """The primary on its large DATA_DIR."""

    #: The log length /health reported once ready.
    length: int
    memory: nodes.Memory
    pages: paging.PagedReads

    def to_json(self) -> dict:
        return {**super().to_json(), "length": self.length, "memory": self.memory.to_json(),
                "paged_reads": self.pages.to_json()}


@dataclass
class RecoveryTime(StartUp):
    """The in-memory primary; ``ready_s`` is while it still recovers."""

    #: From the primary's launch until /health said "recovering": false with
    #: every message, or until the deadline if it never did.
    recovered_s: float
    recovered: bool
    #: Every node equal to the primary afterwards, s2 caught up; None if the
    #: recovery never ended.
    consistency: Consistency | None

    def to_json(self) -> dict:
        return {
            **super().to_json(),
            "recovered_s": round(self.recovered_s, 3),
            "recovered": self.recovered,
            "consistency": self.consistency.to_json() if self.consistency else None,
        }


def ready_time(log_dir: Path, *, messages: int, message_bytes: int,
               say: Callable[[str], None]) -> ReadyTime:
    log_dir.mkdir(parents=True, exist_ok=True)
    store_env = nodes.durable_env(log_dir, "primary")
    say(f"ready-time: writing a primary's DATA_DIR with {messages:,} messages")
    started = time.monotonic()
    stores.build_store(Path(store_env["DATA_DIR"]), stores.fixed_primary(stores.new_cluster_name()),
                       messages, "ready", message_bytes)
    build_s = time.monotonic() - started
    say(f"ready-time: starting the primary on it (written in {build_s:.1f} s)")
    primary = nodes.node("primary", "primary", log_dir, {**store_env, "HTTP_THREADS": str(nodes.HTTP_THREADS)})
    try:
        with nodes.serving(primary):
            ready_s = time.monotonic() - primary.started_at
            length = nodes.log_length(primary)
            problem = differences(primary, messages, "ready", message_bytes)
            # Before the next append: every page read is then of the stored log.
            pages = paging.time_pages(primary, messages, lambda seq: message("ready", seq, message_bytes))
            problem = problem or _next_id_problem(primary, messages)
            memory = nodes.memory(primary)
    finally:
        shutil.rmtree(store_env["DATA_DIR"], ignore_errors=True)
    return ReadyTime(messages, build_s, ready_s, problem, length=length, memory=memory, pages=pages)


def recovery(log_dir: Path, *, messages: int, message_bytes: int, convergence_timeout_s: float,
             say: Callable[[str], None]) -> RecoveryTime:
    log_dir.mkdir(parents=True, exist_ok=True)
    source_env = nodes.durable_env(log_dir, SOURCE)
    say(f"recovery: writing {SOURCE}'s DATA_DIR with {messages:,} messages")
    started = time.monotonic()
    stores.build_store(Path(source_env["DATA_DIR"]), stores.fixed_secondary(stores.new_cluster_name()),
                       messages, "recovery", message_bytes)
    build_s = time.monotonic() - started
    say(f"recovery: an in-memory primary recovers them from {SOURCE} ({EMPTY} starts empty)")
    cluster = nodes.fixed_cluster(log_dir, {SOURCE: source_env, EMPTY: {}},
                                  primary_env={"HTTP_THREADS": str(nodes.HTTP_THREADS)})
    try:
        with nodes.started(cluster):
            primary = cluster.primary
            ready_s = time.monotonic() - primary.started_at
            recovered, recovered_s, health = _wait_recovered(primary, messages)
            if not recovered:
                problem = f"not recovered {RECOVERY_DEADLINE_S:g} s after the launch: /health says {health}"
                return RecoveryTime(messages, build_s, ready_s, problem, recovered_s=recovered_s,
                                    recovered=False, consistency=None)
            problem = differences(primary, messages, "recovery", message_bytes)
            consistency = wait_for_convergence(cluster, convergence_timeout_s)
            return RecoveryTime(messages, build_s, ready_s, problem, recovered_s=recovered_s,
                                recovered=True, consistency=consistency)
    finally:
        shutil.rmtree(source_env["DATA_DIR"], ignore_errors=True)


def _wait_recovered(primary: Node, messages: int) -> tuple[bool, float, str]:
    """Poll /health (it answers 200 while recovering) until it says
    "recovering": false with ``messages`` as its length: whether it did
    before the deadline, when (from the launch), and what it said last."""
    while True:
        health = get_health(primary.url)
        elapsed = time.monotonic() - primary.started_at
        recovered = not health["recovering"] and health["length"] == messages
        if recovered or elapsed >= RECOVERY_DEADLINE_S:
            return recovered, elapsed, f"recovering {health['recovering']}, length {health['length']:,}"
        time.sleep(POLL_S)


def differences(node: Node, count: int, tag: str, size: int, more: bool = False) -> str:
    """Where ``node``'s log departs from the ``count`` messages stored
    (``message(tag, seq, size)`` at each id); empty if nowhere. ``more``:
    messages appended since may follow them (else there must be none)."""
    for start in range(0, count + (0 if more else 1), COMPARE_PAGE):
        limit = min(COMPARE_PAGE, count - start) if more else COMPARE_PAGE
        response = request("GET", f"{node.url}/messages?from={start}&limit={limit}", timeout=60)
        if response.status != 200:
            return f"GET /messages page from {start} on {node.name}: {response.status}"
        page = response.json["messages"]
        expected = [message(tag, seq, size) for seq in range(start, min(start + COMPARE_PAGE, count))]
        if page != expected:
            index = next((i for i, (got, want) in enumerate(zip(page, expected)) if got != want),
                         min(len(page), len(expected)))
            return (f"{node.name} holds {response.json['length']:,} messages of {count:,}, "
                    f"first difference at id {start + index:,}")
    return ""


def _next_id_problem(primary: Node, count: int) -> str:
    """A reloaded primary continues at the next id; empty if it does."""
    response = post_message(primary.url, "ready-time: the next append", w=1)
    if response.status != 201 or response.json.get("id") != count:
        return f"an append after the reload got {response.status} {response.body[:200]!r}, not id {count:,}"
    return ""
