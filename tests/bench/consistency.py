"""After a load: does every secondary hold exactly the primary's list, once each?

A fast but wrong run is a failed run, so the benchmark checks every cluster
after every load: it waits, up to a deadline, until each secondary's list
equals the primary's, then looks for duplicates. It compares the lists
themselves, not only their lengths. On a log too large to read whole (a
store of millions of messages written directly), ``from_id`` compares
what follows that id only: what the loads appended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.bench.nodes import log_length
from tests.support.http import request
from tests.support.processes import Cluster

#: Time between two looks while the secondaries catch up.
POLL_S = 0.1


@dataclass(frozen=True)
class Consistency:
    converged: bool
    #: How long after the load the lists became equal (or the deadline passed).
    seconds: float
    #: Each node's log length at the last look.
    lengths: dict[str, int]
    #: Messages the primary's list holds more than once.
    duplicates: int
    #: What was wrong, for the report; empty when nothing was.
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.converged and self.duplicates == 0

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "converged": self.converged,
            "seconds": round(self.seconds, 3),
            "lengths": self.lengths,
            "duplicates": self.duplicates,
            "problem": self.problem,
        }


def wait_for_convergence(cluster: Cluster, timeout_s: float, from_id: int | None = None) -> Consistency:
    """``from_id``: compare the messages from that id on, not the whole retained list."""
    started = time.monotonic()

    def lists() -> dict[str, list[str]]:
        return {node.name: messages(node.url, from_id) for node in cluster.nodes}

    while True:
        # Lengths first: /health is cheap, a whole list is not.
        lengths = {node.name: log_length(node) for node in cluster.nodes}
        logs = None
        if len(set(lengths.values())) == 1:
            logs = lists()
            if all(each == logs["primary"] for each in logs.values()):
                return _verdict(logs["primary"], lengths, time.monotonic() - started)
        if time.monotonic() - started >= timeout_s:
            logs = logs or lists()
            duplicates = _duplicates(logs["primary"])
            problem = f"not converged after {timeout_s:g} s: {_mismatches(logs)}"
            return Consistency(
                converged=False,
                seconds=time.monotonic() - started,
                lengths={name: len(messages) for name, messages in logs.items()},
                duplicates=duplicates,
                problem=problem + (f"; {duplicates} duplicate messages" if duplicates else ""),
            )
        time.sleep(POLL_S)


def messages(url: str, from_id: int | None = None) -> list[str]:
    """The node's retained list, or its messages from ``from_id`` on (empty
    where retention dropped them: a node that has yet to drop them differs)."""
    response = request("GET", f"{url}/messages" + ("" if from_id is None else f"?from={from_id}"), timeout=120)
    if response.status == 410:
        return []
    assert response.status == 200, response.body[:200]
    return response.json["messages"]


def _verdict(messages: list[str], lengths: dict[str, int], seconds: float) -> Consistency:
    duplicates = _duplicates(messages)
    problem = f"{duplicates} duplicate messages" if duplicates else ""
    return Consistency(True, seconds, lengths, duplicates, problem)


def _duplicates(messages: list[str]) -> int:
    return len(messages) - len(set(messages))


def _mismatches(logs: dict[str, list[str]]) -> str:
    """Where each secondary's list first departs from the primary's."""
    primary = logs["primary"]
    notes = []
    for name, messages in logs.items():
        if name == "primary" or messages == primary:
            continue
        index = next(
            (i for i, (mine, theirs) in enumerate(zip(messages, primary)) if mine != theirs),
            min(len(messages), len(primary)),
        )
        notes.append(f"{name} holds {len(messages)} of {len(primary)}, first difference at index {index}")
    return "; ".join(notes)
