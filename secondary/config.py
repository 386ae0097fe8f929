"""The secondary's configuration, read once from the environment at start.

Each setting is declared once, below, with ``shared.runtime.config.setting``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from shared.runtime.config import (
    DelayRange,
    NodeConfig,
    delay,
    http_url,
    integer,
    number,
    parse_node_name,
    setting,
    tcp_endpoint,
)


@dataclass(frozen=True)
class SecondaryConfig(NodeConfig):
    http_threads: int = setting(
        "HTTP_THREADS", "8", integer(1, 1024), "Waitress worker threads; reads are quick"
    )
    replication_bind: str = setting(
        "REPLICATION_BIND", "tcp://0.0.0.0:5555", tcp_endpoint,
        "where the replication ROUTER listens; port 0: any free port",
    )
    replication_delay: DelayRange = setting(
        "REPLICATION_DELAY", "0", delay,
        "seconds each message is held back before it is stored and acknowledged; "
        "A-B: uniform in [A, B]",
    )
    max_ahead: int = setting(
        "MAX_AHEAD", "100000", integer(1, 100_000_000),
        "entries kept past a gap at most; beyond, entries are dropped unacknowledged and resent later",
    )
    max_ahead_bytes: int = setting(
        "MAX_AHEAD_BYTES", str(32 << 20), integer(1 << 20, 1 << 40),
        "bytes of entries held in memory past a gap or waiting on REPLICATION_DELAY at most; "
        "beyond, entries are dropped unacknowledged and resent once the gap is filled",
    )
    drop_ack_fraction: float = setting(
        "FAULT_DROP_ACKS", "0", number(0.0, 1.0),
        "fault injection: the fraction of ACKs dropped after the message is stored",
    )
    primary_url: str = setting(
        "PRIMARY_URL", "", http_url,
        "the primary's HTTP address as a browser reaches it; this node's GET / links to its "
        "dashboard there",
    )
    node_name: str = setting(
        "NODE_NAME", "secondary", parse_node_name, "name in ACKs, logs and /health",
        derive=lambda _above: socket.gethostname(), shown_default="the hostname",
    )
    primary_name: str = setting(
        "PRIMARY_NAME", "primary", parse_node_name,
        "the primary's NODE_NAME: with REPLICATION_KEYS_DIR, PRIMARY_NAME.key is the one "
        "client key admitted",
    )
