"""Linearizable reads, proven by the history checker under faults.

Client threads append (``w=majority``) and read (``consistency=linearizable``)
through random nodes while a nemesis kills the primary, cuts it off, pauses
it and heals; every answer is recorded with its times and the whole history
is judged by tests/support/linearizability.py. The same workload reading
``consistency=local`` from a primary that was cut off, or from a secondary
that lags, must fail the checker: that shows the checker can see a stale read,
and that the linearizable level is what prevents them.

Real processes on 127.0.0.1 (tests/support/failover.py, tests/support/processes.py).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from typing import Callable
from urllib.parse import urlsplit

from tests.integration.test_failures import FAST_HEARTBEAT_ENV
from tests.support.failover import ELECTION_TIMEOUT_S, FailoverCluster
from tests.support.http import get_messages, request
from tests.support.linearizability import OK, LinearHistory, Read, check_linearizable
from tests.support.waiting import wait_until

#: How long a linearizable read may take to say it cannot be confirmed
#: (2 x ELECTION_TIMEOUT), with room for a loaded machine.
REFUSAL_DEADLINE_S = 2 * ELECTION_TIMEOUT_S + 1.5


class Workload:
    """Appender and reader threads recording into one LinearHistory until stopped.

    ``append_to`` and ``read_from`` pick a node's URL for each call (None:
    no node to ask just now). Readers read a small page near the end of the
    longest log any of them has seen, so each read says something about the
    latest appends. Each reader thread keeps its reads under its level, in
    ``reads_by_level``, so one run can be judged once per level.
    Thread: ``start``/``stop``/``wait_for`` from the test's; the rest are the workers'."""

    def __init__(self, history: LinearHistory, append_to: Callable[[], str | None],
                 read_from: dict[str, Callable[[], str | None]], appenders: int = 3,
                 readers_per_level: int = 3) -> None:
        self.history = history
        self._append_to = append_to
        self._read_from = read_from
        self._stop = threading.Event()
        self._longest = 0
        self._lock = threading.Lock()
        self.reads_by_level: dict[str, list[Read]] = {level: [] for level in read_from}
        self._threads = [threading.Thread(target=self._appender, name=f"appender-{i}", daemon=True)
                         for i in range(appenders)]
        self._threads += [threading.Thread(target=self._reader, args=(level,), name=f"reader-{level}-{i}",
                                           daemon=True)
                          for level in read_from for i in range(readers_per_level)]

    def start(self) -> "Workload":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self._threads), "a client thread hung"

    def acknowledged(self) -> int:
        return sum(append.outcome == OK for append in self.history.operations()[0])

    def wait_for(self, appends: int, reads: int = 0, levels: tuple[str, ...] | None = None,
                 timeout: float = 20.0, what: str = "") -> None:
        """Wait until ``appends`` more appends are acknowledged, and each of
        ``levels`` (default: all) has ``reads`` more reads, than when called."""
        levels = levels or tuple(self.reads_by_level)
        base_appends = self.acknowledged()
        base_reads = {level: len(self.reads_by_level[level]) for level in levels}

        def progressed() -> bool:
            return (self.acknowledged() >= base_appends + appends
                    and all(len(self.reads_by_level[level]) >= base_reads[level] + reads for level in levels))

        wait_until(progressed, timeout, what=what or f"{appends} appends and {reads} reads of each level")

    def _appender(self) -> None:
        while not self._stop.is_set():
            url = self._append_to()
            if url is None:
                self._stop.wait(0.05)
                continue
            append = self.history.append(url, w="majority", http_timeout=3)
            if append.outcome != OK:
                self._stop.wait(0.05)  # no primary just now: do not spin

    def _reader(self, level: str) -> None:
        while not self._stop.is_set():
            url = self._read_from[level]()
            if url is None:
                self._stop.wait(0.05)
                continue
            with self._lock:
                first = max(0, self._longest - 5)
            read = self.history.read(url, first=first, limit=20, consistency=level, http_timeout=4)
            if read is None:
                self._stop.wait(0.05)  # refused (503): ask again soon
                continue
            with self._lock:
                self._longest = max(self._longest, read.length)
                self.reads_by_level[level].append(read)

    def verdict(self, level: str, final_log: list[str]) -> list[str]:
        """The checker's violations for every append and the reads of ``level``."""
        appends, _ = self.history.operations()
        return check_linearizable(appends, self.reads_by_level[level], final_log)


def final_log(cluster: FailoverCluster) -> list[str]:
    """Every node running, healed and converged: the one list they hold."""
    cluster.heal()
    for name, node in cluster.nodes.items():
        if node.running:
            node.resume()
        else:
            cluster.restart(name)
    lists, committed = cluster.converge()
    assert len({tuple(log) for log in [*lists.values(), *committed.values()]}) == 1, "the nodes did not converge"
    return next(iter(lists.values()))


def any_of(urls: Callable[[], dict[str, str]]) -> Callable[[], str | None]:
    def pick() -> str | None:
        choices = list(urls().values())
        return random.choice(choices) if choices else None
    return pick


# -- failover mode --------------------------------------------------------------------------


def test_linearizable_reads_through_any_node_survive_kills_cuts_and_pauses(make_failover):
    cluster = make_failover()
    history = LinearHistory()
    workload = Workload(history, append_to=any_of(cluster.running_urls),
                        read_from={"linearizable": any_of(cluster.running_urls)}).start()
    try:
        workload.wait_for(10, 10, what="the workload to get going")
        # kill -9 of the primary, then its restart.
        victim = cluster.primary()
        cluster.kill(victim)
        cluster.primary(among=[n for n in cluster.names if n != victim])
        workload.wait_for(10, 10, what="progress after the kill")
        cluster.restart(victim)
        # The primary cut off from every other node (its HTTP still answers).
        victim = cluster.primary()
        cluster.isolate(victim)
        cluster.primary(among=[n for n in cluster.names if n != victim], followed=False)
        workload.wait_for(10, 10, what="progress while the old primary is cut off")
        cluster.heal()
        # The primary frozen (SIGSTOP) long enough to be replaced, then woken
        # while the reads sent to it meanwhile still wait for their answers.
        victim = cluster.primary()
        cluster[victim].pause()
        cluster.primary(among=[n for n in cluster.names if n != victim], followed=False)
        workload.wait_for(5, what="progress while the old primary is frozen")
        cluster[victim].resume()
        workload.wait_for(10, 10, what="progress after every fault is healed")
    finally:
        workload.stop()
    log = final_log(cluster)
    appends, reads = history.operations()
    assert workload.verdict("linearizable", log) == []
    # The history said something: reads by every node, of logs that grew.
    assert sum(append.outcome == OK for append in appends) >= 50
    served = Counter(read.node for read in reads)
    assert set(served) == set(cluster.names), served
    assert max(read.length for read in reads) >= 40


def test_a_primary_cut_off_serves_stale_local_reads_but_refuses_linearizable_ones(make_failover):
    cluster = make_failover()
    old = cluster.primary()
    majority_side = [n for n in cluster.names if n != old]
    cluster.isolate(old)
    cluster.primary(among=majority_side, followed=False)
    old_url = cluster[old].url
    # A linearizable read on the cut-off node is refused within 2 x ELECTION_TIMEOUT, with Retry-After.
    began = time.monotonic()
    refused = request("GET", f"{old_url}/messages?consistency=linearizable&from=0&limit=5", timeout=10)
    assert refused.status == 503 and refused.headers.get("Retry-After"), refused.body
    assert "error" in refused.json
    assert time.monotonic() - began <= REFUSAL_DEADLINE_S
    # Appends through the majority; reads at both levels from the node that was cut off.
    history = LinearHistory()
    workload = Workload(history, append_to=lambda: cluster[random.choice(majority_side)].url,
                        read_from={"local": lambda: old_url, "linearizable": lambda: old_url}).start()
    try:
        workload.wait_for(20, 10, levels=("local",),
                          what="appends through the majority and local reads of the cut-off node")
    finally:
        workload.stop()
    log = final_log(cluster)
    stale = workload.verdict("local", log)
    assert stale, "local reads of a primary that was cut off looked linearizable: the test proves nothing"
    assert any("a stale read" in violation for violation in stale), stale
    # The cut-off node never answered a linearizable read: it could not confirm one.
    assert workload.reads_by_level["linearizable"] == []
    assert workload.verdict("linearizable", log) == []


# -- the fixed roles -------------------------------------------------------------------------


def test_a_lagging_secondary_is_stale_locally_and_linearizable_when_asked(make_cluster, tmp_path):
    cluster = make_cluster({"fast": {}, "slow": {"REPLICATION_DELAY": "1"}}, primary_env=FAST_HEARTBEAT_ENV)
    slow, primary = cluster["slow"].url, cluster.primary.url
    history = LinearHistory()
    workload = Workload(history, append_to=lambda: primary,
                        read_from={"local": lambda: slow,
                                   "linearizable": lambda: random.choice([slow, primary])}).start()
    try:
        workload.wait_for(30, 10, what="appends, and reads of the slow secondary")
    finally:
        workload.stop()
    log = get_messages(primary)
    wait_until(lambda: all(get_messages(url) == log for url in cluster.urls.values()), 20,
               what="the slow secondary to catch up")
    assert workload.verdict("local", log), "local reads of a lagging secondary looked linearizable"
    assert workload.verdict("linearizable", log) == []
    linear = workload.reads_by_level["linearizable"]
    assert {read.node for read in linear} == {"primary", "slow"}
    # Each of those reads showed at least every append acknowledged before it began.
    appends, _ = history.operations()
    for read in linear:
        acknowledged = [a.id + len(a.messages) for a in appends if a.outcome == OK and a.end <= read.start]
        assert read.length >= max(acknowledged, default=0), read


def test_a_fixed_primary_without_a_quorum_refuses_linearizable_reads(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}}, primary_env=FAST_HEARTBEAT_ENV)
    url = cluster.primary.url
    assert request("POST", f"{url}/messages", b'{"message": "a", "w": 3}',
                   {"Content-Type": "application/json"}).status == 201
    cluster["s1"].stop()
    # One secondary and the primary are a quorum of three.
    answer = request("GET", f"{url}/messages?consistency=linearizable")
    assert answer.status == 200 and answer.json["messages"] == ["a"], answer.body
    cluster["s2"].stop()
    answer = request("GET", f"{url}/messages?consistency=linearizable", timeout=30)
    assert answer.status == 503 and answer.headers.get("Retry-After") and "error" in answer.json, answer.body
    # Local reads still answer with what the primary holds.
    assert get_messages(url) == ["a"]
    cluster["s2"].restart()
    wait_until(lambda: request("GET", f"{url}/messages?consistency=linearizable").status == 200, 20,
               what="linearizable reads to come back with a quorum")


def test_a_primary_woken_after_it_was_replaced_does_not_answer_from_its_old_term(make_failover):
    """A primary frozen, replaced and cut off while frozen wakes with a read
    waiting and a stale commit length: it must refuse, not answer from what
    it holds. (Its own check that a majority heard it within an election
    timeout already makes it step down as it wakes; the read index's round,
    which also covers a pause shorter than that, is shown in the simulation:
    tests/unit/test_raft_faults.py, ReadsWithoutConfirming.)"""
    cluster = make_failover()
    old = cluster.primary()
    others = [n for n in cluster.names if n != old]
    cluster[old].pause()
    new = cluster.primary(among=others, followed=False)
    acknowledged = request("POST", f"{cluster[new].url}/messages", b'{"message": "after", "w": "majority"}',
                           {"Content-Type": "application/json"})
    assert acknowledged.status == 201, acknowledged.body
    cluster.isolate(old)
    # The request is in the frozen node's socket buffer before it wakes.
    host, port = urlsplit(cluster[old].url).hostname, urlsplit(cluster[old].url).port
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request("GET", "/messages?consistency=linearizable")
    cluster[old].resume()
    answer = connection.getresponse()
    body = json.loads(answer.read())
    connection.close()
    assert answer.status == 503 or body["messages"] == ["after"], (answer.status, body)
