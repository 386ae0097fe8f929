"""Process entry point of the primary: its parts, run by shared.service.run_role.

Without PEERS, the fixed primary: the Raft engine as a primary that never
changes (shared.consensus.raft.Mode.FIXED_PRIMARY), whose ``node-io``
thread is called ``replicator-io``. With PEERS, a failover node that stands
for election at once on a fresh cluster (shared.node.main).

Thread: main. ``run_role`` starts the I/O thread and then runs Waitress's loop.
"""

from __future__ import annotations

import zmq

from primary.api import make_app
from primary.config import PrimaryConfig
from shared.log.node_log import open_log
from shared.node import main as failover
from shared.node.appends import AppendPolicy, Appends
from shared.node.node_io import NodeIo
from shared.service import Service, run_role
from shared.wire import curve
from shared.wire.frames import frame_limit

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
    node_log = open_log(config.data_dir, "primary", config.fsync, config.idempotency_keys)
    node = NodeIo(ctx, config.node_settings(frame_limit(config.max_body_bytes)), node_log, channel,
                  config.fsync)
    appends = Appends(AppendPolicy(config.node_name, config.max_waiting_appends,
                                   quorum=config.write_quorum), node)
    secondaries = ", ".join(f"{s.name}={s.endpoint}" for s in config.secondaries)
    return Service(
        app=make_app(config, node, appends),
        io_thread=node,
        channel=channel,
        detail=f"secondaries: {secondaries or 'none (w=1 only)'}",
        max_body_bytes=config.max_body_bytes,
    )
