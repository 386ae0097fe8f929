"""Helpers for the durability tests: clusters with a DATA_DIR per node, and
writers that outlive a crash.

Thread: ``Writers`` runs client threads of its own and records into a
History (thread-safe); everything else belongs to the test's thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

from tests.support.checker import UNKNOWN, History
from tests.support.http import get_health
from tests.support.waiting import wait_until

#: How long a writer that could not reach the primary waits before its next
#: call, as a client backs off: an outage then costs a bounded number of calls.
UNREACHABLE_BACKOFF_S = 0.05


def data_dir(tmp_path: Path, name: str) -> dict[str, str]:
    """The environment that gives node ``name`` a DATA_DIR of its own."""
    return {"DATA_DIR": str(tmp_path / name)}


def length(url: str) -> int:
    """The node's visible log length, from /health (cheaper than the whole list)."""
    return get_health(url)["length"]


def wait_for_length(url: str, at_least: int, timeout: float = 60.0) -> int:
    return wait_until(lambda: (n := length(url)) >= at_least and n, timeout,
                      what=f"{url} to show {at_least} messages")


class Writers:
    """``threads`` clients appending to ``url`` until stopped, with w = 1, 2, 3
    in turn, every call recorded in ``history``. Use as a context manager.
    A subclass decides where each call goes (``_one_call``)."""

    name = "writer"

    def __init__(self, history: History, url: str | None, threads: int = 8, ws=(1, 2, 3)) -> None:
        self._history = history
        self._url = url
        self._ws = ws
        self._calls = itertools.count()
        self._stop = threading.Event()
        self._failures: list[BaseException] = []
        self._threads = [threading.Thread(target=self._write, name=f"{self.name}-{i}", daemon=True)
                         for i in range(threads)]

    def __enter__(self) -> "Writers":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout: float = 90.0) -> None:
        """Let every call in flight finish, then stop; fails if one never does."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        assert not stuck, f"writers still waiting for an answer: {stuck}"
        assert not self._failures, f"a writer failed: {self._failures[0]!r}"

    def _write(self) -> None:
        try:
            while not self._stop.is_set():
                self._one_call(self._ws[next(self._calls) % len(self._ws)])
        except BaseException as exc:  # reported by stop(), not lost with the thread
            self._failures.append(exc)
            raise

    def _one_call(self, w) -> None:
        if self._history.append(self._url, w).outcome == UNKNOWN:
            self._stop.wait(UNREACHABLE_BACKOFF_S)

