"""The secondary's HTTP API: read the replicated log, report health.

A secondary never accepts writes; POST /messages answers 405. Routes only
read the OrderedLog (own lock) and the Receiver's read-only properties.
Thread: Waitress workers.
"""

from __future__ import annotations

import bottle

from secondary.openapi import spec
from secondary.receiver import Receiver
from shared.http import json_response, new_app, streamed_json
from shared.ordered_log import OrderedLog


def make_app(store: OrderedLog, receiver: Receiver, node_name: str) -> bottle.Bottle:
    app = new_app(spec())

    @app.get("/messages")
    def list_messages():
        return streamed_json(*store.messages_document())

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
                "primary_epoch": receiver.primary_epoch,
                "replication_endpoint": receiver.endpoint,
                "length": len(store),
                "waiting": receiver.waiting_count,
            },
        )

    return app
