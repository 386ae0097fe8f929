"""The secondary's HTTP API: read the replicated log, report health.

A secondary never accepts writes; POST /messages answers 405. Routes only
read the OrderedLog (own lock) and the Receiver's read-only properties.
Thread: Waitress workers.
"""

from __future__ import annotations

import bottle

from secondary.config import SecondaryConfig
from secondary.openapi import spec
from secondary.receiver import Receiver
from shared.api_token import protect
from shared.http import LogReads, json_response, new_app
from shared.ordered_log import OrderedLog
from shared.reads import Reads


def make_app(store: OrderedLog, receiver: Receiver, config: SecondaryConfig) -> bottle.Bottle:
    token = config.bearer_token
    app = protect(new_app(spec(bearer=token is not None)), token)
    reads = Reads(store, LogReads(config.log_read_slots), config.waiting_read_slots)
    node_name = config.node_name

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

    return app
