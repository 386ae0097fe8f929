"""Process entry point of a secondary: its parts, run by shared.service.run_role.

Without PEERS, the fixed secondary: the Raft engine as a secondary that
never stands and never votes (shared.consensus.raft.Mode.FIXED_SECONDARY),
whose ``node-io`` thread is called ``receiver-io``. With PEERS, a failover
node (shared.node.main).

Thread: main. ``run_role`` starts the I/O thread and then runs Waitress's loop.
"""

from __future__ import annotations

import logging
import os

import zmq

from secondary.api import make_app
from secondary.config import RETIRED, SecondaryConfig, node_settings
from shared.log.node_log import open_log
from shared.node import main as failover
from shared.node.node_io import NodeIo
from shared.service import Service, run_role
from shared.wire import curve
from shared.wire.frames import frame_limit

log = logging.getLogger("secondary")

SUMMARY = """\
A secondary of the replicated log: it stores what the primary replicates to it
and serves reads over HTTP. Configured by environment variables only, read
once at start."""


def main() -> int:
    if failover.wanted():  # PEERS: the same node either way; see shared.node.main
        return failover.main("secondary", stands_at_once=False)
    return run_role("secondary", SUMMARY, SecondaryConfig, build)


def build(config: SecondaryConfig, ctx: zmq.Context) -> Service:
    for variable, why in RETIRED.items():
        if os.environ.get(variable, "").strip():
            log.warning("%s is set, and no longer used: %s", variable, why)
    channel = curve.load_server(config.replication_keys_dir, config.node_name, config.primary_name)
    # The idempotency keys travel with their entries: a secondary keeps them
    # too, so that a log recovered from it by a primary without its own knows them.
    node_log = open_log(config.data_dir, "secondary", config.fsync, KEYS_KEPT)
    node = NodeIo(ctx, node_settings(config, frame_limit(config.max_body_bytes)), node_log, channel,
                  config.fsync)
    return Service(
        app=make_app(node, config),
        io_thread=node,
        channel=channel,
        max_body_bytes=config.max_body_bytes,
        bound=lambda: {"replication": node.endpoint},
    )


#: The Idempotency-Keys a fixed secondary keeps in force (the primary's
#: IDEMPOTENCY_KEYS, at its default: a secondary does not read that setting).
KEYS_KEPT = 100_000
