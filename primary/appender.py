"""One append, end to end: admit it, assign the id, start replication, wait for ``w``.

Thread: any Waitress request thread. It shares the OrderedLog (own lock) and
its own lock and semaphore with other request threads, and hands everything
else to the replicator through its thread-safe methods.

The order of the checks is the contract: nothing is appended for a request
that gets an error.
  1. Admission: an append that will wait (w > 1, or any append while the
     primary recovers its log) takes one of ``max_waiting_appends`` slots,
     or gets 503 at once. Waiting appends can then never hold every
     Waitress thread, so reads and w=1 appends always find one.
  2. Recovery: while the primary takes over its log from the secondaries,
     an append waits for that to end, within its own timeout (503).
  3. Idempotency: a known ``Idempotency-Key`` appends nothing; the answer
     is the original id, with acks once the write concern is met.
  4. Replication, storage and quorum: once the replication thread has
     stopped, while the log cannot be written (a full disk), or with fewer
     than ``quorum`` nodes up, the primary refuses appends (503).
  5. Append, then wait for the primary's own commit (with DATA_DIR) and
     w - 1 secondaries, or the timeout (504).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from dataclasses import dataclass, field

from primary.acks import STORAGE
from shared.web.append_request import AppendRequest
from primary.config import PrimaryConfig
from shared.log.idempotency import IdempotencyTable
from primary.replicator import Replicator
from shared.log.ordered_log import OrderedLog
from shared.runtime.logging_setup import RateLimitFilter, log_request_line
from shared.wire.protocol import encode_entry

log = logging.getLogger(__name__)
# Under overload or without quorum every rejected request would log a line.
rejections_log = logging.getLogger(f"{__name__}.rejections")
rejections_log.addFilter(RateLimitFilter(5.0))


class Outcome(str, enum.Enum):
    """How an append ended, as /metrics counts it (primary.metrics)."""

    OK = "ok"
    DUPLICATE = "duplicate"  # a replay of a known Idempotency-Key
    TIMEOUT = "timeout"
    OVERLOADED = "overloaded"
    READ_ONLY = "read_only"
    RECOVERING = "recovering"
    #: Refused by shared.web.append_request (400, 413, 415), or a reused key (409).
    BAD_REQUEST = "bad_request"
    STORAGE = "storage"
    REPLICATION_STOPPED = "replication_stopped"
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True)
class AppendResult:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)
    outcome: Outcome = field(kw_only=True)


class WaitingSlots:
    """At most ``limit`` appends waiting at once, and how many are: a count of
    its own, so that /metrics reads no semaphore's internals. Thread: any."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def taken(self) -> int:
        """Slots taken now. Read without the lock: at worst one take or give old."""
        return self._taken

    def try_take(self) -> bool:
        with self._lock:
            if self._taken >= self._limit:
                return False
            self._taken += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._taken -= 1


class Appender:
    def __init__(self, config: PrimaryConfig, store: OrderedLog, replicator: Replicator) -> None:
        self._config = config
        self._store = store
        self._replicator = replicator
        self._waiting_slots = WaitingSlots(config.max_waiting_appends)
        self._keys = IdempotencyTable(config.idempotency_keys, store.keyed_appends())
        self._keys_lock = threading.Lock()

    @property
    def waiting_count(self) -> int:
        """Appends holding a waiting slot now. An unsynchronised reading, for /metrics."""
        return self._waiting_slots.taken

    def append(self, request: AppendRequest, idempotency_key: str | None = None) -> AppendResult:
        started = time.monotonic()
        recovering = self._replicator.recovering
        if recovering:
            # Its secondaries already declared unhealthy, a recovering primary
            # could only hold the append for RECOVERY_TIMEOUT and then refuse it.
            refusal = self._refuse_without_quorum()
            if refusal:
                return refusal
        will_wait = request.w > 1 or recovering
        if will_wait and not self._waiting_slots.try_take():
            slots = self._config.max_waiting_appends
            rejections_log.warning("%s: %d appends already waiting; answering 503",
                                   "recovering" if recovering else "overloaded", slots)
            return AppendResult(
                503,
                {"error": f"recovering: the primary is taking over its log from the secondaries "
                          f"and {slots} appends are already waiting; nothing was appended, retry later"
                 if recovering else
                 f"overloaded: {slots} appends are already waiting for acknowledgements; "
                 "nothing was appended, retry later"},
                {"Retry-After": "1"},
                outcome=Outcome.RECOVERING if recovering else Outcome.OVERLOADED,
            )
        try:
            if recovering and not self._replicator.wait_recovered(request.timeout):
                return AppendResult(
                    503,
                    {"error": f"recovering: the primary is still taking over its log from the "
                              f"secondaries after {request.timeout:g}s; nothing was appended, retry later"},
                    {"Retry-After": "1"},
                    outcome=Outcome.RECOVERING,
                )
            return self._admitted(request, idempotency_key, started)
        finally:
            if will_wait:
                self._waiting_slots.give_back()

    def _admitted(self, request: AppendRequest, key: str | None, started: float) -> AppendResult:
        entries = [encode_entry(message) for message in request.messages]
        # A keyed append looks up its key and appends as one step; unkeyed
        # appends need no such lock, and do not queue behind keyed ones.
        with self._keys_lock if key is not None else contextlib.nullcontext():
            known = None if key is None else self._keys.get(key)
            duplicate = known is not None
            if duplicate:
                seq, count = known
                if count != len(entries) or any(
                    self._store.entry(seq + i) != entry for i, entry in enumerate(entries)
                ):
                    return AppendResult(409, {"error": "this Idempotency-Key was used for a "
                                                       "different message", "id": seq},
                                        outcome=Outcome.BAD_REQUEST)
            else:
                refusal = (self._refuse_without_replication() or self._refuse_without_storage()
                           or self._refuse_without_quorum())
                if refusal:
                    return refusal
                # The ids are the entries' positions, given under the log's
                # lock as they are appended: gap-free, in append order, and a
                # batch's consecutive, with nothing between them.
                if len(entries) == 1:
                    seq = self._store.append(entries[0], key)
                else:
                    seq = self._store.append_many(entries, key)
                if key is not None:
                    self._keys.remember(key, seq, len(entries))
        if not duplicate:
            self._replicator.notify_appended()
        return self._await_write_concern(request, seq, duplicate, started)

    def _refuse_without_replication(self) -> AppendResult | None:
        if self._replicator.running:
            return None
        rejections_log.warning("replication stopped: answering 503")
        return AppendResult(
            503, {"error": "replication stopped: the primary cannot replicate and is shutting "
                           "down; nothing was appended, retry later"},
            {"Retry-After": "1"}, outcome=Outcome.REPLICATION_STOPPED,
        )

    def _refuse_without_storage(self) -> AppendResult | None:
        error = self._replicator.storage_error
        if error is None:
            return None
        rejections_log.warning("storage failing: answering 503: %s", error)
        return AppendResult(
            503, {"error": f"storage unavailable: {error}; nothing was appended, retry later"},
            {"Retry-After": "1"}, outcome=Outcome.STORAGE,
        )

    def _refuse_without_quorum(self) -> AppendResult | None:
        available = self._replicator.view().available_nodes
        quorum = self._config.write_quorum
        if available >= quorum:
            return None
        rejections_log.warning("read-only: %d of %d nodes up, quorum is %d",
                               available, self._config.cluster_size, quorum)
        return AppendResult(
            503,
            {"error": "read-only: no quorum", "available_nodes": available, "quorum": quorum},
            {"Retry-After": "1"}, outcome=Outcome.READ_ONLY,
        )

    def _await_write_concern(
        self, request: AppendRequest, seq: int, duplicate: bool, started: float
    ) -> AppendResult:
        """Wait for ``w`` nodes to hold the entries from ``seq`` on. A node
        that shows the last one holds them all: every node shows a prefix."""
        last = seq + len(request.messages) - 1
        acked_by = [self._config.node_name]
        satisfied, aborted = True, None
        # A replay asks the replicator even at w=1: it reports who holds the
        # entry now. With DATA_DIR every append waits for its commit.
        if request.w > 1 or duplicate or self._store.durable:
            waiter = self._replicator.register_waiter(last, request.w - 1)
            satisfied = waiter.wait(_remaining(request.timeout, started))
            aborted = waiter.abort_reason
            acked_by = (acked_by if waiter.local else []) + waiter.acked_by
        latency_ms = (time.monotonic() - started) * 1000
        ids = ({"first_id": seq, "last_id": last, "count": len(request.messages)}
               if request.batch else {"id": seq})
        body = {**ids, "w": request.w, "acks": len(acked_by), "acked_by": acked_by}
        if duplicate:
            body["duplicate"] = True
        # Arguments, not an f-string: the log writer formats the line, and
        # only if the level lets it through.
        line = "append id=%d%s w=%d acks=%d latency=%.1fms%s"
        args = (seq, f"..{last}" if request.batch else "", request.w, len(acked_by), latency_ms,
                " (replay)" if duplicate else "")
        if satisfied:
            log_request_line(log, line, *args)
            return AppendResult(200 if duplicate else 201, body,
                                outcome=Outcome.DUPLICATE if duplicate else Outcome.OK)
        if aborted == STORAGE:
            log.warning(line + ": the primary could not store it", *args)
            return AppendResult(503, {**body, "error": "storage unavailable: the primary could not "
                                      f"store the message ({self._replicator.storage_error}); it is "
                                      "not acknowledged, and is stored later only if writes "
                                      "succeed again before the primary stops"},
                                {"Retry-After": "1"}, outcome=Outcome.STORAGE)
        if aborted:
            log.warning(line + ": primary shutting down before the write concern was met", *args)
            return AppendResult(503, {**body, "error": "the primary is shutting down; the message "
                                      "is stored on the primary but its write concern was not confirmed"},
                                outcome=Outcome.SHUTTING_DOWN)
        log.warning(line + ": timed out waiting for the write concern", *args)
        return AppendResult(504, {**body, "error": f"timed out after {request.timeout:g}s with "
                                  f"{len(acked_by)} of {request.w} acknowledgements; the message "
                                  "stays appended and still replicates to every secondary"},
                            outcome=Outcome.TIMEOUT)


def _remaining(timeout: float | None, started: float) -> float | None:
    """What is left of a request's timeout (some may have gone on recovery)."""
    return None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
