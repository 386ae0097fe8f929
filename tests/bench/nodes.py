"""The processes a scenario measures: a fresh cluster, the bare baseline, their memory and CPU time.

A thin layer over tests.support.processes: it fixes the benchmark's shape
(one primary, two secondaries, 64 Waitress threads everywhere), gives each
node of a durable cluster a fresh DATA_DIR of its own, and makes sure every
process it starts is stopped when the scenario ends, whether it ends
normally, on an exception or on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from shared.wire.keys import create_pairs
from tests.support.http import get_health
from tests.support.processes import Cluster, Node

#: The unit of utime and stime in /proc/PID/stat.
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
#: Waitress threads of the primary and of the baseline: the same, so the
#: baseline differs from the primary only in what a request does.
HTTP_THREADS = 64
SECONDARIES = ("s1", "s2")


@contextmanager
def cluster(log_dir: Path, delay_s: float | None = None, durable: bool = False,
            curve: bool = False) -> Iterator[Cluster]:
    """One primary and two secondaries, each secondary delayed by ``delay_s``;
    every node logs to a file in ``log_dir``. ``durable``: every node keeps
    its log in a fresh DATA_DIR with FSYNC=always (``durable_env``).
    ``curve``: replication over CurveZMQ, with fresh keys in ``log_dir``/keys."""
    log_dir.mkdir(parents=True, exist_ok=True)
    keys_env = {}
    if curve:
        keys = log_dir / "keys"
        create_pairs(keys, ["primary", *SECONDARIES], if_missing=True)
        keys_env["REPLICATION_KEYS_DIR"] = str(keys)

    def env(name: str, settings: dict[str, str]) -> dict[str, str]:
        return {**settings, **keys_env, **(durable_env(log_dir, name) if durable else {})}

    secondary_env = {"REPLICATION_DELAY": f"{delay_s:g}"} if delay_s else {}
    nodes = Cluster(
        log_dir,
        {name: env(name, secondary_env) for name in SECONDARIES},
        primary_env=env("primary", {"HTTP_THREADS": str(HTTP_THREADS)}),
    )
    with started(nodes) as running:
        yield running


@contextmanager
def started(nodes: Cluster) -> Iterator[Cluster]:
    """Start ``nodes``; stop every one of them when the block ends."""
    try:
        yield nodes.start()
    finally:
        nodes.shutdown()


@contextmanager
def serving(node: Node) -> Iterator[Node]:
    """Start one process and wait until it is ready; stop it when the block ends."""
    try:
        yield node.start().wait_ready()
    finally:
        if node.running:
            try:
                node.stop(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()


@contextmanager
def baseline(log_dir: Path) -> Iterator[Node]:
    """The bare Bottle+Waitress app of tests/bench/baseline_app.py."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with serving(Node("tests.bench.baseline_app", "baseline", log_dir,
                      {"HTTP_THREADS": str(HTTP_THREADS)})) as node:
        yield node


def data_dir(log_dir: Path, name: str) -> Path:
    """The DATA_DIR of node ``name``: under its scenario's log folder, empty."""
    path = log_dir / "data" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def durable_env(log_dir: Path, name: str) -> dict[str, str]:
    """The settings of a node that keeps its log in a fresh DATA_DIR, fsyncing every commit."""
    return {"DATA_DIR": str(data_dir(log_dir, name)), "FSYNC": "always"}


def log_length(node: Node) -> int:
    return get_health(node.url)["length"]


@dataclass(frozen=True)
class Memory:
    """From /proc/PID/status: resident now (VmRSS) and at its peak (VmHWM)."""

    rss_bytes: int
    peak_rss_bytes: int

    def to_json(self) -> dict:
        return {"rss_mb": round(self.rss_bytes / 1e6, 1), "peak_rss_mb": round(self.peak_rss_bytes / 1e6, 1)}


def memory(node: Node) -> Memory:
    fields = {}
    for line in Path(f"/proc/{node.process.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024  # reported in kB
    return Memory(fields["VmRSS"], fields["VmHWM"])


def cpu_seconds(node: Node) -> float:
    """CPU time the process has used so far, every thread's, user and system
    (utime + stime of /proc/PID/stat), counted in clock ticks (10 ms on Linux)."""
    stat = Path(f"/proc/{node.process.pid}/stat").read_text()
    # The command name, in parentheses, may hold spaces: count fields after it.
    # utime and stime are fields 14 and 15, state (field 3) being the first after it.
    after_name = stat.rpartition(")")[2].split()
    return (int(after_name[14 - 3]) + int(after_name[15 - 3])) / CLOCK_TICKS_PER_S
