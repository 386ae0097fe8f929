"""Process entry point of the primary: config, logging, replicator, HTTP.

Thread: main. It starts ``replicator-io`` and then runs Waitress's loop.
"""

from __future__ import annotations

import logging
import sys

import zmq

from primary.api import make_app
from primary.appender import Appender
from primary.config import PrimaryConfig
from primary.replicator import Replicator
from shared.config import ConfigError
from shared.logging_setup import setup_logging
from shared.memory import limit_malloc_arenas
from shared.ordered_log import OrderedLog
from shared.service import create_http_server, http_address, run_http

log = logging.getLogger("primary")


def main() -> int:
    limit_malloc_arenas()
    try:
        config = PrimaryConfig.from_env()
    except ConfigError as exc:
        print(f"primary: invalid configuration: {exc}", file=sys.stderr)
        return 2
    log_writer = setup_logging(config.log_level)
    ctx = zmq.Context()
    ctx.linger = 0
    store = OrderedLog()
    replicator = Replicator(ctx, store, config.secondaries, config.replication)
    appender = Appender(config, store, replicator)
    try:
        server = create_http_server(
            make_app(config, store, replicator, appender),
            config.http_host,
            config.http_port,
            config.http_threads,
            config.http_connection_limit,
            config.max_body_bytes,
        )
    except OSError as exc:
        log.critical("cannot start: HTTP_PORT %s: %s", config.http_port, exc)
        ctx.term()
        log_writer.stop()
        return 1
    replicator.start()
    log.info(
        "node %s ready: HTTP %s, secondaries: %s",
        config.node_name,
        http_address(server),
        ", ".join(f"{s.name}={s.endpoint}" for s in config.secondaries) or "none (w=1 only)",
    )
    run_http(server, before_exit=replicator.stop)
    ctx.term()
    log_writer.stop()  # last: it writes out what is still queued
    return 0
