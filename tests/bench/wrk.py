"""wrk, the load generator: find or install it, run it with post.lua or get.lua, parse it.

A Load sends one message per POST, or a batch of them (``batch``); the
result counts both POSTs and messages. A ReadLoad reads pages at random
offsets of a log (get.lua) at a consistency level. Both scripts print
their figures through result.lua.

Every throughput and latency figure comes from wrk, a C event loop that keeps
a fixed number of keep-alive connections busy (closed loop: each connection
sends its next request when the previous answer arrives). A Python client
would compete with the servers for the same two cores and measure itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).with_name("post.lua")
READ_SCRIPT = Path(__file__).with_name("get.lua")
_RESULT = re.compile(r"^BENCH_RESULT (\{.*\})$", re.MULTILINE)
#: Requests slower than this count as wrk timeouts instead of as latency.
REQUEST_TIMEOUT_S = 10
INSTALL_HINT = (
    "wrk, the load generator, is not installed. Install it and run again:\n"
    "  Debian/Ubuntu: sudo apt-get install -y wrk\n"
    "  macOS:         brew install wrk"
)


class WrkMissing(RuntimeError):
    """wrk is not installed and could not be installed here."""


def ensure_wrk() -> str:
    """The path of wrk; installed with apt-get when missing and running as root."""
    path = shutil.which("wrk")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it with apt-get", file=sys.stderr, flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # The package lists may be absent on a fresh machine; update them first.
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
            if subprocess.run(command, env=env).returncode != 0:
                break
        path = shutil.which("wrk")
    if path is None:
        raise WrkMissing(INSTALL_HINT)
    return path


@dataclass(frozen=True)
class Load:
    """One wrk run: where to, how hard, for how long."""

    url: str
    w: int
    #: Makes this run's messages unique on a cluster that saw other runs.
    tag: str
    message_bytes: int
    seconds: int
    connections: int
    threads: int
    #: POSTs to send in all, then each wrk thread's connections stay idle
    #: until it is interrupted (``WrkRun.interrupt``); None: no limit.
    limit: int | None = None
    #: Messages per POST: 1 is the single-message form, more a batch append.
    batch: int = 1

    @property
    def env(self) -> dict[str, str]:
        """What post.lua reads of the environment: whether to count out LIMIT."""
        return {"BENCH_LIMITED": "1"} if self.limit is not None else {}

    def command(self, wrk: str) -> list[str]:
        args = [self.tag, str(self.w), str(self.message_bytes), str(self.batch)]
        if self.limit is not None:
            args += [str(self.limit), str(self.threads)]
        return [
            wrk, f"-t{self.threads}", f"-c{self.connections}", f"-d{self.seconds}s",
            f"--timeout={REQUEST_TIMEOUT_S}s", f"--script={SCRIPT}", self.url, "--", *args,
        ]


@dataclass(frozen=True)
class ReadLoad:
    """One wrk run of GET /messages?from=N&limit=``limit``, N at random in
    [0, ``span`` - ``limit``], at ``consistency`` (local: no parameter)."""

    url: str
    span: int
    limit: int
    consistency: str
    seconds: int
    connections: int
    threads: int
    #: What the result counts per request, and what the script reads of the
    #: environment (WrkRun reads both of any load).
    batch: int = 1
    env: dict = field(default_factory=dict)

    def command(self, wrk: str) -> list[str]:
        return [
            wrk, f"-t{self.threads}", f"-c{self.connections}", f"-d{self.seconds}s",
            f"--timeout={REQUEST_TIMEOUT_S}s", f"--script={READ_SCRIPT}", self.url, "--",
            str(self.span), str(self.limit), self.consistency,
        ]


@dataclass(frozen=True)
class WrkResult:
    seconds: float
    #: Responses received, whatever their status.
    responses: int
    #: POSTs written; some of the last may never be served, as wrk exits without reading them.
    sent: int
    #: connect, read, write, timeout (socket errors) and status (HTTP status > 399).
    errors: dict[str, int]
    #: p50, p90, p99, max, mean.
    latency_ms: dict[str, float]
    #: The Load's batch: every POST carried this many messages.
    messages_per_request: int

    @property
    def acknowledged(self) -> int:
        """POSTs answered with a success status."""
        return self.responses - self.errors["status"]

    @property
    def acknowledged_messages(self) -> int:
        """A batch is appended all or nothing: every message of an acknowledged POST."""
        return self.acknowledged * self.messages_per_request

    @property
    def sent_messages(self) -> int:
        return self.sent * self.messages_per_request

    @property
    def requests_per_s(self) -> float:
        return self.acknowledged / self.seconds if self.seconds else 0.0

    @property
    def messages_per_s(self) -> float:
        return self.requests_per_s * self.messages_per_request

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict:
        return {
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(self.requests_per_s, 1),
            "messages_per_request": self.messages_per_request,
            "messages_per_s": round(self.messages_per_s, 1),
            "responses": self.responses,
            "acknowledged": self.acknowledged,
            "sent": self.sent,
            "errors": self.errors,
            "latency_ms": self.latency_ms,
        }


class WrkRun:
    """A running wrk; a context manager that never leaves it running."""

    def __init__(self, wrk: str, load: Load | ReadLoad) -> None:
        self._command = load.command(wrk)
        self._env = {**os.environ, **load.env}
        self._seconds = load.seconds
        self._batch = load.batch
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "WrkRun":
        self._process = subprocess.Popen(
            self._command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self._env
        )
        return self

    def __exit__(self, *exc_info) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()

    def wait(self) -> WrkResult:
        """Wait for the run to end at its duration."""
        output, _ = self._process.communicate(timeout=self._seconds + REQUEST_TIMEOUT_S + 30)
        return parse(output, self._batch)

    def interrupt(self) -> WrkResult:
        """End the run now; on SIGINT wrk stops and still reports."""
        self._process.send_signal(signal.SIGINT)
        output, _ = self._process.communicate(timeout=REQUEST_TIMEOUT_S + 30)
        return parse(output, self._batch)


def run(wrk: str, load: Load | ReadLoad) -> WrkResult:
    with WrkRun(wrk, load) as running:
        return running.wait()


def parse(output: str, messages_per_request: int) -> WrkResult:
    match = _RESULT.search(output)
    if match is None:
        raise RuntimeError(f"wrk printed no BENCH_RESULT line:\n{output}")
    raw = json.loads(match.group(1))
    return WrkResult(
        seconds=raw["duration_us"] / 1e6,
        responses=raw["requests"],
        sent=raw["sent"],
        errors=raw["errors"],
        latency_ms={name: round(us / 1000, 2) for name, us in raw["latency_us"].items()},
        messages_per_request=messages_per_request,
    )
