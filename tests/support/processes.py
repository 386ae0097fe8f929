"""Real ``python -m primary`` / ``python -m secondary`` processes on 127.0.0.1.

Every process binds port 0 and, once ready, writes the addresses it got to
its PORT_FILE as JSON; the harness waits for that file and reads them from
it. A restarted node asks for the same ports again, as a restarted server would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import zmq

from tests.support.http import get_health
from tests.support.relay import Relay
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


class Node:
    def __init__(self, role: str, name: str, log_dir: Path, env: dict[str, str]) -> None:
        self.role = role
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.port_file = log_dir / f"{name}.ports.json"
        self.env = {
            "HTTP_HOST": "127.0.0.1", "HTTP_PORT": "0", "NODE_NAME": name,
            "PORT_FILE": str(self.port_file), **env,
        }
        if role == "secondary":
            self.env.setdefault("REPLICATION_BIND", "tcp://127.0.0.1:0")
        self.url: str | None = None
        self.replication_endpoint: str | None = None
        self.process: subprocess.Popen | None = None
        #: time.monotonic() of the last launch: what a start-up time counts from.
        self.started_at: float | None = None

    def start(self) -> "Node":
        """Launch the process; call ``wait_ready`` before using it."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "NO_COLOR": "1",
            "LOG_LEVEL": "INFO",
            "PYTHONDONTWRITEBYTECODE": "1",
            **self.env,
        }
        self.port_file.unlink(missing_ok=True)  # the next one is this start's
        with open(self.log_path, "ab") as log_file:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.role],
                cwd=REPO,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout: float = 20.0) -> "Node":
        def announced():
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            return self.port_file.exists()

        wait_until(announced, timeout, what=f"{self.name} to write its PORT_FILE")
        addresses = json.loads(self.port_file.read_text())
        self.url = addresses["http"]
        self.replication_endpoint = addresses.get("replication")
        wait_until(lambda: get_health(self.url), timeout, what=f"{self.name} /health")
        return self

    def restart(self) -> "Node":
        """Start again on the same ports (after ``stop`` or ``kill``)."""
        assert self.process is None or self.process.poll() is not None, "still running"
        self.env["HTTP_PORT"] = self.url.rsplit(":", 1)[1]
        if self.role == "secondary" or "PEERS" in self.env:  # a failover node binds whatever its role
            self.env["REPLICATION_BIND"] = self.replication_endpoint
        return self.start().wait_ready()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes().decode(errors="replace")

    def wait_for_log(self, pattern: str | re.Pattern, timeout: float = 10.0):
        """Wait until the log holds ``pattern``, a substring or a compiled
        regex; return the match (True for a substring). A node writes what it
        logs a little after the event, up to an interval's lines at a time
        (shared.runtime.logging_setup), so a test looks for a line until it is there."""
        def found():
            log = self.log()
            return pattern in log if isinstance(pattern, str) else pattern.search(log)

        return wait_until(found, timeout, what=f"{self.name}'s log to show {pattern!r}")


class Cluster:
    """One primary and named secondaries. ``down`` names secondaries that are
    configured in the primary but not running when it starts; ``relayed``
    names those the primary reaches through a fault-injecting Relay."""

    def __init__(
        self,
        log_dir: Path,
        secondaries: dict[str, dict[str, str]],
        primary_env: dict[str, str] | None = None,
        down: tuple[str, ...] = (),
        relayed: tuple[str, ...] = (),
        ctx: zmq.Context | None = None,
    ) -> None:
        self.secondaries = {
            name: Node("secondary", name, log_dir, env) for name, env in secondaries.items()
        }
        self.primary = Node("primary", "primary", log_dir, primary_env or {})
        self.relays: dict[str, Relay] = {}
        self._down = down
        self._relayed = relayed
        self._ctx = ctx

    def start(self) -> "Cluster":
        for node in self.secondaries.values():
            node.start()
        for node in self.secondaries.values():
            node.wait_ready()
        for name in self._down:
            self.secondaries[name].stop()
        endpoints = {name: node.replication_endpoint for name, node in self.secondaries.items()}
        for name in self._relayed:
            self.relays[name] = Relay(self._ctx, endpoints[name]).start()
            endpoints[name] = self.relays[name].endpoint
        self.primary.env["SECONDARIES"] = ",".join(f"{n}={e}" for n, e in endpoints.items())
        self.primary.start().wait_ready()
        return self

    @property
    def nodes(self) -> list[Node]:
        return [self.primary, *self.secondaries.values()]

    @property
    def urls(self) -> dict[str, str]:
        return {node.name: node.url for node in self.nodes}

    def __getitem__(self, name: str) -> Node:
        return self.primary if name == "primary" else self.secondaries[name]

    def shutdown(self) -> None:
        stop_all(self.nodes)
        for relay in self.relays.values():
            relay.stop()


def stop_all(nodes) -> None:
    """SIGTERM every node still running, paused ones too; SIGKILL one that does not stop."""
    for node in nodes:
        if node.running:
            node.resume()  # a paused process cannot act on SIGTERM
            try:
                node.stop(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
