"""What ``node-io`` needs to know of its node, whatever its role: one value.

Each role reads its own environment variables (primary.config,
secondary.config, shared.node.config for a failover node) and turns them
into NodeSettings: the engine's configuration (shared.consensus.raft.Mode),
the cluster it belongs to, where it listens and whom it dials, and its
timings. ``node-io`` reads nothing else.

Thread: any (immutable).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.consensus.raft import Mode
from shared.runtime.config import DelayRange


@dataclass(frozen=True)
class Retention:
    """RETENTION_MESSAGES, RETENTION_BYTES, RETENTION_SECONDS: 0 keeps everything."""

    messages: int = 0
    size: int = 0
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.messages or self.size or self.seconds)


@dataclass(frozen=True)
class NodeSettings:
    name: str
    mode: Mode
    #: Every node of the cluster, this one included (a fixed secondary knows only itself).
    peers: tuple[str, ...]
    #: Whom it dials, and where: (name, endpoint). A fixed secondary dials no one.
    dials: tuple[tuple[str, str], ...]
    #: Where its ROUTER listens (None: it listens nowhere, as a fixed primary).
    bind: str | None
    election_timeout: float
    heartbeat_interval: float
    frame_limit: int
    #: The HTTP addresses it announces: where others forward appends, where browsers go.
    advertised_url: str
    public_url: str
    #: The thread's name: what its log lines carry.
    thread_name: str = "node-io"
    stands_at_once: bool = False
    recovery_timeout: float = 10.0
    replication_delay: DelayRange = DelayRange()
    retention: Retention = Retention()
    #: Missed heartbeats before a silent secondary is suspected, then unhealthy.
    suspect_after: int = 2
    unhealthy_after: int = 4
    #: The longest a retransmission timeout grows to (shared.consensus.raft_progress).
    max_rto: float = 10.0
    #: Fault injection: the fraction of its answers to AppendEntries dropped after storing.
    drop_reply_fraction: float = 0.0
    #: Whether this node's log outlives it (DATA_DIR with FSYNC=always): then
    #: its incarnation is kept across restarts.
    keeps_incarnation: bool = False

    @property
    def majority(self) -> int:
        return len(self.peers) // 2 + 1
