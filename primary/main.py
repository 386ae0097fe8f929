"""Process entry point of the primary: its parts, run by shared.service.run_role.

Thread: main. ``run_role`` starts ``replicator-io`` and then runs Waitress's loop.
"""

from __future__ import annotations

import zmq

from primary.api import make_app
from primary.appender import Appender
from primary.config import PrimaryConfig
from primary.replicator import Replicator
from shared.node import main as failover
from shared.log.durable_log import open_log
from shared.service import Service, run_role
from shared.wire import curve


SUMMARY = """\
The primary of the replicated log: it takes appends over HTTP (POST /messages)
and replicates them to its secondaries. Configured by environment variables
only, read once at start."""


def main() -> int:
    if failover.wanted():  # PEERS: the same node either way; see shared.node.main
        return failover.main("primary", stands_at_once=True)
    return run_role("primary", SUMMARY, PrimaryConfig, build)


def build(config: PrimaryConfig, ctx: zmq.Context) -> Service:
    channel = curve.load_client(
        config.replication_keys_dir, config.node_name, [s.name for s in config.secondaries]
    )
    store = open_log(config.data_dir, "primary", config.fsync)
    replicator = Replicator(
        ctx, store, config.secondaries, config.replication, config.max_body_bytes, channel
    )
    appender = Appender(config, store, replicator)
    secondaries = ", ".join(f"{s.name}={s.endpoint}" for s in config.secondaries)
    return Service(
        app=make_app(config, store, replicator, appender),
        io_thread=replicator,
        channel=channel,
        detail=f"secondaries: {secondaries or 'none (w=1 only)'}",
        max_body_bytes=config.max_body_bytes,
    )
