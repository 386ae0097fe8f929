"""The processes a scenario measures: a fresh cluster, the bare baseline, their memory and CPU time.

A thin layer over tests.support.processes: it fixes the benchmark's shape
(one primary, two secondaries, 64 Waitress threads everywhere), gives each
node of a durable cluster a fresh DATA_DIR of its own, and makes sure every
process it starts is stopped when the scenario ends, whether it ends
normally, on an exception or on Ctrl-C. Every node process is a
``BenchNode``: launched from the checkout tests.bench.checkout names (this
one, or ``--code DIR``); the baseline always runs from this one.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from shared.wire.keys import create_pairs
from tests.bench import checkout
from tests.support.http import get_health, post_message, request
from tests.support.processes import Cluster, Node

#: The unit of utime and stime in /proc/PID/stat.
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
#: Waitress threads of the primary and of the baseline: the same, so the
#: baseline differs from the primary only in what a request does.
HTTP_THREADS = 64
SECONDARIES = ("s1", "s2")


class BenchNode(Node):
    """A node launched from tests.bench.checkout's checkout: its working
    directory and PYTHONPATH there, the same Python (Node.start otherwise)."""

    def start(self) -> "BenchNode":
        code = checkout.current()
        if code.is_this:
            return super().start()
        env = {
            "PATH": os.environ.get("PATH", ""), "NO_COLOR": "1", "LOG_LEVEL": "INFO",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(code.path), **self.env,
        }
        self.port_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen([sys.executable, "-m", self.role], cwd=code.path, env=env,
                                            stdout=log_file, stderr=subprocess.STDOUT)
        return self


def node(role: str, name: str, log_dir: Path, env: dict[str, str]) -> BenchNode:
    """A node process, not started: ``python -m role``."""
    return BenchNode(role, name, log_dir, env)


def fixed_cluster(log_dir: Path, secondaries: dict[str, dict[str, str]],
                  primary_env: dict[str, str]) -> Cluster:
    """A tests.support Cluster (not started) whose nodes are BenchNodes."""
    nodes = Cluster(log_dir, secondaries, primary_env=primary_env)

    def adopt(one: Node) -> BenchNode:
        return BenchNode(one.role, one.name, log_dir, one.env)

    nodes.primary = adopt(nodes.primary)
    nodes.secondaries = {name: adopt(one) for name, one in nodes.secondaries.items()}
    return nodes


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
    nodes = fixed_cluster(
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


def ready_times(launched: Iterable[Node], timeout_s: float = 60.0) -> dict[str, float]:
    """Wait until every node of ``launched`` (just started) answers GET /health
    200; each one's time from its launch until then. Each is looked at every
    20 ms in turn, so that no node's time waits on another's start. Raises
    AssertionError when one exits, or none is ready within ``timeout_s``."""
    pending, found = list(launched), {}
    deadline = time.monotonic() + timeout_s
    while pending:
        for each in list(pending):
            if each.process.poll() is not None:
                raise AssertionError(f"{each.name} exited with {each.process.returncode}:\n{each.log()}")
            if _answers_health(each):
                found[each.name] = time.monotonic() - each.started_at
                pending.remove(each)
                each.wait_ready()  # reads its addresses
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"{', '.join(n.name for n in pending)} not ready after {timeout_s:g} s")
        time.sleep(0.02)
    return found


def kill_all(running: Iterable[Node]) -> None:
    """SIGKILL every node of ``running`` that still runs (paused ones too), and reap it."""
    for each in running:
        if each.process is not None:
            each.kill()


def relaunch(node: Node) -> Node:
    """Start a stopped node again on the same ports, without waiting (Node.restart waits)."""
    assert not node.running, f"{node.name} still runs"
    node.env["HTTP_PORT"] = node.url.rsplit(":", 1)[1]
    if node.replication_endpoint and (node.role == "secondary" or "PEERS" in node.env):
        node.env["REPLICATION_BIND"] = node.replication_endpoint
    return node.start()


def whole_restart(cluster_nodes: list[Node], urls: list[str], w: int, tag: str,
                  timeout_s: float = 60.0) -> float:
    """Kill every node of a cluster (SIGKILL), launch them all again at once on
    the same ports, and append with ``w`` to ``urls`` in turn (every 20 ms)
    until one answers 201: the seconds from the first launch to that answer.
    Then wait until every node is ready. RuntimeError past ``timeout_s``."""
    for each in cluster_nodes:
        each.kill()
    for each in cluster_nodes:
        relaunch(each)
    started = min(each.started_at for each in cluster_nodes)
    for attempt in itertools.count():
        url = urls[attempt % len(urls)]
        try:
            answer = post_message(url, f"{tag} {attempt}", w=w, http_timeout=5)
            if answer.status == 201:
                took = time.monotonic() - started
                break
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"no w={w} append answered 201 within {timeout_s:g} s of a whole restart")
        time.sleep(0.02)
    for each in cluster_nodes:
        each.wait_ready()
    return took


def _answers_health(node: Node) -> bool:
    try:
        url = json.loads(node.port_file.read_text())["http"]
        return request("GET", f"{url}/health", timeout=2).status == 200
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return False


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


def reset_peak(node: Node) -> None:
    """Make VmHWM start again from the current VmRSS (Linux: clear_refs 5)."""
    Path(f"/proc/{node.process.pid}/clear_refs").write_text("5")


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
