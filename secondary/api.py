"""The fixed secondary's HTTP API: read the replicated log, report health and metrics.

A fixed secondary never accepts writes; POST /messages answers 405. Reads
are every node's (shared.web.reads); a linearizable one asks the primary
for its read index. ``GET /`` is a small page (home.html beside this file,
read once) that shows the node's length from /health and links to the
primary's dashboard when PRIMARY_URL is set.

Thread: Waitress workers; they read ``node-io``'s published state and the log.
"""

from __future__ import annotations

import html
from pathlib import Path

import bottle

from secondary.config import READ_TIMEOUT_S, SecondaryConfig
from secondary.metrics import secondary_registry
from secondary.openapi import spec
from shared.node.linearizable import confirmer
from shared.node.node_io import NodeIo
from shared.web.api_token import protect
from shared.web.http import LogReads, html_response, json_response, new_app
from shared.web.metrics import exposition
from shared.web.reads import Reads

HOME = Path(__file__).with_name("home.html").read_text(encoding="utf-8")


def make_app(node: NodeIo, config: SecondaryConfig) -> bottle.Bottle:
    token = config.bearer_token
    app = protect(new_app(spec(bearer=token is not None)), token)
    registry, count_read = secondary_registry(node)
    reads = Reads(node.log, LogReads(config.log_read_slots), config.waiting_read_slots, config.node_name,
                  confirmer(node, READ_TIMEOUT_S), node.showing_answers, count_read)
    home = home_page(config.primary_url)

    @app.get("/messages")
    def list_messages():
        return reads.serve(bottle.request.query)

    @app.get("/health")
    def health():
        state = node.state
        running = node.running
        return json_response(
            200 if running else 503,
            {
                "status": "ok" if running else "replication stopped",
                "role": "secondary",
                "node": config.node_name,
                "incarnation": node.log.incarnation,
                "history": state.cluster,
                "run": state.term or None,
                "term": state.term,
                "primary": state.primary,
                "held_past_gap": 0,
                "bad_frames": state.bad_frames,
                "replication_endpoint": node.endpoint,
                "length": state.length,
                "committed": state.committed,
                "first_id": state.first_id,
                "waiting": node.waiting_count,
            },
        )

    @app.get("/metrics")
    def prometheus_metrics():
        return exposition(registry)

    @app.get("/")
    def home_route():
        return html_response(home)

    return app


def home_page(primary_url: str) -> bytes:
    """The page, with a link to the primary's dashboard if its URL is known."""
    if primary_url:
        where = (f'Appends go to the primary: <a id="primary" href="{html.escape(primary_url)}/">'
                 "its dashboard</a> shows the whole cluster.")
    else:
        where = ("This node is a secondary: it takes no appends. Set PRIMARY_URL for a link "
                 "to the primary's dashboard.")
    return HOME.replace("<!--primary-->", where).encode()
