"""The bare baseline: Bottle on Waitress that parses the JSON and appends to a list.

It is the ceiling the primary is measured against: the same HTTP stack with
the same number of Waitress threads, doing the least an append can do. What
the primary costs beyond it is replication, validation and logging.

Run as its own process, ``python -m tests.bench.baseline_app``, configured
like a node (HTTP_HOST, HTTP_PORT, 0 for any free port, HTTP_THREADS,
PORT_FILE), so tests.support.processes.Node can launch it: it writes its
address to PORT_FILE and answers GET /health.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import bottle
import waitress

from shared.service import http_address, write_port_file


def make_app() -> bottle.Bottle:
    app = bottle.Bottle()
    messages: list[str] = []
    # Hands out ids as the primary does: the position in the list.
    lock = threading.Lock()

    @app.post("/messages")
    def append_message():
        message = json.loads(bottle.request.body.read())["message"]
        with lock:
            messages.append(message)
            seq = len(messages) - 1
        bottle.response.status = 201
        return {"id": seq}

    @app.get("/health")
    def health():
        return {"status": "ok", "role": "baseline", "length": len(messages)}

    return app


def main() -> None:
    server = waitress.create_server(
        make_app(),
        host=os.environ.get("HTTP_HOST", "127.0.0.1"),
        port=int(os.environ.get("HTTP_PORT", "0")),
        threads=int(os.environ.get("HTTP_THREADS", "64")),
    )

    def on_sigterm(_signum, _frame):
        raise SystemExit(0)  # ends server.run(); the default would skip close()

    signal.signal(signal.SIGTERM, on_sigterm)
    address = http_address(server)
    if os.environ.get("PORT_FILE"):
        write_port_file(os.environ["PORT_FILE"], {"http": address})
    print(f"baseline ready: HTTP {address}", file=sys.stderr, flush=True)
    try:
        server.run()
    finally:
        server.close()


if __name__ == "__main__":
    main()
