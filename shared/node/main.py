"""A failover node's parts, run by shared.service.run_role: ``python -m primary``
or ``python -m secondary`` with PEERS set.

Both start the same node; ``primary`` only stands for election at once on a
fresh cluster (shared.node.node_io), so that the compose file's
``primary`` service is a new cluster's first primary.

Thread: main. ``run_role`` starts ``node-io`` and then runs Waitress's loop.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import zmq

from shared.log.node_log import open_log
from shared.node.api import make_app
from shared.node.appends import AppendPolicy, Appends
from shared.node.config import FailoverConfig
from shared.node.node_io import NodeIo
from shared.service import Service, run_role
from shared.wire import curve
from shared.wire.frames import frame_limit

SUMMARY = """\
A node of a failover cluster of the replicated log (PEERS is set): the nodes
elect the primary among themselves, and any node takes appends (a secondary
forwards them). Configured by environment variables only, read once at start."""


def wanted() -> bool:
    """Whether this process is a failover node: PEERS is set."""
    return bool(os.environ.get("PEERS", "").strip())


def main(role: str, stands_at_once: bool) -> int:
    return run_role(role, SUMMARY, FailoverConfig,
                    lambda config, ctx: build(config, ctx, stands_at_once))


def build(config: FailoverConfig, ctx: zmq.Context, stands_at_once: bool) -> Service:
    channel = curve.load_peers(config.replication_keys_dir, config.node_name,
                               [peer.name for peer in config.others])
    node_log = open_log(config.data_dir, "failover", config.fsync, config.idempotency_keys)
    settings = config.node_settings(stands_at_once, frame_limit(config.max_body_bytes))
    node = NodeIo(ctx, settings, node_log, channel, config.fsync)
    appends = Appends(AppendPolicy(config.node_name, config.max_waiting_appends, forwards=True), node)
    peers = ", ".join(f"{peer.name}={peer.endpoint}" for peer in config.others)
    return Service(
        app=make_app(config, node, appends),
        io_thread=node,
        channel=channel,
        bound=lambda: {"replication": node.endpoint},
        detail=f"failover mode, term {node.state.term}, {node.state.length} messages, peers: {peers}",
        max_body_bytes=config.max_body_bytes,
        http_bound=lambda address: node.set_bound_port(urlsplit(address).port),
    )
