"""The secondary's configuration, read once from the environment at start.

Each setting is declared once, below, with ``shared.runtime.config.setting``.

Thread: the main thread, at start; the values are immutable after.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from shared.consensus.raft import Mode
from shared.node.settings import NodeSettings
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
        "no longer used (a secondary holds nothing past a gap): accepted, with a WARNING",
    )
    max_ahead_bytes: int = setting(
        "MAX_AHEAD_BYTES", str(32 << 20), integer(1 << 20, 1 << 40),
        "no longer used (flow control on the primary bounds what is in flight): accepted, "
        "with a WARNING",
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


#: Variables that no longer mean anything, and why: set, each is one WARNING at start.
RETIRED = {
    "MAX_AHEAD": "a secondary never holds entries past a gap any more: the primary sends each "
                 "one in order, within its flow-control window",
    "MAX_AHEAD_BYTES": "what is in flight to a secondary is bounded by the primary's flow control",
}

#: How long a linearizable read on a fixed secondary waits for its primary to confirm it.
READ_TIMEOUT_S = 5.0


def node_settings(config: SecondaryConfig, frame_limit: int) -> NodeSettings:
    """The engine's configuration: a secondary that never stands, nor votes."""
    return NodeSettings(
        name=config.node_name, mode=Mode.FIXED_SECONDARY, peers=(config.node_name,), dials=(),
        bind=config.replication_bind, election_timeout=READ_TIMEOUT_S / 2, heartbeat_interval=0.5,
        frame_limit=frame_limit, advertised_url=f"http://{config.node_name}:{config.http_port}",
        public_url=f"http://{config.node_name}:{config.http_port}", thread_name="receiver-io",
        replication_delay=config.replication_delay, drop_reply_fraction=config.drop_ack_fraction,
        keeps_incarnation=bool(config.data_dir) and config.fsync)
