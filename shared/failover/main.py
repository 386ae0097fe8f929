"""A failover node's parts, run by shared.service.run_role: ``python -m primary``
or ``python -m secondary`` with PEERS set.

Both start the same node; ``primary`` only stands for election at once on a
fresh cluster (shared.failover.node_io), so that the compose file's
``primary`` service is a new cluster's first primary.

Thread: main. ``run_role`` starts ``node-io`` and then runs Waitress's loop.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import zmq

from shared.failover.api import make_app
from shared.failover.appends import Appends
from shared.failover.config import FailoverConfig
from shared.failover.node_io import NodeIo
from shared.failover.storage import RaftStorage
from shared.service import Service, run_role
from shared.wire import curve

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
    storage = RaftStorage(config.data_dir, config.fsync, config.idempotency_keys)
    node = NodeIo(ctx, config, storage, channel, stands_at_once)
    peers = ", ".join(f"{peer.name}={peer.endpoint}" for peer in config.others)
    return Service(
        app=make_app(config, node, Appends(config, node)),
        io_thread=node,
        channel=channel,
        bound=lambda: {"replication": node.endpoint},
        detail=f"failover mode, term {node.state.term}, {node.state.length} messages, peers: {peers}",
        max_body_bytes=config.max_body_bytes,
        http_bound=lambda address: node.set_bound_port(urlsplit(address).port),
    )
