"""The secondary's HTTP API: read the replicated log, report health and metrics.

A secondary never accepts writes; POST /messages answers 405. Routes only
read the OrderedLog (own lock) and the Receiver's read-only properties.
``GET /`` is a small page (home.html beside this file, read once) that
shows the node's length from /health and links to the primary's dashboard
when PRIMARY_URL is set. Thread: Waitress workers.
"""

from __future__ import annotations

import html
from pathlib import Path

import bottle

from secondary.config import SecondaryConfig
from secondary.metrics import secondary_registry
from secondary.openapi import spec
from secondary.receiver import Receiver
from shared.log.ordered_log import OrderedLog
from shared.web.api_token import protect
from shared.web.http import LogReads, html_response, json_response, new_app
from shared.web.metrics import exposition
from shared.web.reads import Reads

HOME = Path(__file__).with_name("home.html").read_text(encoding="utf-8")


def make_app(store: OrderedLog, receiver: Receiver, config: SecondaryConfig) -> bottle.Bottle:
    token = config.bearer_token
    app = protect(new_app(spec(bearer=token is not None)), token)
    reads = Reads(store, LogReads(config.log_read_slots), config.waiting_read_slots)
    node_name = config.node_name
    registry = secondary_registry(store, receiver)
    home = home_page(config.primary_url)

    @app.get("/messages")
    def list_messages():
        return reads.serve(bottle.request.query)

    @app.get("/health")
    def health():
        running = receiver.running
        return json_response(
            200 if running else 503,
            {
                "status": "ok" if running else "replication stopped",
                "role": "secondary",
                "node": node_name,
                "incarnation": receiver.incarnation,
                "history": receiver.history,
                "run": None if receiver.run is None else list(receiver.run),
                "held_past_gap": store.ahead_count,
                "bad_frames": receiver.bad_frames,
                "replication_endpoint": receiver.endpoint,
                "length": len(store),
                "waiting": receiver.waiting_count,
            },
        )

    @app.get("/metrics")
    def prometheus_metrics():
        return exposition(registry, bottle.request.get_header("Accept", ""))

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
