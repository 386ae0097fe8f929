"""The primary's HTTP API: append, read, health, metrics, and the dashboard.

Routes validate the request (shared.web.append_request), then hand it to the
Appender; every answered append is counted (primary.metrics). The
dashboard (dashboard.html beside this file, read once) is a static page
that draws itself from /health and appends through POST /messages.
Thread: Waitress workers.
"""

from __future__ import annotations

import time
from pathlib import Path

import bottle

from shared.web.append_request import (
    BadRequest,
    check_content_type,
    parse_append,
    parse_idempotency_key,
    read_body,
)
from primary.appender import Appender
from primary.config import PrimaryConfig
from primary.metrics import PrimaryMetrics
from primary.openapi import spec
from primary.replicator import Replicator
from shared.log.ordered_log import OrderedLog
from shared.web.api_token import protect
from shared.web.http import LogReads, html_response, json_error, json_response, new_app
from shared.web.metrics import exposition
from shared.web.reads import Reads

DASHBOARD = Path(__file__).with_name("dashboard.html").read_bytes()


def make_app(
    config: PrimaryConfig, store: OrderedLog, replicator: Replicator, appender: Appender
) -> bottle.Bottle:
    token = config.bearer_token
    app = protect(new_app(spec(config.cluster_size, bearer=token is not None)), token)
    reads = Reads(store, LogReads(config.log_read_slots), config.waiting_read_slots)
    metrics = PrimaryMetrics(config, store, replicator, appender)

    @app.post("/messages")
    def append_message():
        started = time.monotonic()
        try:
            media_type = check_content_type(bottle.request.content_type)
            # The header as sent (latin-1), not through Bottle's UTF-8
            # decoding, which raises on bytes such as 0xe9: the validator
            # then answers 400 for anything but visible ASCII.
            key = parse_idempotency_key(bottle.request.headers.raw("Idempotency-Key"))
            body = read_body(config.max_body_bytes)
            request = parse_append(body, config.cluster_size, media_type, config.max_batch_messages)
        except BadRequest as exc:
            metrics.record_bad_request()
            return json_error(exc.status, exc.message)
        result = appender.append(request, key)
        metrics.record_append(request.w, result.outcome, started)
        return json_response(result.status, result.body, result.headers)

    @app.get("/messages")
    def list_messages():
        return reads.serve(bottle.request.query)

    @app.get("/health")
    def health():
        view = replicator.view()
        log_length = len(store)
        secondaries = [
            {
                "name": status.name,
                "endpoint": status.endpoint,
                "state": health.value,
                "last_heard_s_ago": (
                    None if status.last_heard is None
                    else round(max(0.0, view.now - status.last_heard), 3)
                ),
                "acked_length": status.acked_length,
                "lag": status.lag(log_length),
            }
            for status, health in view.secondaries
        ]
        available = view.available_nodes
        running = replicator.running
        return json_response(
            200 if running else 503,
            {
                "status": "ok" if running else "replication stopped",
                "role": "primary",
                "node": config.node_name,
                "history": replicator.history,
                "run": replicator.run,
                "recovering": replicator.recovering,
                "bad_frames": replicator.bad_frames,
                "length": log_length,
                "quorum": config.write_quorum,
                "available_nodes": available,
                "read_only": available < config.write_quorum,
                "secondaries": secondaries,
            },
        )

    @app.get("/metrics")
    def prometheus_metrics():
        return exposition(metrics.registry, bottle.request.get_header("Accept", ""))

    @app.get("/")
    def dashboard():
        return html_response(DASHBOARD)

    return app
