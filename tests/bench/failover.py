"""The failover cluster, and how long writes stop when its primary is killed or stopped.

A three-node failover cluster (PEERS, each node with a DATA_DIR, FSYNC=always,
the default ELECTION_TIMEOUT and HEARTBEAT_INTERVAL) under a steady load of
``w=majority`` appends from a few writer threads, sent round-robin to the
nodes that are up (a secondary forwards to the primary). The primary is
killed with SIGKILL (failover-kills), or stopped with SIGTERM, which hands
its role over first (failover-stops), ``times`` times, restarted each time
once a new primary took writes; per stop, the time from the signal to the
first ``201`` served by the new primary. At the end every acknowledged
append must sit, once, at the id it was given, on every node (a lost one, a
moved one or a duplicate is a failure, reported with the figures).

``failover_cluster`` is every failover scenario's cluster: the nodes need
each other's replication endpoints before they start, so their ports are
found by binding port 0 and letting go; a start that loses such a port to
another process is retried. It takes stores written beforehand
(``data_dirs``) and settings of its own (``env``).

``python -m tests.bench.failover [LOG_DIR [TIMES [kill|term]]]`` runs it
alone. Thread: the caller's, plus the writer threads it starts and joins.
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.bench import nodes
from tests.support.http import get_health, post_message, request
from tests.support.processes import Node

#: How the primary is stopped: the signal's name, and what is sent.
SIGNALS = {"kill": "SIGKILL", "term": "SIGTERM"}

NAMES = ("primary", "s1", "s2")
WRITERS = 4
#: An append's own timeout: past it, the append's fate is unknown to its writer.
APPEND_TIMEOUT_S = 5.0
#: Longest a kill may take to recover before the run gives up on it.
RECOVERY_DEADLINE_S = 30.0
CONVERGENCE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Kill:
    killed: str
    term_before: int
    new_primary: str
    term_after: int
    recovery_s: float  # from SIGKILL to the first 201 served by the new primary

    def to_json(self) -> dict:
        return {"killed": self.killed, "term_before": self.term_before, "new_primary": self.new_primary,
                "term_after": self.term_after, "recovery_s": round(self.recovery_s, 3)}


@dataclass
class Failover:
    kills: list[Kill]
    acknowledged: int  # appends answered 201
    problems: list[str] = field(default_factory=list)  # lost, moved, duplicated, not converged
    signal: str = "SIGKILL"  # how the primary was stopped

    @property
    def median_s(self) -> float:
        return statistics.median(k.recovery_s for k in self.kills)

    @property
    def max_s(self) -> float:
        return max(k.recovery_s for k in self.kills)

    def to_json(self) -> dict:
        return {"signal": self.signal, "kills": [k.to_json() for k in self.kills],
                "acknowledged": self.acknowledged,
                "median_s": round(self.median_s, 3), "max_s": round(self.max_s, 3),
                "problems": self.problems}


@dataclass(frozen=True)
class FailoverNodes:
    """The cluster's processes, by name; ``nodes`` as tests.bench.consistency reads them."""

    nodes: list[Node]
    #: Each node's first start: from its launch to /health 200, in seconds.
    ready_s: dict[str, float] = field(default_factory=dict)

    @property
    def primary(self) -> Node:
        """The node named primary: a fresh cluster's first primary (it stands at once)."""
        return self["primary"]

    def __getitem__(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def items(self):
        return ((node.name, node) for node in self.nodes)

    def values(self) -> list[Node]:
        return self.nodes


@dataclass(frozen=True)
class _Answer:
    message: str
    at: float
    status: int | None
    served_by: str | None
    id: int | None


class _Writers:
    """Threads that append ``w=majority`` to the nodes that are up, and keep every answer."""

    def __init__(self, cluster: FailoverNodes) -> None:
        self._cluster = cluster
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[_Answer] = []
        self._counter = itertools.count()
        self._threads = [threading.Thread(target=self._run, args=(n,), name=f"bench-writer-{n}",
                                          daemon=True) for n in range(WRITERS)]

    def __enter__(self) -> "_Writers":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(APPEND_TIMEOUT_S + 30)

    def first_201_after(self, since: float, not_from: str) -> _Answer | None:
        with self._lock:
            return next((a for a in self.answers if a.at > since and a.status == 201
                         and a.served_by not in (None, not_from)), None)

    def _run(self, index: int) -> None:
        for turn in itertools.count(index):
            if self._stop.is_set():
                return
            up = [node for node in self._cluster.values() if node.running]
            node = up[turn % len(up)]
            message = f"failover-{next(self._counter)}"
            try:
                response = post_message(node.url, message, w="majority", timeout=APPEND_TIMEOUT_S,
                                        http_timeout=APPEND_TIMEOUT_S + 10)
                body = response.json
                answer = _Answer(message, time.monotonic(), response.status,
                                 response.headers.get("Served-By"), body.get("id") if isinstance(body, dict) else None)
            except (OSError, http.client.HTTPException, ValueError):
                answer = _Answer(message, time.monotonic(), None, None, None)
            with self._lock:
                self.answers.append(answer)
            if answer.status != 201:
                self._stop.wait(0.01)  # no primary yet: do not spin on a node that says so


def run(log_dir: Path, kills: int = 10, how: str = "kill") -> Failover:
    """``kills`` stops of the primary, by SIGKILL (``how`` "kill") or SIGTERM ("term")."""
    with failover_cluster(log_dir) as cluster:
        primary = wait_for_primary(cluster)
        # Every node caught up once: before that, a node started empty votes only
        # for an empty log (README: replacing a node), and a kill could stall the
        # cluster until the first primary returns.
        wait_caught_up(cluster, "every node to follow the primary")
        done: list[Kill] = []
        with _Writers(cluster) as writers:
            for _ in range(kills):
                term_before = get_health(cluster[primary].url)["term"]
                killed_at = time.monotonic()
                if how == "kill":
                    cluster[primary].kill()
                else:  # returns once it exited: the writers noted every answer meanwhile
                    cluster[primary].stop(timeout=RECOVERY_DEADLINE_S)
                answer = wait(lambda: writers.first_201_after(killed_at, primary), RECOVERY_DEADLINE_S,
                              f"a 201 from a new primary after {SIGNALS[how]} to {primary}")
                new_primary = answer.served_by
                done.append(Kill(primary, term_before, new_primary,
                                 get_health(cluster[new_primary].url)["term"], answer.at - killed_at))
                cluster[primary].restart()
                wait_caught_up(cluster, "the restarted node to catch up")
                primary = new_primary
        final = _converged(cluster)
        ok = [a for a in writers.answers if a.status == 201]
        return Failover(done, len(ok), _check(ok, final), SIGNALS[how])


@contextmanager
def failover_cluster(log_dir: Path, data_dirs: dict[str, Path] | None = None,
                     env: dict[str, str] | None = None) -> Iterator[FailoverNodes]:
    """Three failover nodes, ``primary`` first to stand on a fresh cluster;
    stopped when the block ends. Each node's DATA_DIR is fresh, or the one
    ``data_dirs`` names (left as it is); ``env``: settings of every node.
    Each node's ready time (launch to /health 200) is in ``ready_s``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count(1):
        replication = dict(zip(NAMES, _free_ports(len(NAMES))))
        peers = ",".join(f"{name}=tcp://127.0.0.1:{port}" for name, port in replication.items())
        cluster = FailoverNodes([
            nodes.node("primary" if name == "primary" else "secondary", name, log_dir, {
                "PEERS": peers, "REPLICATION_BIND": f"tcp://127.0.0.1:{replication[name]}",
                "ADVERTISED_URL": "http://127.0.0.1:0", "HTTP_THREADS": str(nodes.HTTP_THREADS),
                **(nodes.durable_env(log_dir, f"{name}-{attempt}") if data_dirs is None else
                   {"DATA_DIR": str(data_dirs[name]), "FSYNC": "always"}),
                **(env or {}),
            })
            for name in NAMES
        ])
        try:
            for node in cluster.values():
                node.start()
            cluster.ready_s.update(nodes.ready_times(cluster.values()))
            break
        except AssertionError:  # a node exited: most likely, a port was taken meanwhile
            nodes.kill_all(cluster.values())
            if attempt == 3:
                raise
    try:
        yield cluster
    finally:
        # Nothing is measured at the end: SIGKILL spares each primary's hand-over (up to
        # an election timeout each) on the way out.
        nodes.kill_all(cluster.values())


def wait_for_primary(cluster: FailoverNodes) -> str:
    """The name of the node that says it is primary, once one does."""
    def primary() -> str | None:
        roles = {name: _health(node) for name, node in cluster.items() if node.running}
        return next((name for name, h in roles.items() if h and h["role"] == "primary"), None)

    return wait(primary, RECOVERY_DEADLINE_S, "a primary")


def wait_caught_up(cluster: FailoverNodes, what: str) -> None:
    """Wait until every node follows the same primary in the same term, says it
    is caught up (where /health says: this engine's), and has committed at
    least what the most advanced node had committed when the wait began:
    a condition that holds for good once met, however fast writers append
    meanwhile (equal commit lengths on every node at one instant would not)."""
    target = max((h["committed"] for h in map(_health, cluster.values()) if h), default=0)
    wait(lambda: caught_up(cluster, target), CONVERGENCE_TIMEOUT_S, what)


def caught_up(cluster: FailoverNodes, committed: int = 0) -> bool:
    """Every node follows the same primary in the same term, is caught up (if
    its /health says), and has committed at least ``committed`` messages."""
    healths = [_health(node) for node in cluster.values()]
    return (all(healths) and len({(h["term"], h["primary"]) for h in healths}) == 1
            and all(h["primary"] and h.get("caught_up", True) and h["committed"] >= committed
                    for h in healths))


def _converged(cluster: FailoverNodes) -> dict[str, list[str]]:
    def lists():
        committed = {name: _messages(node, committed=True) for name, node in cluster.items()}
        held = {name: _messages(node) for name, node in cluster.items()}
        values = list(committed.values()) + list(held.values())
        return committed if all(v == values[0] for v in values) else None

    found = None
    deadline = time.monotonic() + CONVERGENCE_TIMEOUT_S
    while found is None and time.monotonic() < deadline:
        found = lists()
        if found is None:
            time.sleep(0.2)
    return found or {name: _messages(node) for name, node in cluster.items()}


def _check(acknowledged: list[_Answer], final: dict[str, list[str]]) -> list[str]:
    problems = []
    lists = list(final.values())
    if any(other != lists[0] for other in lists):
        problems.append("the nodes did not converge: " + ", ".join(f"{n} {len(v)}" for n, v in final.items()))
    truth = lists[0]
    position = {message: index for index, message in enumerate(truth)}
    if len(position) != len(truth):
        problems.append("a message is held twice")
    for answer in acknowledged:
        if position.get(answer.message) != answer.id:
            problems.append(f"{answer.message} was acknowledged at id {answer.id} but sits at "
                            f"{position.get(answer.message)}")
    return problems


def _messages(node: Node, committed: bool = False) -> list[str]:
    response = request("GET", f"{node.url}/messages" + ("?committed=true" if committed else ""), timeout=30)
    return json.loads(response.body)["messages"]


def _health(node: Node) -> dict | None:
    try:
        return get_health(node.url)
    except (OSError, http.client.HTTPException, AssertionError):
        return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    try:
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait(condition, timeout: float, what: str):
    """Poll ``condition`` every 10 ms until it returns something truthy; RuntimeError past ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


if __name__ == "__main__":
    result = run(Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results/failover-logs"),
                 kills=int(sys.argv[2]) if len(sys.argv) > 2 else 10,
                 how=sys.argv[3] if len(sys.argv) > 3 else "kill")
    print(json.dumps(result.to_json(), indent=2))
