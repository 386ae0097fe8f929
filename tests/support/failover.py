"""A failover cluster (``PEERS``) of real processes on 127.0.0.1, for tests.

N nodes, named n1..nN, each ``python -m secondary`` (or ``primary``) with a
DATA_DIR of its own under the test's directory. Every ordered pair of nodes
(source, target) has a TcpRelay of its own: the source's PEERS lists, for
the target, that relay's endpoint, and the relay carries to the target's
replication port. So any link can be cut, in both directions at once
(``cut``), and any node cut off from all the others (``isolate``), while
every process keeps running. A cut closes the link's connections and
refuses new ones, so the nodes see connections fail, not frames silently
lost (tests/support/relay.py drops frames, but it sits on zmq). The relays
are made before the nodes, which bind port 0: each relay learns its target
once that node has written its PORT_FILE, and closes what it accepts until
then. A restarted node binds the same ports again, so the relays to it
need nothing new.

HTTP is not relayed: a test talks to every node directly, and a node
forwards appends straight to the primary's ADVERTISED_URL. A cut is a cut
of the replication channel only.

``primary()`` waits, with a deadline, until exactly one node of the highest
term that the running nodes report claims to be primary (and, by default,
the others follow it), and fails at once if two nodes are ever seen claiming
the same term. ``converge()`` waits until every node holds the same list and
has committed all of it. ``FailoverWriters`` are clients that write to any
node, or follow the primary by the ``Served-By`` header.

Thread: the test's, except ``urls``, ``running_urls`` and ``incarnation``,
which writers and snapshotters read from their own threads.
"""

from __future__ import annotations

import http.client
import itertools
import time
from pathlib import Path
from typing import Callable, Iterable

from tests.support.checker import OK, REJECTED, UNKNOWN, Call, History, asks_majority
from tests.support.durability import Writers
from tests.support.http import get_health, get_messages, request
from tests.support.processes import Node, stop_all
from tests.support.tcp_relay import TcpRelay
from tests.support.waiting import wait_until

#: Short timeouts for tests: a failover takes about a second.
FAST_FAILOVER_ENV = {"ELECTION_TIMEOUT": "0.5", "HEARTBEAT_INTERVAL": "0.05"}
ELECTION_TIMEOUT_S = float(FAST_FAILOVER_ENV["ELECTION_TIMEOUT"])

HTTP_ERRORS = (OSError, http.client.HTTPException)


def get_committed(url: str) -> list[str]:
    """The committed prefix a node shows: ``GET /messages?committed=true``."""
    resp = request("GET", f"{url}/messages?committed=true", timeout=10)
    assert resp.status == 200, resp.body
    return resp.json["messages"]


def health_or_none(url: str) -> dict | None:
    """/health, or None when the node does not answer (down, or dying)."""
    try:
        return get_health(url)
    except (*HTTP_ERRORS, AssertionError):
        return None


class FailoverCluster:
    def __init__(self, log_dir: Path, size: int = 3, env: dict[str, str] | None = None,
                 node_env: dict[str, dict[str, str]] | None = None,
                 roles: dict[str, str] | None = None, record: bool = False) -> None:
        """``env``: for every node, over FAST_FAILOVER_ENV; ``node_env``: per
        node name, over that; ``roles``: the module a node runs (default
        ``secondary``); ``record``: the relays keep what they carry."""
        log_dir.mkdir(parents=True, exist_ok=True)
        self.names = [f"n{i}" for i in range(1, size + 1)]
        self.majority = size // 2 + 1
        self.relays = {(a, b): TcpRelay(name=f"relay-{a}-{b}", record=record)
                       for a in self.names for b in self.names if a != b}
        self.nodes: dict[str, Node] = {}
        for name in self.names:
            self.nodes[name] = Node((roles or {}).get(name, "secondary"), name, log_dir, {
                "DATA_DIR": str(log_dir / f"{name}-data"),
                "REPLICATION_BIND": "tcp://127.0.0.1:0",
                "ADVERTISED_URL": "http://127.0.0.1:0",
                **FAST_FAILOVER_ENV, **(env or {}), **(node_env or {}).get(name, {}),
            })
        #: term -> the node seen claiming to be primary in it.
        self.primaries_by_term: dict[int, str] = {}

    # -- lifecycle ----------------------------------------------------------------

    def start(self, wait_for_primary: bool = True) -> "FailoverCluster":
        """Start the relays, then every node; by default, wait for a primary."""
        for relay in self.relays.values():
            relay.start()
        for name, node in self.nodes.items():
            node.env["PEERS"] = self.peers_of(name)
        for node in self.nodes.values():
            node.start()
        for name in self.names:
            self._ready(name)
        if wait_for_primary:
            self.primary()
        return self

    def peers_of(self, name: str) -> str:
        """The PEERS of node ``name``: its own entry is its bind address (it
        dials no one there), each other one the relay it dials that node by."""
        def endpoint(peer: str) -> str:
            if peer == name:
                return self.nodes[name].env["REPLICATION_BIND"]
            return self.relays[(name, peer)].endpoint

        return ",".join(f"{peer}={endpoint(peer)}" for peer in self.names)

    def _ready(self, name: str) -> Node:
        node = self.nodes[name].wait_ready()
        for (source, target), relay in self.relays.items():
            if target == name:
                relay.set_target(node.replication_endpoint)
        return node

    def kill(self, name: str) -> None:
        """SIGKILL: no chance to write or say anything more."""
        self.nodes[name].kill()

    def stop(self, name: str) -> int:
        return self.nodes[name].stop()

    def restart(self, name: str) -> Node:
        """Start a killed or stopped node again: the same ports, DATA_DIR and PEERS."""
        return self.nodes[name].restart()

    def shutdown(self) -> None:
        stop_all(self.nodes.values())
        for relay in self.relays.values():
            relay.stop()

    # -- partitions ------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Cut the replication link between ``a`` and ``b``, both ways."""
        self.relays[(a, b)].block()
        self.relays[(b, a)].block()

    def isolate(self, name: str) -> None:
        """Cut ``name`` off from every other node (it keeps running)."""
        for other in self.names:
            if other != name:
                self.cut(name, other)

    def heal(self) -> None:
        """Every link up again."""
        for relay in self.relays.values():
            relay.unblock()

    # -- looking at it ------------------------------------------------------------------

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    @property
    def urls(self) -> dict[str, str]:
        return {name: node.url for name, node in self.nodes.items()}

    def running_urls(self) -> dict[str, str]:
        return {name: node.url for name, node in self.nodes.items() if node.running}

    def incarnation(self, name: str) -> float | None:
        """What tells one run of a node from the next: when it was launched."""
        return self.nodes[name].started_at

    def health(self, name: str) -> dict:
        return get_health(self.nodes[name].url)

    def healths(self, among: Iterable[str] | None = None) -> dict[str, dict]:
        """/health of every running node (of ``among``) that answers."""
        found = {}
        for name in among or self.names:
            node = self.nodes[name]
            if node.running and (health := health_or_none(node.url)) is not None:
                found[name] = health
                self._note_claim(name, health)
        return found

    def _note_claim(self, name: str, health: dict) -> None:
        if health["role"] != "primary":
            return
        earlier = self.primaries_by_term.setdefault(health["term"], name)
        assert earlier == name, f"two primaries in term {health['term']}: {earlier} and {name}"

    def primary(self, timeout: float = 15.0, among: Iterable[str] | None = None,
                above_term: int | None = None, followed: bool = True) -> str:
        """The name of the one node of the highest term (among the running
        nodes of ``among``, above ``above_term``) that says it is primary;
        waits until there is one and, if ``followed``, until every other
        of them that answers follows it in that term (so that an append
        sent to any of them is forwarded to it)."""
        among = list(among or self.names)

        def elected():
            healths = self.healths(among)
            if not healths:
                return None
            top = max(h["term"] for h in healths.values())
            claims = [n for n, h in healths.items() if h["role"] == "primary" and h["term"] == top]
            if len(claims) != 1 or (above_term is not None and top <= above_term):
                return None
            if followed and any((h["primary"], h["term"]) != (claims[0], top) for h in healths.values()):
                return None
            return claims[0]

        try:
            return wait_until(elected, timeout, interval=0.02, what=f"one primary among {among}"
                              + (f" above term {above_term}" if above_term is not None else ""))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; they said: {self.roles(among)}") from None

    def roles(self, among: Iterable[str] | None = None) -> dict[str, str]:
        """Each node's role, term and primary as /health says, for failure messages."""
        said = {}
        for name in among or self.names:
            node = self.nodes[name]
            health = health_or_none(node.url) if node.running else None
            said[name] = ("down" if not node.running else "no answer" if health is None else
                          f"{health['role']} of term {health['term']}, primary {health['primary']}, "
                          f"{health['committed']}/{health['length']} committed")
        return said

    def term(self, name: str) -> int:
        return self.health(name)["term"]

    def secondaries(self, primary: str) -> list[str]:
        return [name for name in self.names if name != primary]

    def converge(self, timeout: float = 30.0, among: Iterable[str] | None = None
                 ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Wait until every node (of ``among``) holds the same list and shows
        all of it as committed; return (lists, committed lists), as they are
        at the deadline if it passes (the checker says what is wrong)."""
        among = list(among or self.names)
        deadline = time.monotonic() + timeout
        while True:
            lists, committed = {}, {}
            try:
                for name in among:
                    lists[name] = get_messages(self.nodes[name].url)
                    committed[name] = get_committed(self.nodes[name].url)
            except (*HTTP_ERRORS, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            first = lists[among[0]]
            same = all(v == first for v in [*lists.values(), *committed.values()])
            if same or time.monotonic() > deadline:
                return lists, committed
            time.sleep(0.05)

    def wait_caught_up(self, name: str, primary: str, timeout: float = 20.0) -> int:
        """Until ``name`` holds and has committed as many messages as ``primary`` holds."""
        def caught_up():
            target = health_or_none(self.nodes[primary].url)
            mine = health_or_none(self.nodes[name].url)
            return bool(target and mine and mine["length"] == target["length"]
                        and mine["committed"] == mine["length"])

        wait_until(caught_up, timeout, what=f"{name} to catch up with {primary}")
        return self.health(name)["length"]


class FailoverWriters(Writers):
    """``threads`` clients appending until stopped, each call recorded in
    ``history``: w cycles through ``ws``, each call carries ``fields`` (a
    ``timeout``, say). ``spread``: each call goes to the next running node,
    whatever its role; otherwise to the node that served the last
    acknowledged call (the primary, as a client that follows Served-By
    would), or the next running node while none did. A call refused or
    unanswered is followed by a short back-off, as a client's would be.
    Use as a context manager."""

    BACKOFF_S = 0.05
    name = "failover-writer"

    def __init__(self, history: History, cluster: FailoverCluster, threads: int = 6,
                 ws=(1, 2, "all"), spread: bool = True, **fields) -> None:
        super().__init__(history, None, threads, ws)
        self._cluster = cluster
        self._spread = spread
        self._fields = fields
        self._turn = itertools.count()
        self._leader: str | None = None

    def _target(self) -> str | None:
        urls = self._cluster.running_urls()
        leader = self._leader
        if not self._spread and leader in urls:
            return urls[leader]
        if not urls:
            return None
        names = sorted(urls)
        return urls[names[next(self._turn) % len(names)]]

    def _one_call(self, w) -> None:
        url = self._target()
        if url is None:
            self._stop.wait(self.BACKOFF_S)
            return
        call = self._history.append(url, w, **self._fields)
        if call.outcome == OK and call.served_by:
            self._leader = call.served_by
        elif call.outcome in (UNKNOWN, REJECTED):
            self._leader = None
            self._stop.wait(self.BACKOFF_S)


def majority_acks(history: History, majority: int, since: float = 0.0) -> list[Call]:
    """The calls acknowledged with a majority write concern that were made after ``since``."""
    return [c for c in history.by_outcome(OK)
            if asks_majority(c.w, majority) and c.started is not None and c.started >= since]


def wait_for_majority_acks(history: History, majority: int, count: int, since: float,
                           timeout: float = 20.0) -> int:
    """Until ``count`` calls made after ``since`` were acknowledged with w >= majority."""
    return wait_until(lambda: (n := len(majority_acks(history, majority, since))) >= count and n,
                      timeout, what=f"{count} majority-acknowledged appends")


def wait_role(cluster: FailoverCluster, name: str, test: Callable[[dict], bool], timeout: float,
              what: str) -> dict:
    """Until ``name``'s /health passes ``test``; returns that /health."""
    return wait_until(lambda: (h := health_or_none(cluster[name].url)) is not None and test(h) and h,
                      timeout, what=f"{name} {what}")
