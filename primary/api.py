"""The fixed primary's HTTP API: append, read, health, metrics, and the dashboard.

Routes validate the request (shared.web.append_request), then hand it to
the append path every node shares (shared.node.appends); every answered
append is counted (primary.metrics). /health reports what ``node-io``
published last (shared.node.node_io.NodeState): this role's view of its
secondaries, their health, lag and the quorum. ``GET /`` is the dashboard
(shared.web.dashboard), the page a failover node serves too; it reads this
node's /health only.

Thread: Waitress workers.
"""

from __future__ import annotations

import time

import bottle

from primary.config import PrimaryConfig
from primary.metrics import PrimaryMetrics
from primary.openapi import spec
from shared.node.appends import Appends, Outcome
from shared.node.linearizable import confirmer
from shared.node.node_io import NodeIo
from shared.web.api_token import protect
from shared.web.append_request import (
    BadRequest, check_content_type, parse_append, parse_idempotency_key, read_body,
)
from shared.web.dashboard import dashboard_response
from shared.web.http import LogReads, json_error, json_response, new_app, raw_header
from shared.web.metrics import exposition
from shared.web.reads import Reads


def make_app(config: PrimaryConfig, node: NodeIo, appends: Appends) -> bottle.Bottle:
    token = config.bearer_token
    app = protect(new_app(spec(config.cluster_size, bearer=token is not None)), token)
    metrics = PrimaryMetrics(config, node, appends)
    settings = config.replication
    reads = Reads(node.log, LogReads(config.log_read_slots), config.waiting_read_slots, config.node_name,
                  confirmer(node, settings.unhealthy_after * settings.heartbeat_interval),
                  node.showing_answers, metrics.record_read)

    @app.post("/messages")
    def append_message():
        started = time.monotonic()
        try:
            media_type = check_content_type(bottle.request.content_type)
            # As sent (raw_header): the validator answers 400 for anything
            # but visible ASCII, bytes such as 0xe9 included.
            key = parse_idempotency_key(raw_header("Idempotency-Key"))
            body = read_body(config.max_body_bytes)
            request = parse_append(body, config.cluster_size, media_type, config.max_batch_messages)
        except BadRequest as exc:
            metrics.record_bad_request()
            return json_error(exc.status, exc.message)
        answer = appends.append(request, key)
        metrics.record_append(request.w, answer.outcome, started)
        return json_response(answer.status, answer.body, answer.headers)

    @app.get("/messages")
    def list_messages():
        return reads.serve(bottle.request.query)

    @app.get("/health")
    def health():
        return json_response(200 if node.running else 503, health_of(config, node))

    @app.get("/metrics")
    def prometheus_metrics():
        return exposition(metrics.registry)

    @app.get("/")
    def dashboard():
        return dashboard_response(polls_every_node=False)

    return app


def health_of(config: PrimaryConfig, node: NodeIo) -> dict:
    """What /health says: the node, its log, and each secondary as ``node-io`` judged it last."""
    state = node.showing_answers()
    secondaries = [
        {
            "name": name,
            "endpoint": view.endpoint,
            "state": view.health.value if view.health else "unknown",
            "last_heard_s_ago": None if view.last_heard is None else round(max(0.0, state.at - view.last_heard), 3),
            "acked_length": view.match_length or 0,
            "lag": max(0, state.length - (view.match_length or 0)),
        }
        for name, view in state.peers.items()
    ]
    available = state.available_nodes()
    return {
        "status": "ok" if node.running else "replication stopped",
        "role": "primary",
        "node": config.node_name,
        "history": state.cluster,
        "run": state.term if state.is_primary else None,
        "term": state.term,
        "recovering": state.recovering,
        "bad_frames": state.bad_frames,
        "length": state.length,
        "committed": state.committed,
        "first_id": state.first_id,
        "quorum": config.write_quorum,
        "available_nodes": available,
        "read_only": available < config.write_quorum,
        "secondaries": secondaries,
    }


__all__ = ["Outcome", "make_app", "health_of"]
