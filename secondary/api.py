"""The secondary's HTTP API: read the replicated log, report health.

A secondary never accepts writes; POST /messages answers 405. Routes only
read the OrderedLog (own lock) and the Receiver's read-only properties.
Thread: Waitress workers.
"""

from __future__ import annotations

import bottle

from secondary.openapi import spec
from secondary.receiver import Receiver
from shared.http import LogReads, json_response, new_app
from shared.ordered_log import OrderedLog


def make_app(store: OrderedLog, receiver: Receiver, node_name: str,
             log_read_slots: int = 2) -> bottle.Bottle:
    app = new_app(spec())
    log_reads = LogReads(log_read_slots)

    @app.get("/messages")
    def list_messages():
        return log_reads.serve(*store.messages_document())

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
