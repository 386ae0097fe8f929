"""Run a role's Bottle app under Waitress until SIGTERM or SIGINT.

Shutdown order matters, and this module owns it:
  1. the signal arrives in the main thread, which runs Waitress's loop;
  2. ``before_exit`` runs first and stops the role's I/O thread, which wakes
     every request still waiting for ACKs, so no Waitress worker is left
     blocked (Waitress would wait 5 s for each before giving up);
  3. SystemExit ends Waitress's loop; Waitress joins its workers;
  4. the listening sockets close and ``run_http`` returns, so ``main`` can
     terminate the zmq Context last, after every socket owner has gone.

Thread: main thread only (signal handlers can only be installed there).
"""

from __future__ import annotations

import logging
import signal
from typing import Callable

import waitress

log = logging.getLogger(__name__)


def create_http_server(
    app, host: str, port: int, threads: int, connection_limit: int, max_body_bytes: int = 1 << 20
):
    """A Waitress server, bound and listening, but not yet serving."""
    return waitress.create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        connection_limit=connection_limit,
        # Waitress buffers a whole body before the app sees it. The app answers
        # an oversized body with a JSON 413; this ceiling, well above it, keeps
        # a huge upload from being buffered at all (Waitress's own 413).
        max_request_body_size=4 * max_body_bytes + (1 << 20),
        # select() cannot watch more than 1024 sockets; poll() has no such limit.
        asyncore_use_poll=True,
        ident="replicated-log",
        clear_untrusted_proxy_headers=True,
    )


def run_http(server, before_exit: Callable[[], None]) -> None:
    """Serve until SIGTERM/SIGINT, then shut down in the order above."""
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        log.info("%s received: shutting down", signal.Signals(signum).name)
        before_exit()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.run()
    finally:
        if not stopping:
            before_exit()
        server.close()
        log.info("stopped")


def http_address(server) -> str:
    return f"http://{server.effective_host}:{server.effective_port}"
