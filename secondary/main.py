"""Process entry point of a secondary: config, logging, receiver, HTTP.

Thread: main. It starts ``receiver-io`` and then runs Waitress's loop.
"""

from __future__ import annotations

import logging
import sys

import zmq

from secondary.api import make_app
from secondary.config import SecondaryConfig
from secondary.receiver import Receiver
from shared.config import ConfigError
from shared.logging_setup import setup_logging
from shared.memory import limit_malloc_arenas
from shared.ordered_log import OrderedLog
from shared.service import create_http_server, http_address, run_http

log = logging.getLogger("secondary")


def main() -> int:
    limit_malloc_arenas()
    try:
        config = SecondaryConfig.from_env()
    except ConfigError as exc:
        print(f"secondary: invalid configuration: {exc}", file=sys.stderr)
        return 2
    log_writer = setup_logging(config.log_level)
    ctx = zmq.Context()
    ctx.linger = 0
    store = OrderedLog()
    receiver = Receiver(
        ctx,
        config.replication_bind,
        store,
        config.node_name,
        config.replication_delay,
        config.drop_ack_fraction,
    )
    try:
        receiver.start()
        server = create_http_server(
            make_app(store, receiver, config.node_name),
            config.http_host,
            config.http_port,
            config.http_threads,
            config.http_connection_limit,
        )
    except OSError as exc:
        log.critical("cannot start: %s", exc)
        receiver.stop()
        ctx.term()
        log_writer.stop()
        return 1
    log.info(
        "node %s ready: HTTP %s, replication %s",
        config.node_name, http_address(server), receiver.endpoint,
    )
    run_http(server, before_exit=receiver.stop)
    ctx.term()
    log_writer.stop()  # last: it writes out what is still queued
    return 0
