"""``POST /messages`` on a node that takes appends: appended here, or forwarded to the primary.

The request was validated on the node that took it (shared.web.append_request),
so a bad one got its 4xx without a round trip. Then, in this order (the
order is the contract: nothing is appended for a request that gets an error):

1. **Where.** On the primary it is appended here. A failover secondary that
   knows the primary forwards it (shared.node.forwarding) and returns the
   primary's answer; one that knows none, or a forwarded request that
   reaches a node no longer primary (never forwarded twice), is answered
   503 "no primary" with Retry-After, at once: nothing was appended.
2. **Admission.** An append that will wait (w > 1, any append while a
   fixed primary recovers its log, any forward) takes one of
   MAX_WAITING_APPENDS slots, or gets 503 at once: waiting appends can
   never hold every Waitress thread, so reads, /health and w=1 appends
   always find one.
3. **Recovery** (a fixed primary without its log): the append waits for
   the recovery to end, within its own timeout (503 "recovering").
4. **Refusals** of the fixed primary: replication stopped, writes failing
   (a full disk), or fewer than QUORUM nodes up: 503, nothing appended.
5. **The append**, proposed to ``node-io`` (shared.node.node_io), which
   answers a known Idempotency-Key from the log, and releases it once `w`
   nodes hold it (with w >= majority, once it is committed too). A w=1
   append without a key on a fixed primary in memory is numbered as it is
   queued and answered at once (shared.node.proposals).

A 503 with an ``id`` (the primary stepped down, stopped, or could not
write, while the append waited), a 502 and a 504 mean the append's fate is
unknown; a 503 without an ``id`` means nothing was appended on any node.

Thread: any Waitress worker.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass, field

from shared.node import forwarding
from shared.node.node_io import NodeIo, NodeState
from shared.node.requests import CONFLICT, NOT_PRIMARY, STEPPED_DOWN, STORAGE, Proposal
from shared.runtime.logging_setup import RateLimitFilter, log_request_line
from shared.web.append_request import AppendRequest
from shared.wire.frames import encode_entry

log = logging.getLogger(__name__)
rejections_log = logging.getLogger(f"{__name__}.rejections")
rejections_log.addFilter(RateLimitFilter(5.0))

RETRY = {"Retry-After": "1"}


class Outcome(str, enum.Enum):
    """How an append ended, as /metrics counts it (replog_appends_total{outcome})."""

    OK = "ok"
    DUPLICATE = "duplicate"  # a replay of a known Idempotency-Key
    TIMEOUT = "timeout"
    OVERLOADED = "overloaded"
    BAD_REQUEST = "bad_request"  # 400, 409, 413, 415
    READ_ONLY = "read_only"  # fixed primary: fewer than QUORUM nodes up
    RECOVERING = "recovering"  # fixed primary: still taking over its log
    STORAGE = "storage"  # fixed primary: its writes fail
    REPLICATION_STOPPED = "replication_stopped"
    SHUTTING_DOWN = "shutting_down"
    STEPPED_DOWN = "stepped_down"  # failover: the primary changed while it waited
    NO_PRIMARY = "no_primary"
    FORWARDED = "forwarded"  # to the primary, whatever it answered
    FORWARD_FAILED = "forward_failed"  # 502, 504


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict | bytes  # bytes: a forwarded answer, as the primary sent it
    headers: dict[str, str] = field(default_factory=dict)
    outcome: Outcome = Outcome.OK


@dataclass(frozen=True)
class AppendPolicy:
    """What differs between a fixed primary and a failover node."""

    node_name: str
    max_waiting_appends: int
    #: A fixed primary: refuse appends while fewer than this many nodes are up.
    quorum: int | None = None
    #: A failover node: forward to the primary when it is not the primary.
    forwards: bool = False


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


class Appends:
    def __init__(self, policy: AppendPolicy, node: NodeIo) -> None:
        self._policy = policy
        self._node = node
        self._forwarder = forwarding.Forwarder(policy.node_name)
        self.waiting = WaitingSlots(policy.max_waiting_appends)

    def append(self, request: AppendRequest, key: str | None, body: bytes = b"",
               headers: dict[str, str] | None = None, forwarded_by: str | None = None) -> Answer:
        started = time.monotonic()
        state = self._node.state
        forwarding_it = self._policy.forwards and not state.is_primary and not state.recovering
        if forwarding_it:
            refusal = self._refuse_forward(state, forwarded_by)
            if refusal is not None:
                return refusal
        if state.recovering and (refusal := self._refuse_without_quorum(state)) is not None:
            # Its secondaries already declared unhealthy, a recovering primary
            # could only hold the append for RECOVERY_TIMEOUT and then refuse it.
            return refusal
        will_wait = request.w > 1 or state.recovering or forwarding_it
        if will_wait and not self.waiting.try_take():
            return self._overloaded(state.recovering)
        try:
            if forwarding_it:
                return self._forward(state, request, body, headers or {})
            if state.recovering and not self._wait_recovered(request.timeout, started):
                return Answer(503, {"error": f"recovering: the primary is still taking over its log "
                                             f"from the secondaries after {request.timeout:g}s; nothing "
                                             "was appended, retry later"}, RETRY, Outcome.RECOVERING)
            refusal = self._refuse(self._node.state)
            if refusal is not None:
                return refusal
            proposal = Proposal([encode_entry(m) for m in request.messages], key, request.w)
            at_once = request.w == 1 and key is None
            released = (self._node.propose(proposal, at_once)
                        or proposal.wait(_remaining(request.timeout, started)))
        finally:
            if will_wait:
                self.waiting.give_back()
        return self._answer(request, proposal, released, started)

    # -- the checks, in order ------------------------------------------------------------

    def _refuse_forward(self, state: NodeState, forwarded_by: str | None) -> Answer | None:
        if forwarded_by is not None:
            return _no_primary(f"{self._policy.node_name}, to which {forwarded_by} forwarded this "
                               "append, is no longer the primary")
        if state.primary_url is None:
            return _no_primary("an election is under way" if state.primary is None
                               else f"the address of {state.primary} is not known yet")
        return None

    def _overloaded(self, recovering: bool) -> Answer:
        slots = self._policy.max_waiting_appends
        rejections_log.warning("%s: %d appends already waiting; answering 503",
                               "recovering" if recovering else "overloaded", slots)
        if recovering:
            return Answer(503, {"error": f"recovering: the primary is taking over its log from the "
                                         f"secondaries and {slots} appends are already waiting; nothing "
                                         "was appended, retry later"}, RETRY, Outcome.RECOVERING)
        return Answer(503, {"error": f"overloaded: {slots} appends are already waiting for "
                                     "acknowledgements; nothing was appended, retry later"},
                      RETRY, Outcome.OVERLOADED)

    def _wait_recovered(self, timeout: float | None, started: float) -> bool:
        """Until the fixed primary has taken over its log, within ``timeout``."""
        deadline = None if timeout is None else started + timeout
        while self._node.state.recovering and self._node.running:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._node.recovered.wait(remaining)
        return True

    def _refuse(self, state: NodeState) -> Answer | None:
        """A primary that cannot take the append now says so; nothing is appended."""
        if not self._node.running:
            rejections_log.warning("replication stopped: answering 503")
            return Answer(503, {"error": "replication stopped: the primary cannot replicate and is "
                                         "shutting down; nothing was appended, retry later"},
                          RETRY, Outcome.REPLICATION_STOPPED)
        if state.storage_error is not None:
            rejections_log.warning("storage failing: answering 503: %s", state.storage_error)
            return Answer(503, {"error": f"storage unavailable: {state.storage_error}; nothing was "
                                         "appended, retry later"}, RETRY, Outcome.STORAGE)
        if not state.is_primary:
            return _no_primary("this node is not the primary" if state.primary is None
                               else f"{state.primary} is the primary")
        return self._refuse_without_quorum(state)

    def _refuse_without_quorum(self, state: NodeState) -> Answer | None:
        quorum = self._policy.quorum
        if quorum is None:
            return None
        available = state.available_nodes()
        if available >= quorum:
            return None
        rejections_log.warning("read-only: %d of %d nodes up, quorum is %d",
                               available, 1 + len(state.peers), quorum)
        return Answer(503, {"error": "read-only: no quorum", "available_nodes": available,
                            "quorum": quorum}, RETRY, Outcome.READ_ONLY)

    # -- the answer --------------------------------------------------------------------------

    def _answer(self, request: AppendRequest, proposal: Proposal, released: bool,
                started: float) -> Answer:
        if proposal.first_id is None and not released:
            # Its request gave up before node-io took it, which then appends nothing.
            rejections_log.warning("timed out after %gs before the primary took the append; answering "
                                   "504, nothing appended", request.timeout)
            return Answer(504, {"error": f"timed out after {request.timeout:g}s before the primary took "
                                         "the append; nothing was appended, retry"},
                          RETRY, Outcome.TIMEOUT)
        if proposal.first_id is None or proposal.ended == NOT_PRIMARY:
            return _no_primary("this node stopped being the primary before it took the append")
        first, count = proposal.first_id, len(request.messages)
        ids = ({"first_id": first, "last_id": first + count - 1, "count": count}
               if request.batch else {"id": first})
        if proposal.ended == CONFLICT:
            return Answer(409, {"error": "this Idempotency-Key was used for a different message",
                                **ids}, outcome=Outcome.BAD_REQUEST)
        if proposal.numbered:
            acked_by = [self._policy.node_name]
        else:
            acked_by = proposal.acked_by if released else proposal.holders
        body = {**ids, "w": request.w, "acks": len(acked_by), "acked_by": acked_by}
        if proposal.duplicate:
            body["duplicate"] = True
        # Arguments, not an f-string: the log writer formats the line, and
        # only if the level lets it through.
        line = "append id=%d%s w=%d acks=%d latency=%.1fms%s"
        args = (first, f"..{first + count - 1}" if request.batch else "", request.w, len(acked_by),
                (time.monotonic() - started) * 1000, " (replay)" if proposal.duplicate else "")
        if not released:
            log.warning(line + ": timed out waiting for the write concern", *args)
            return Answer(504, {**body, "error": f"timed out after {request.timeout:g}s with "
                                f"{len(acked_by)} of {request.w} acknowledgements; the message "
                                "stays appended and still reaches every secondary, unless a "
                                "failover rolls it back first"}, outcome=Outcome.TIMEOUT)
        if proposal.ended == STORAGE:
            log.warning(line + ": the primary could not store it", *args)
            return Answer(503, {**body, "error": "storage unavailable: the primary could not store the "
                                f"message ({self._node.state.storage_error}); it is not acknowledged, "
                                "and is stored later only if writes succeed again before the primary "
                                "stops"}, RETRY, Outcome.STORAGE)
        if proposal.ended == STEPPED_DOWN:
            log.warning(line + ": the primary stepped down before the write concern was met", *args)
            return Answer(503, {**body, "error": "the primary stepped down before the write concern "
                                "was met; the message was appended, and survives only if the next "
                                "primary holds it"}, RETRY, Outcome.STEPPED_DOWN)
        if proposal.ended is not None:
            log.warning(line + ": primary shutting down before the write concern was met", *args)
            return Answer(503, {**body, "error": "the primary is shutting down; the message is stored on "
                                "the primary but its write concern was not confirmed"},
                          RETRY, Outcome.SHUTTING_DOWN)
        log_request_line(log, line, *args)
        if proposal.duplicate:
            return Answer(200, body, outcome=Outcome.DUPLICATE)
        return Answer(201, body)

    def _forward(self, state: NodeState, request: AppendRequest, body: bytes,
                 headers: dict[str, str]) -> Answer:
        primary = state.primary
        try:
            answer = self._forwarder.forward(state.primary_url, body, headers, request.timeout,
                                             still_primary=lambda: self._still(state))
        except forwarding.NotSent as exc:
            return _no_primary(f"cannot reach {primary}, the primary: {exc}")
        except forwarding.Unknown as exc:
            rejections_log.warning("forwarding to %s failed after the request was sent: %s", primary, exc)
            status = 504 if exc.timed_out else 502
            return Answer(status, {"error": f"forwarded to {primary}, the primary, which did not "
                                            f"answer ({exc}); the append may or may not have been "
                                            "made: retry with the same Idempotency-Key"},
                          outcome=Outcome.FORWARD_FAILED)
        return Answer(answer.status, answer.body, answer.headers, outcome=Outcome.FORWARDED)

    def _still(self, then: NodeState) -> bool:
        """Whether the primary a forward went to is still this node's primary, in the same term."""
        now = self._node.state
        return (now.term, now.primary) == (then.term, then.primary)


def _remaining(timeout: float | None, started: float) -> float | None:
    """What is left of a request's timeout (some may have gone on recovery)."""
    return None if timeout is None else max(0.0, timeout - (time.monotonic() - started))


def _no_primary(why: str) -> Answer:
    rejections_log.warning("no primary: %s; answering 503", why)
    return Answer(503, {"error": f"no primary: {why}; nothing was appended, retry later"}, RETRY,
                  Outcome.NO_PRIMARY)
