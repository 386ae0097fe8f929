"""A failover node's configuration, read once from the environment at start.

``python -m primary`` and ``python -m secondary`` both read it when PEERS is
set (shared.node.main). Each setting is declared once, below; the rules
that tie settings together are in ``FailoverConfig.from_env``.

Thread: the main thread, at start; the values are immutable after.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping

from shared.consensus.quorum import majority
from shared.consensus.raft import Mode
from shared.node.settings import NodeSettings, Retention
from shared.runtime.config import (
    AppendingNodeConfig, ConfigError, DelayRange, delay, http_url, named_endpoints, number, parse_node_name,
    setting, tcp_endpoint,
)

#: How many heartbeats an election timeout must span at least: fewer, and one
#: slow pass or a lost frame or two would start an election.
HEARTBEATS_PER_ELECTION_TIMEOUT = 5


@dataclass(frozen=True)
class Peer:
    """One node of the cluster, as this node reaches it."""

    name: str
    endpoint: str


def parse_peers(variable: str, raw: str) -> tuple[Peer, ...]:
    """``NAME=tcp://HOST:PORT,...``; empty means the fixed-role mode."""
    return tuple(Peer(name, endpoint) for name, endpoint in named_endpoints(variable, raw, name_optional=False))


@dataclass(frozen=True)
class FailoverConfig(AppendingNodeConfig):
    node_name: str = setting(
        "NODE_NAME", "node", parse_node_name, "this node's name in PEERS, logs and /health",
        derive=lambda _above: socket.gethostname(), shown_default="the hostname",
    )
    peers: tuple[Peer, ...] = setting(
        "PEERS", "", parse_peers,
        "NAME=tcp://HOST:PORT,... : every node of the cluster, this one included, as this "
        "node reaches it; set, the node runs in failover mode",
    )
    replication_bind: str = setting(
        "REPLICATION_BIND", "tcp://0.0.0.0:5555", tcp_endpoint,
        "where the replication ROUTER listens; port 0: any free port",
    )
    advertised_url: str = setting(
        "ADVERTISED_URL", "", http_url,
        "this node's HTTP address as the other nodes reach it, where they forward appends; "
        "a port 0 in it stands for the port HTTP bound",
        derive=lambda above: f"http://{above['node_name']}:{above['http_port']}",
        shown_default="http://NODE_NAME:HTTP_PORT",
    )
    public_url: str = setting(
        "PUBLIC_URL", "", http_url,
        "this node's HTTP address as clients and browsers reach it: the dashboard of every "
        "node links to it, and falls back on it; a port 0 stands for the port HTTP bound",
        derive=lambda above: above["advertised_url"], shown_default="ADVERTISED_URL",
    )
    election_timeout: float = setting(
        "ELECTION_TIMEOUT", "1", number(0.05, 3600.0),
        "seconds: a secondary that hears no primary for a random time in [T, 2T] stands "
        "for election; at least 5 x HEARTBEAT_INTERVAL",
    )
    heartbeat_interval: float = setting(
        "HEARTBEAT_INTERVAL", "0.1", number(0.01, 60.0),
        "seconds between the primary's heartbeats to each node",
    )
    replication_delay: DelayRange = setting(
        "REPLICATION_DELAY", "0", delay,
        "seconds the entries a primary sends are held back before this node stores and "
        "acknowledges them (never heartbeats, votes or terms); A-B: uniform in [A, B]",
    )

    @property
    def cluster_size(self) -> int:
        return len(self.peers)

    @property
    def majority(self) -> int:
        return majority(self.cluster_size)

    @property
    def others(self) -> tuple[Peer, ...]:
        return tuple(peer for peer in self.peers if peer.name != self.node_name)

    def node_settings(self, stands_at_once: bool, frame_limit: int) -> NodeSettings:
        return NodeSettings(
            name=self.node_name, mode=Mode.ELECTED, peers=tuple(peer.name for peer in self.peers),
            dials=tuple((peer.name, peer.endpoint) for peer in self.others), bind=self.replication_bind,
            election_timeout=self.election_timeout, heartbeat_interval=self.heartbeat_interval,
            frame_limit=frame_limit, advertised_url=self.advertised_url, public_url=self.public_url,
            stands_at_once=stands_at_once, replication_delay=self.replication_delay,
            retention=retention_of(self))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "FailoverConfig":
        config = super().from_env(env)
        if not config.data_dir:
            raise ConfigError("DATA_DIR: required with PEERS: a node must remember its term and "
                              "its vote across a restart, or it could vote twice in one term")
        if config.node_name not in {peer.name for peer in config.peers}:
            raise ConfigError(f"PEERS: must name this node, NODE_NAME={config.node_name!r}")
        minimum = HEARTBEATS_PER_ELECTION_TIMEOUT * config.heartbeat_interval
        if config.election_timeout < minimum:
            raise ConfigError(f"ELECTION_TIMEOUT: must be at least {HEARTBEATS_PER_ELECTION_TIMEOUT} "
                              f"x HEARTBEAT_INTERVAL ({minimum:g} s), got {config.election_timeout:g}")
        return config


def retention_of(config: AppendingNodeConfig) -> Retention:
    return Retention(config.retention_messages, config.retention_bytes, config.retention_seconds)
