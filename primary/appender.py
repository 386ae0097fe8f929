"""One append, end to end: assign the id, start replication, wait for ``w``.

Thread: any Waitress request thread. It shares the OrderedLog (own lock) and
hands everything else to the replicator through its thread-safe methods.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from primary.append_request import AppendRequest
from primary.replicator import Replicator
from shared.ordered_log import OrderedLog
from shared.protocol import encode_entry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppendResult:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)


class Appender:
    def __init__(self, store: OrderedLog, replicator: Replicator, node_name: str) -> None:
        self._store = store
        self._replicator = replicator
        self._node_name = node_name

    def append(self, request: AppendRequest) -> AppendResult:
        started = time.monotonic()
        # The id is the position in the primary's log, assigned under the log's
        # lock as the entry is appended: ids are gap-free and in append order.
        seq = self._store.append(encode_entry(request.message))
        self._replicator.notify_appended()
        acked_by = [self._node_name]
        satisfied = aborted = False
        if request.w > 1:
            waiter = self._replicator.register_waiter(seq, request.w - 1)
            satisfied = waiter.wait(request.timeout)
            aborted = waiter.aborted
            acked_by += waiter.acked_by
        else:
            satisfied = True
        latency_ms = (time.monotonic() - started) * 1000
        body = {"id": seq, "w": request.w, "acks": len(acked_by), "acked_by": acked_by}
        if satisfied:
            log.info("append id=%d w=%d acks=%d latency=%.1fms", seq, request.w, len(acked_by), latency_ms)
            return AppendResult(201, body)
        if aborted:
            log.warning("append id=%d w=%d acks=%d: primary shutting down before the write concern was met",
                        seq, request.w, len(acked_by))
            return AppendResult(503, {**body, "error": "the primary is shutting down; the message is "
                                      "stored on the primary but its write concern was not confirmed"})
        log.warning("append id=%d w=%d acks=%d latency=%.1fms: timed out waiting for the write concern",
                    seq, request.w, len(acked_by), latency_ms)
        return AppendResult(504, {**body, "error": f"timed out after {request.timeout:g}s with "
                                  f"{len(acked_by)} of {request.w} acknowledgements; the message stays "
                                  "appended and still replicates to every secondary"})
