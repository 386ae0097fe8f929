"""GET /messages on either role: the whole log, a page, or a tail that waits.

- no parameters: the whole visible log, ``{"messages": [...]}``, streamed;
- ``from=N`` (0 when only ``limit`` or ``wait`` is given) and optionally
  ``limit=M``: a page of the gap-free prefix,
  ``{"messages": [...], "from": N, "next": N + returned, "length": L}``;
- ``wait=S`` (with ``from``): if nothing is visible at ``from`` or beyond
  yet, wait up to S seconds for it (a long poll, like Kafka's fetch with
  ``fetch.max.wait.ms``); then answer as for a page, maybe empty;
- ``committed=true`` (failover mode only), with any of the above: only the
  committed prefix, which no failover ever rolls back; ``false`` is as if
  it were absent.

A page is a slice, so paging costs the same at any offset, and, being a
slice of the prefix, never shows a gap or a duplicate. Reads without
``limit`` are whole-log reads, under ``LogReads``' cap; waiting readers
hold one of ``max_waiting`` slots or get a 503 at once, so tails never
take the threads that appends, plain reads and /health need.

Thread: any Waitress worker.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Mapping

import bottle

from shared.log.ordered_log import OrderedLog
from shared.web.http import LogReads, json_error, streamed_json
from shared.wire.protocol import MAX_SEQ

#: The longest a tailing read may wait, in seconds.
MAX_WAIT_S = 60.0
_PARAMETERS = ("from", "limit", "wait")


class BadRead(ValueError):
    """A query that does not follow the rules above; str(error) says why."""


@dataclass(frozen=True)
class ReadRequest:
    start: int
    limit: int | None = None
    wait: float | None = None


def parse_read(query: Mapping[str, str], committed_reads: bool = False) -> tuple[ReadRequest | None, bool]:
    """The read a query asks for (None for the whole log), and whether only
    its committed part. Raises BadRead."""
    allowed = _PARAMETERS + (("committed",) if committed_reads else ())
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise BadRead(f"unknown query parameter(s) {', '.join(map(repr, unknown))}; "
                      f"allowed: {', '.join(allowed)}")
    committed = _flag(query, "committed") if "committed" in query else False
    if not set(query) - {"committed"}:
        return None, committed
    start = _whole_number(query, "from", minimum=0) if "from" in query else 0
    limit = _whole_number(query, "limit", minimum=1) if "limit" in query else None
    wait = _seconds(query["wait"]) if "wait" in query else None
    return ReadRequest(start, limit, wait), committed


class Reads:
    """Serves GET /messages for one app."""

    def __init__(self, store: OrderedLog, log_reads: LogReads, max_waiting: int,
                 committed_reads: bool = False) -> None:
        self._store = store
        self._committed_reads = committed_reads
        self._log_reads = log_reads
        self.max_waiting = max_waiting
        self._waiting = threading.BoundedSemaphore(max_waiting)

    def serve(self, query: Mapping[str, str]) -> bottle.HTTPResponse:
        try:
            read, committed = parse_read(query, self._committed_reads)
        except BadRead as exc:
            return json_error(400, str(exc))
        if read is None:
            return self._log_reads.serve(*self._store.messages_document(committed))
        if read.wait is not None and self._store.shown(committed) <= read.start:
            if not self._waiting.acquire(blocking=False):
                return json_error(503, f"busy: {self.max_waiting} readers are already waiting "
                                       "(MAX_WAITING_READS); retry later", {"Retry-After": "1"})
            try:
                self._store.wait_for_length(read.start + 1, read.wait, committed)
            finally:
                self._waiting.release()
        document = self._store.page_document(read.start, read.limit, committed)
        if read.limit is None:  # everything from ``start`` on: as big as the whole log
            return self._log_reads.serve(*document)
        return streamed_json(*document)


def _whole_number(query: Mapping[str, str], name: str, minimum: int) -> int:
    raw = query[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 20:
        raise BadRead(f"'{name}' must be a whole number, got {raw[:40]!r}")
    value = int(raw)
    if not minimum <= value <= MAX_SEQ:
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
