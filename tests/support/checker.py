"""A consistency checker in the style of Jepsen histories.

While a workload runs, the History records every client call and its outcome
(ok, rejected, or unknown) and a Snapshotter reads every node's list again
and again. After the cluster has converged, ``check`` replays it all against
the guarantees:

- every acknowledged write, and every write the primary answered 504 for
  (appended, concern unconfirmed), is on every node after convergence, at the
  id the client was told;
- no node ever shows a duplicate, a gap or a reordering: every list a node
  ever showed is a prefix of the primary's final list;
- each node's list only grows (a restarted secondary starts again from empty);
- a rejected write (4xx, or a 503 that appended nothing) never appears.

Where a scenario promises less (a primary without a disk that crashes may
lose what only it held), ``check`` can be told so: ``may_lose`` names the
acknowledged writes that may be missing (if present, they must still sit at
their id), and ``unchecked`` names incarnations whose snapshots prove
nothing (a crashed in-memory primary's lists).

In the failover mode (``PEERS``) no node is the primary for good, and a
write acknowledged with less than a majority may be rolled back:
``check_failover`` holds the run to that mode's promises instead (see it).
The History records which node served each call (``Served-By``).

Messages must be unique per call; the workload helpers make them so.
Thread: History and Snapshotter are safe to use from many threads.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Container, Mapping

from tests.support.http import get_health, get_messages, post_message

OK, REJECTED, APPENDED, UNKNOWN = "ok", "rejected", "appended-unconfirmed", "unknown"


@dataclass
class Call:
    message: str
    w: object
    outcome: str | None = None
    status: int | None = None
    id: int | None = None
    #: The node the call was sent to (its URL), and the one that says it
    #: served it (the ``Served-By`` header; a failover node's name).
    sent_to: str | None = None
    served_by: str | None = None
    #: From a 201/200: how many nodes held it, and which.
    acks: int | None = None
    acked_by: list | None = None
    #: The answer's "error", if it has one.
    error: str | None = None
    #: time.monotonic() when the call was made and when its answer (or failure) came.
    started: float | None = None
    ended: float | None = None


class History:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self._counter = itertools.count()

    def append(self, url: str, w, prefix: str = "m", **fields) -> Call:
        """POST a unique message, record the call and its outcome."""
        call = Call(f"{prefix}-{next(self._counter)}", w, sent_to=url, started=time.monotonic())
        with self._lock:
            self.calls.append(call)
        try:
            resp = post_message(url, call.message, w=w, http_timeout=60, **fields)
        except (OSError, http.client.HTTPException):
            # The connection broke, perhaps mid-answer: it may or may not have landed.
            call.outcome, call.ended = UNKNOWN, time.monotonic()
            return call
        call.ended = time.monotonic()
        call.status = resp.status
        call.served_by = next((v for k, v in resp.headers.items() if k.lower() == "served-by"), None)
        try:
            body = resp.json
        except ValueError:  # a proxy's or a forwarding node's page, not the API's JSON
            body = None
        if not isinstance(body, dict):
            body = {}
        call.error = body.get("error")
        if resp.status in (200, 201) and "id" in body:
            call.outcome, call.id = OK, body["id"]
            call.acks, call.acked_by = body.get("acks"), body.get("acked_by")
        elif resp.status in (503, 504) and "id" in body:
            # Appended, and the write concern unconfirmed (a 504 of a forwarding
            # node that could not tell carries no id: below, unknown).
            call.outcome, call.id = APPENDED, body["id"]
        elif 400 <= resp.status < 500 or resp.status == 503:
            call.outcome = REJECTED
        else:  # 502, 504 without an id, a 2xx without one: its fate is unknown
            call.outcome = UNKNOWN
        return call

    def run(self, url: str, count: int, threads: int, w_for=lambda i: 1, prefix: str = "m") -> None:
        """``count`` appends from ``threads`` client threads; w chosen per call index."""
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: self.append(url, w_for(i), prefix), range(count)))

    def by_outcome(self, outcome: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.outcome == outcome]


class Snapshotter:
    """Reads every node's list over and over on a thread of its own.

    Each snapshot is filed under the node's incarnation (a secondary that
    restarts begins again from an empty log), read from /health just before
    and just after the list; a snapshot taken across a restart is dropped."""

    def __init__(self, urls: dict[str, str], interval: float = 0.05,
                 read: Callable[[str], list[str]] | None = None,
                 incarnation_of: Callable[[str, str], object] | None = None) -> None:
        """``read(url)``: what to snapshot (default GET /messages);
        ``incarnation_of(name, url)``: what a snapshot is filed under
        (default: the node's /health, as ``incarnation`` reads it)."""
        self._urls = urls
        self._interval = interval
        self._read = read or get_messages
        self._incarnation_of = incarnation_of or (lambda name, url: incarnation(url))
        self.snapshots: dict[str, list[tuple[str, list[str]]]] = {name: [] for name in urls}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapshotter", daemon=True)

    def __enter__(self) -> "Snapshotter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, url in self._urls.items():
                try:
                    before = self._incarnation_of(name, url)
                    messages = self._read(url)
                    if self._incarnation_of(name, url) == before:
                        self.snapshots[name].append((before, messages))
                except (OSError, http.client.HTTPException, AssertionError):
                    pass  # the node is down (or died mid-answer); that is part of the test
            self._stop.wait(self._interval)


def incarnation(url: str) -> str:
    """What a node's snapshots are filed under: a secondary's state, or the
    primary's run. A new one may start again from empty."""
    health = get_health(url)
    return health.get("incarnation") or f"{health['history']}/{health['run']}"


def check(history: History, snapshots: dict[str, list[tuple[str, list[str]]]],
          final: dict[str, list[str]],
          primary: str = "primary",
          may_lose: Callable[[Call], bool] = lambda call: False,
          unchecked: Mapping[str, Container[str]] | None = None) -> list[str]:
    """Every violation found, as readable lines; empty when all guarantees hold.

    ``may_lose(call)``: an acknowledged write the scenario allows to be lost.
    ``unchecked``: per node, the incarnations whose snapshots are not checked."""
    violations = []
    truth = final[primary]
    position = {message: index for index, message in enumerate(truth)}
    if len(position) != len(truth):
        violations.append(f"{primary} holds a message twice")
    for name, messages in final.items():
        if messages != truth:
            violations.append(f"{name} did not converge: {len(messages)} vs {len(truth)} messages")
    for call in history.by_outcome(OK) + history.by_outcome(APPENDED):
        if call.message not in position and may_lose(call):
            continue
        if position.get(call.message) != call.id:
            violations.append(f"{call.message} (w={call.w}, {call.status}) was given id {call.id} "
                              f"but sits at {position.get(call.message)}")
    for call in history.by_outcome(REJECTED):
        if call.message in position:
            violations.append(f"{call.message} was rejected ({call.status}) but appears")
    for name, seen in snapshots.items():
        previous: dict[str, list[str]] = {}  # by incarnation
        skipped = (unchecked or {}).get(name, ())
        for state, snapshot in seen:
            if state in skipped:
                continue
            if snapshot != truth[: len(snapshot)]:
                violations.append(f"{name} showed a list that is not a prefix of the primary's")
                break
            earlier = previous.get(state, [])
            if snapshot[: len(earlier)] != earlier:
                violations.append(f"{name}'s list shrank or changed: {len(earlier)} -> {len(snapshot)}")
                break
            previous[state] = snapshot
    return violations


def asks_majority(w, majority: int) -> bool:
    """Whether write concern ``w`` (a number, "majority" or "all") asks for a majority."""
    return w in ("majority", "all") or (isinstance(w, int) and w >= majority)


def check_failover(history: History,
                   committed_snapshots: dict[str, list[tuple[object, list[str]]]],
                   final: dict[str, list[str]],
                   majority: int,
                   snapshots: dict[str, list[tuple[object, list[str]]]] | None = None,
                   committed_final: dict[str, list[str]] | None = None,
                   others: Container[str] = ()) -> list[str]:
    """Every violation of the failover mode's promises, as readable lines;
    empty when they all hold. There is no fixed primary to hold the others
    to: every node's final list must be the same.

    - every call acknowledged (200/201) with w >= ``majority`` ("majority",
      "all", or a number) is in the final list at the id it was given, and
      its answer counted at least ``majority`` acks;
    - a call acknowledged with a smaller w, or answered with an id but not
      acknowledged (503 with an id, 504), may be missing (rolled back), but
      if present it sits at its id;
    - a call whose fate is unknown (502, a 504 without an id, a broken
      connection) may be present or not;
    - a rejected call (4xx, 503 without an id) is not there;
    - nothing is there twice, and nothing is there that no call (nor
      ``others``, messages a test wrote by other means) sent;
    - ``committed_snapshots`` (GET ?committed=true, by node, filed under an
      incarnation) are each a prefix of the final list, and within one
      incarnation of a node they only grow;
    - ``snapshots`` (GET /messages, which may show what is later rolled
      back), if given, never hold a duplicate or an invented message;
    - ``committed_final``, if given, is the final list on every node."""
    violations = []
    names = sorted(final)
    truth = max((final[name] for name in names), key=len)
    for name in names:
        if final[name] != truth:
            violations.append(f"{name} did not converge: {len(final[name])} vs {len(truth)} messages")
        if committed_final is not None and committed_final.get(name) != truth:
            violations.append(f"{name} has committed {len(committed_final.get(name) or [])} "
                              f"of {len(truth)} messages")
    position = {message: index for index, message in enumerate(truth)}
    if len(position) != len(truth):
        violations.append("the final list holds a message twice")
    with history._lock:
        calls = list(history.calls)
    sent = {call.message for call in calls}
    invented = [m for m in truth if m not in sent and m not in others]
    if invented:
        violations.append(f"{len(invented)} message(s) no call sent, e.g. {invented[:3]}")
    for call in calls:
        where = position.get(call.message)
        if call.outcome == OK and asks_majority(call.w, majority):
            if where != call.id:
                violations.append(f"{call.message} (w={call.w}, {call.status}, served by "
                                  f"{call.served_by}) was given id {call.id} but sits at {where}")
            if call.acks is not None and call.acks < majority:
                violations.append(f"{call.message} (w={call.w}) was acknowledged with {call.acks} acks")
        elif call.outcome in (OK, APPENDED):
            if where is not None and where != call.id:
                violations.append(f"{call.message} (w={call.w}, {call.status}) was given id {call.id} "
                                  f"but sits at {where}")
        elif call.outcome == REJECTED and where is not None:
            violations.append(f"{call.message} was rejected ({call.status}) but sits at {where}")
    for name, seen in sorted(committed_snapshots.items()):
        previous: dict[object, list[str]] = {}  # by incarnation
        for state, snapshot in seen:
            if snapshot != truth[: len(snapshot)]:
                violations.append(f"{name} showed a committed list of {len(snapshot)} that is not "
                                  f"a prefix of the final list")
                break
            earlier = previous.get(state, [])
            if len(snapshot) < len(earlier):
                violations.append(f"{name}'s committed list shrank: {len(earlier)} -> {len(snapshot)}")
                break
            previous[state] = snapshot
    for name, seen in sorted((snapshots or {}).items()):
        for _, snapshot in seen:
            if len(set(snapshot)) != len(snapshot):
                violations.append(f"{name} showed a list that holds a message twice")
                break
            strangers = [m for m in snapshot if m not in sent and m not in others]
            if strangers:
                violations.append(f"{name} showed message(s) no call sent, e.g. {strangers[:3]}")
                break
    return violations


def wait_for_convergence(urls: dict[str, str], timeout: float = 60.0) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        lists = {name: get_messages(url) for name, url in urls.items()}
        if all(v == lists["primary"] for v in lists.values()) or time.monotonic() > deadline:
            return lists
        time.sleep(0.1)
