"""GET /messages on any node: the whole log, a page, or a tail that waits; at a consistency level.

- no ``from``, ``limit`` or ``wait``: every retained message,
  ``{"messages": [...], "first_id": F}``, streamed;
- ``from=N`` (0 when only ``limit`` or ``wait`` is given) and maybe
  ``limit=M``: a page, ``{"messages": [...], "from": N, "next": N +
  returned, "length": L}`` (L: the id after the last message shown);
- ``wait=S`` (with ``from``): if nothing is shown at ``from`` or beyond
  yet, wait up to S seconds for it (a long poll, like Kafka's fetch with
  ``fetch.max.wait.ms``); then answer as for a page, maybe empty;
- ``consistency`` says what the answer reflects:
  ``local`` (the default): what this node holds, which on a secondary may
  lag, and may include a dead primary's tail that the next one overwrites;
  ``committed`` (or ``committed=true``, kept as an alias, which asks for at
  least ``committed``): only what a majority holds, which no failover rolls back, though it may lag;
  ``linearizable``: every append committed before the read began, on
  whichever node answers, never going back (Raft's read index, thesis
  §6.4: the primary confirms with a majority that it still is primary; a
  secondary asks it). A node that cannot confirm in time (no primary, no
  majority, an election) answers 503 with Retry-After, never a stale answer.

A read below what retention kept is ``410 Gone`` with ``first_id``, never
a silent jump to what is left, and so is a tail whose position retention
passes while it waits. A page is found by index, so it costs the same at
any offset. Reads without ``limit`` are whole-log reads, under
``LogReads``' cap; waiting readers hold one of ``max_waiting`` slots or get
a 503 at once, so tails never take the threads that appends, plain reads
and /health need. Every answer names the node that gave it in ``Served-By``.

Thread: any Waitress worker.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Mapping

import bottle

from shared.log.node_log import Gone, NodeLog
from shared.web.http import LogReads, json_error, json_response, streamed_json

#: The longest a tailing read may wait, in seconds.
MAX_WAIT_S = 60.0
#: The largest ``from`` or ``limit``: JSON numbers stay exact below 2**53.
MAX_ID = 2**53
LOCAL, COMMITTED, LINEARIZABLE = "local", "committed", "linearizable"
LEVELS = (LOCAL, COMMITTED, LINEARIZABLE)
_PARAMETERS = ("from", "limit", "wait", "consistency", "committed")


class BadRead(ValueError):
    """A query that does not follow the rules above; str(error) says why."""


@dataclass(frozen=True)
class ReadRequest:
    start: int | None  # None: the whole retained log
    limit: int | None = None
    wait: float | None = None
    consistency: str = LOCAL


def parse_read(query: Mapping[str, str]) -> ReadRequest:
    """The read a query asks for. Raises BadRead."""
    unknown = sorted(set(query) - set(_PARAMETERS))
    if unknown:
        raise BadRead(f"unknown query parameter(s) {', '.join(map(repr, unknown))}; "
                      f"allowed: {', '.join(_PARAMETERS)}")
    consistency = _level(query)
    if not set(query) & {"from", "limit", "wait"}:
        return ReadRequest(None, consistency=consistency)
    start = _whole_number(query, "from", minimum=0) if "from" in query else 0
    limit = _whole_number(query, "limit", minimum=1) if "limit" in query else None
    wait = _seconds(query["wait"]) if "wait" in query else None
    return ReadRequest(start, limit, wait, consistency)


class Reads:
    """Serves GET /messages for one app. ``confirm`` makes a read linearizable:
    it blocks until this node holds, committed, every append committed before
    it was called, and returns True; False if that cannot be had in time.
    ``settled`` is called before every read, and returns once the log shows
    every append the node already answered (shared.node.proposals)."""

    def __init__(self, log: NodeLog, log_reads: LogReads, max_waiting: int, served_by: str,
                 confirm: Callable[[], bool], settled: Callable[[], object],
                 counted: Callable[[str], None] = lambda _level: None) -> None:
        self._log = log
        self._settled = settled
        self._served_by = served_by
        self._confirm = confirm
        self._counted = counted
        self._log_reads = log_reads
        self.max_waiting = max_waiting
        self._waiting = threading.BoundedSemaphore(max_waiting)

    def serve(self, query: Mapping[str, str]) -> bottle.HTTPResponse:
        """The answer, naming this node in ``Served-By`` (which node a balancer chose)."""
        answer = self._answer(query)
        answer.set_header("Served-By", self._served_by)
        return answer

    def _answer(self, query: Mapping[str, str]) -> bottle.HTTPResponse:
        try:
            read = parse_read(query)
        except BadRead as exc:
            return json_error(400, str(exc))
        self._counted(read.consistency)
        if read.consistency == LINEARIZABLE and not self._confirm():
            return json_error(503, "cannot confirm a linearizable read now: no primary, or it cannot "
                                   "reach a majority; retry later", {"Retry-After": "1"})
        committed = read.consistency != LOCAL
        self._settled()
        try:
            return self._serve(read, committed)
        except Gone as gone:
            return json_response(410, {"error": f"messages before id {gone.first_id} were dropped by "
                                                f"retention; read from {gone.first_id} on",
                                       "first_id": gone.first_id})

    def _serve(self, read: ReadRequest, committed: bool) -> bottle.HTTPResponse:
        if read.start is None:
            return self._log_reads.serve(*self._log.messages_document(committed))
        if read.wait is not None and self._log.shown(committed) <= read.start:
            if not self._waiting.acquire(blocking=False):
                return json_error(503, f"busy: {self.max_waiting} readers are already waiting "
                                       "(MAX_WAITING_READS); retry later", {"Retry-After": "1"})
            try:
                self._log.wait_for(read.start, read.wait, committed)
            finally:
                self._waiting.release()
        document = self._log.page_document(read.start, read.limit, committed)
        if read.limit is None:  # everything from ``start`` on: as big as the whole log
            return self._log_reads.serve(*document)
        return streamed_json(*document)


def _level(query: Mapping[str, str]) -> str:
    """The level asked for. ``committed=true`` (the older spelling) asks for
    at least ``committed``: with ``consistency`` too, the stronger of the two."""
    level = LOCAL
    if "consistency" in query:
        level = query["consistency"]
        if level not in LEVELS:
            raise BadRead(f"'consistency' must be one of {', '.join(LEVELS)}, got {level[:40]!r}")
    if "committed" in query and _flag(query, "committed") and level == LOCAL:
        level = COMMITTED
    return level


def _whole_number(query: Mapping[str, str], name: str, minimum: int) -> int:
    raw = query[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 20:
        raise BadRead(f"'{name}' must be a whole number, got {raw[:40]!r}")
    value = int(raw)
    if not minimum <= value <= MAX_ID:
        raise BadRead(f"'{name}' must be at least {minimum} and at most 2**53, got {value}")
    return value


def _flag(query: Mapping[str, str], name: str) -> bool:
    raw = query[name]
    if raw not in ("true", "false"):
        raise BadRead(f"'{name}' must be true or false, got {raw[:40]!r}")
    return raw == "true"


def _seconds(raw: str) -> float:
    try:
        value = float(raw) if len(raw) <= 32 else float("nan")
    except ValueError:
        value = float("nan")
    if not 0 < value <= MAX_WAIT_S:  # NaN fails this too
        raise BadRead(f"'wait' must be seconds, more than 0 and at most {MAX_WAIT_S:g}, got {raw[:40]!r}")
    return value
