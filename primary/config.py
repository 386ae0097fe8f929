"""The primary's configuration, read once from the environment at start.

Each setting is declared once, below, with ``shared.runtime.config.setting``; the
rules that tie settings together are in ``PrimaryConfig.from_env``.

Thread: the main thread, at start; the values are immutable after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.consensus.quorum import majority
from shared.consensus.raft import Mode
from shared.node.config import retention_of
from shared.node.settings import NodeSettings
from shared.runtime.config import (
    AppendingNodeConfig,
    ConfigError,
    check_between,
    integer,
    named_endpoints,
    number,
    optional,
    parse_node_name,
    setting,
    settings_group,
    whole_number,
)


@dataclass(frozen=True)
class SecondarySpec:
    name: str
    endpoint: str


def parse_secondaries(variable: str, raw: str) -> tuple[SecondarySpec, ...]:
    """Parse ``[NAME=]tcp://HOST:PORT,...``; an unnamed one is called HOST:PORT."""
    return tuple(SecondarySpec(name, endpoint)
                 for name, endpoint in named_endpoints(variable, raw, name_optional=True))


@dataclass(frozen=True)
class ReplicationSettings:
    """How the replicator talks to secondaries; shared by all of them."""

    heartbeat_interval: float = setting(
        "HEARTBEAT_INTERVAL", "1", number(0.01, 60.0), "seconds between heartbeats to each secondary"
    )
    suspect_after: int = setting(
        "SUSPECT_AFTER", "2", integer(1, 1000), "missed heartbeats before a secondary is suspected"
    )
    unhealthy_after: int = setting(
        "UNHEALTHY_AFTER", "4", integer(1, 1000),
        "missed heartbeats before a secondary is unhealthy; at least SUSPECT_AFTER",
    )
    retry_backoff_max: float = setting(
        "RETRY_BACKOFF_MAX", "10", number(0.01, 3600.0),
        "seconds: ceiling of the retransmission timeout to one secondary, which doubles "
        "with each timeout in a row",
    )
    recovery_timeout: float = setting(
        "RECOVERY_TIMEOUT", "10", number(0.0, 3600.0),
        "seconds a primary that starts empty waits for every secondary to say what it holds",
    )


@dataclass(frozen=True)
class PrimaryConfig(AppendingNodeConfig):
    secondaries: tuple[SecondarySpec, ...] = setting(
        "SECONDARIES", "", parse_secondaries,
        "[NAME=]tcp://HOST:PORT,...; unnamed ones are called HOST:PORT; empty: w=1 only",
    )
    #: None means a majority of the configured cluster.
    quorum: int | None = setting(
        "QUORUM", "", optional(whole_number),
        "nodes, the primary included, that must be up to accept appends; 1: never read-only",
        shown_default="majority of 1+N",
    )
    node_name: str = setting(
        "NODE_NAME", "primary", parse_node_name, "name in logs, /health and acked_by"
    )
    replication: ReplicationSettings = settings_group(ReplicationSettings)

    @property
    def cluster_size(self) -> int:
        return 1 + len(self.secondaries)

    def node_settings(self, frame_limit: int) -> NodeSettings:
        """The engine's configuration: a primary of a new term from its start, no vote."""
        beats = self.replication
        url = f"http://{self.node_name}:{self.http_port}"
        return NodeSettings(
            name=self.node_name, mode=Mode.FIXED_PRIMARY,
            peers=(self.node_name, *(s.name for s in self.secondaries)),
            dials=tuple((s.name, s.endpoint) for s in self.secondaries), bind=None,
            # Nothing stands for election here; a read that cannot be confirmed
            # in this long (a secondary's declared unhealthy by then) is refused.
            election_timeout=beats.unhealthy_after * beats.heartbeat_interval * 1.01,
            heartbeat_interval=beats.heartbeat_interval, frame_limit=frame_limit,
            advertised_url=url, public_url=url, thread_name="replicator-io",
            recovery_timeout=beats.recovery_timeout, retention=retention_of(self),
            suspect_after=beats.suspect_after, unhealthy_after=beats.unhealthy_after,
            max_rto=beats.retry_backoff_max)

    @property
    def write_quorum(self) -> int:
        return majority(self.cluster_size) if self.quorum is None else self.quorum

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "PrimaryConfig":
        config = super().from_env(env)
        if config.replication.unhealthy_after < config.replication.suspect_after:
            raise ConfigError("UNHEALTHY_AFTER: must be at least SUSPECT_AFTER")
        if config.node_name in {s.name for s in config.secondaries}:
            raise ConfigError(f"SECONDARIES: {config.node_name!r} is the primary's own NODE_NAME")
        if config.quorum is not None:
            check_between("QUORUM", config.quorum, 1, config.cluster_size)
        return config
