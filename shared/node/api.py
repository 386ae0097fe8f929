"""A failover node's HTTP API: append (here or forwarded), read, health, metrics.

Every node serves the same routes whatever its role. ``GET /`` is the
cluster's dashboard (shared.web.dashboard, the page a fixed primary serves
too): a static page that learns every node's URL from the /health answers
and polls each node's /health from the browser, so it follows the primary
through failovers and outlives the node that served it; its
Content-Security-Policy lets it connect to any http(s) origin for that (it
still loads nothing from one, and sends the API token only to its own
node). ``POST /messages``
goes through shared.node.appends, and every answer to it carries
``Served-By``: the node that served it (the primary's name, forwarded or
not). ``GET /health`` answers 200 in every role and state. Reads are the
fixed-role reads (shared.web.reads) over the node's messages, with
``committed=true`` for the prefix no failover rolls back.

Thread: Waitress workers; they read ``node-io``'s published state only.
"""

from __future__ import annotations

import time
from typing import Iterator

import bottle
from prometheus_client import Counter
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from shared.node.appends import Answer, Appends, Outcome
from shared.node.config import FailoverConfig
from shared.node.forwarding import FORWARDED_BY, PASSED_HEADERS
from shared.node.linearizable import confirmer
from shared.node.node_io import NodeIo
from shared.node.openapi import spec
from shared.web.append_request import (
    BadRequest, check_content_type, parse_append, parse_idempotency_key, read_body,
)
from shared.web.api_token import protect
from shared.web.dashboard import dashboard_response
from shared.web.http import JSON, LogReads, json_response, new_app, raw_header
from shared.web.metrics import PREFIX, exposition, gauge, new_registry
from shared.web.reads import LEVELS, Reads


def make_app(config: FailoverConfig, node: NodeIo, appends: Appends) -> bottle.Bottle:
    token = config.bearer_token
    app = protect(new_app(spec(config.cluster_size, bearer=token is not None)), token)
    registry = new_registry()
    registry.register(_Collector(node))
    answered = Counter(PREFIX + "appends", "answered POST /messages on this node, by outcome",
                       ["outcome"], registry=registry)
    read = Counter(PREFIX + "reads", "GET /messages on this node, by consistency level",
                   ["consistency"], registry=registry)
    read_counters = {level: read.labels(level) for level in LEVELS}
    reads = Reads(node.log, LogReads(config.log_read_slots), config.waiting_read_slots, config.node_name,
                  confirmer(node, 2 * config.election_timeout), node.showing_answers,
                  lambda level: read_counters[level].inc())

    @app.post("/messages")
    def append_message():
        answer = _append(config, appends)
        answered.labels(answer.outcome.value).inc()
        headers = {**answer.headers, "Served-By": answer.headers.get("Served-By", config.node_name)}
        if isinstance(answer.body, bytes):
            headers.setdefault("Content-Type", JSON)
            return bottle.HTTPResponse(body=answer.body, status=answer.status, headers=headers)
        return json_response(answer.status, answer.body, headers)

    @app.get("/messages")
    def list_messages():
        return reads.serve(bottle.request.query)

    @app.get("/health")
    def health():
        state = node.state
        # Open to every origin: the dashboard served by one node reads the others'.
        return json_response(200, {
            "status": "ok" if node.running else "stopping",
            "mode": "failover",
            "node": config.node_name,
            "url": node.public_url,
            "role": state.role.value,
            "term": state.term,
            "primary": state.primary,
            "committed": state.committed,
            "length": state.length,
            "first_id": state.first_id,
            "caught_up": state.caught_up,
            "unheard": list(state.unheard),
            "bad_frames": state.bad_frames,
            "replication_endpoint": node.endpoint,
            "peers": {name: {"endpoint": peer.endpoint, "url": peer.url,
                             "last_heard_s_ago": _ago(peer.last_heard, state.at),
                             "match_length": peer.match_length,
                             "state": peer.health.value if peer.health else None}
                      for name, peer in state.peers.items()},
            "elections": [{"term": e.term, "primary": e.primary,
                           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.at))}
                          for e in state.elections],
        }, {"Access-Control-Allow-Origin": "*"})

    @app.get("/metrics")
    def prometheus_metrics():
        return exposition(registry)

    @app.get("/")
    def dashboard():
        return dashboard_response(polls_every_node=True)

    return app


def _append(config: FailoverConfig, appends: Appends) -> Answer:
    request = bottle.request
    try:
        media_type = check_content_type(request.content_type)
        key = parse_idempotency_key(raw_header("Idempotency-Key"))
        body = read_body(config.max_body_bytes)
        append = parse_append(body, config.cluster_size, media_type, config.max_batch_messages)
    except BadRequest as exc:
        return Answer(exc.status, {"error": exc.message}, outcome=Outcome.BAD_REQUEST)
    # As they came (raw_header): passed on byte for byte, whatever they hold.
    headers = {name: value for name in PASSED_HEADERS if (value := raw_header(name)) is not None}
    return appends.append(append, key, body, headers, raw_header(FORWARDED_BY))


class _Collector:
    """What a scrape reads of the node's published state; nothing counted per request."""

    def __init__(self, node: NodeIo) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        state = self._node.state
        yield gauge("term", "the node's current term", state.term)
        yield gauge("is_primary", "1 on the primary of the current term, else 0", int(state.is_primary))
        yield CounterMetricFamily(PREFIX + "elections", "primaries this node has seen elected "
                                  "(one per term it learned a primary of)", value=state.elections_total)
        yield gauge("committed_length", "messages known to be committed", state.committed)
        yield gauge("log_length", "the id after the last message the node holds", state.length)
        yield gauge("first_id", "the first message id retention kept", state.first_id)


def _ago(then: float | None, now: float) -> float | None:
    return None if then is None else round(max(0.0, now - then), 3)
