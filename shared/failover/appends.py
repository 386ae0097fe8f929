"""``POST /messages`` on a failover node: appended here, or forwarded to the primary.

The request is validated on the node that took it (shared.web.append_request),
so a bad one gets its 4xx without a round trip. Then:

- on the primary, an append that will wait (w > 1) takes one of
  MAX_WAITING_APPENDS slots (503 beyond), is proposed to ``node-io``
  (shared.failover.node_io) and waits for its write concern;
- on a secondary that knows the primary, it is forwarded
  (shared.failover.forwarding) and the primary's answer returned;
- with no primary known, or a forwarded request reaching a node that is no
  longer primary (never forwarded twice), the answer is 503 "no primary"
  with Retry-After at once, and nothing was appended.

A 503 with an ``id`` (the primary stepped down, or stops, while the append
waited), a 502 and a 504 mean the append's fate is unknown; a 503 without
an ``id`` means nothing was appended on any node.

Thread: any Waitress worker.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from shared.failover import forwarding
from shared.failover.config import FailoverConfig
from shared.failover.node_io import CONFLICT, NOT_PRIMARY, STEPPED_DOWN, NodeIo, Proposal
from shared.runtime.logging_setup import RateLimitFilter, log_request_line
from shared.web.append_request import AppendRequest
from shared.wire.protocol import encode_entry

log = logging.getLogger(__name__)
rejections_log = logging.getLogger(f"{__name__}.rejections")
rejections_log.addFilter(RateLimitFilter(5.0))

RETRY = {"Retry-After": "1"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict | bytes  # bytes: a forwarded answer, as the primary sent it
    headers: dict[str, str] = field(default_factory=dict)
    #: How it ended, as /metrics counts it (replog_appends_total{outcome}):
    #: ok, duplicate, timeout, overloaded, stepped_down, no_primary,
    #: forwarded, forward_failed, bad_request.
    outcome: str = "ok"


class Appends:
    def __init__(self, config: FailoverConfig, node: NodeIo) -> None:
        self._config = config
        self._node = node
        self._forwarder = forwarding.Forwarder(config.node_name)
        self._waiting_slots = threading.BoundedSemaphore(config.max_waiting_appends)

    def append(self, request: AppendRequest, key: str | None, body: bytes,
               headers: dict[str, str], forwarded_by: str | None) -> Answer:
        state = self._node.state
        if state.is_primary:
            return self._append_here(request, key)
        if forwarded_by is not None:
            return _no_primary(f"{self._config.node_name}, to which {forwarded_by} forwarded this "
                               "append, is no longer the primary")
        if state.primary_url is None:
            return _no_primary("an election is under way" if state.primary is None
                               else f"the address of {state.primary} is not known yet")
        return self._forward(state.primary, state.primary_url, request, body, headers)

    def _append_here(self, request: AppendRequest, key: str | None) -> Answer:
        started = time.monotonic()
        will_wait = request.w > 1
        if will_wait and not self._waiting_slots.acquire(blocking=False):
            slots = self._config.max_waiting_appends
            rejections_log.warning("overloaded: %d appends already waiting; answering 503", slots)
            return Answer(503, {"error": f"overloaded: {slots} appends are already waiting for "
                                         "acknowledgements; nothing was appended, retry later"},
                          RETRY, "overloaded")
        try:
            proposal = Proposal([encode_entry(m) for m in request.messages], key, request.w)
            self._node.propose(proposal)
            released = proposal.wait(request.timeout)
        finally:
            if will_wait:
                self._waiting_slots.release()
        return self._answer(request, proposal, released, started)

    def _answer(self, request: AppendRequest, proposal: Proposal, released: bool,
                started: float) -> Answer:
        if proposal.first_id is None or proposal.ended == NOT_PRIMARY:
            return _no_primary("this node stopped being the primary before it took the append"
                               if released else
                               f"the append was not taken within its {request.timeout:g}s timeout")
        first, count = proposal.first_id, len(request.messages)
        ids = ({"first_id": first, "last_id": first + count - 1, "count": count}
               if request.batch else {"id": first})
        if proposal.ended == CONFLICT:
            return Answer(409, {"error": "this Idempotency-Key was used for a different message",
                                **ids}, outcome="bad_request")
        acked_by = proposal.acked_by if released else proposal.holders
        body = {**ids, "w": request.w, "acks": len(acked_by), "acked_by": acked_by}
        if proposal.duplicate:
            body["duplicate"] = True
        line = "append id=%d%s w=%d acks=%d latency=%.1fms%s"
        args = (first, f"..{first + count - 1}" if request.batch else "", request.w, len(acked_by),
                (time.monotonic() - started) * 1000, " (replay)" if proposal.duplicate else "")
        if not released:
            log.warning(line + ": timed out waiting for the write concern", *args)
            return Answer(504, {**body, "error": f"timed out after {request.timeout:g}s with "
                                f"{len(acked_by)} of {request.w} acknowledgements; the message "
                                "stays appended, and survives if a majority comes to hold it"},
                          outcome="timeout")
        if proposal.ended is not None:
            why = ("stepped down" if proposal.ended == STEPPED_DOWN else "is shutting down")
            log.warning(line + ": the primary %s before the write concern was met", *args, why)
            return Answer(503, {**body, "error": f"the primary {why} before the write concern was "
                                "met; the message was appended, and survives only if the next "
                                "primary holds it"}, RETRY, outcome="stepped_down")
        log_request_line(log, line, *args)
        if proposal.duplicate:
            return Answer(200, body, outcome="duplicate")
        return Answer(201, body)

    def _forward(self, primary: str, url: str, request: AppendRequest, body: bytes,
                 headers: dict[str, str]) -> Answer:
        try:
            answer = self._forwarder.forward(url, body, headers, request.timeout)
        except forwarding.NotSent as exc:
            return _no_primary(f"cannot reach {primary}, the primary: {exc}")
        except forwarding.Unknown as exc:
            rejections_log.warning("forwarding to %s failed after the request was sent: %s",
                                   primary, exc)
            status = 504 if exc.timed_out else 502
            return Answer(status, {"error": f"forwarded to {primary}, the primary, which did not "
                                            f"answer ({exc}); the append may or may not have been "
                                            "made: retry with the same Idempotency-Key"},
                          outcome="forward_failed")
        return Answer(answer.status, answer.body, answer.headers, outcome="forwarded")


def _no_primary(why: str) -> Answer:
    rejections_log.warning("no primary: %s; answering 503", why)
    return Answer(503, {"error": f"no primary: {why}; nothing was appended, retry later"}, RETRY,
                  outcome="no_primary")
