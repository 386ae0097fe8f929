"""How many nodes make a quorum, and how many count toward one now.

Pure: ``majority`` and ``ReplicationView.judge`` take the cluster's size or
its peers' Progress and the time, and decide nothing else.

Thread: ``judge`` runs on the thread that owns the Progress objects (the
replicator's I/O thread); a ReplicationView is immutable, for any thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.consensus.health import Health, ProgressStatus
from shared.consensus.progress import Progress


def majority(nodes: int) -> int:
    """The least number of ``nodes`` that any two such sets share one of."""
    return nodes // 2 + 1


@dataclass(frozen=True)
class ReplicationView:
    """The secondaries' statuses and health, judged at one moment ``now``."""

    now: float
    secondaries: list[tuple[ProgressStatus, Health]]
    #: Nodes counting toward the write quorum: the primary, and every
    #: secondary neither declared Unhealthy nor diverged (a Suspected one
    #: still counts, and one not heard from yet gets ``unhealthy_after``
    #: heartbeats of grace).
    available_nodes: int

    @classmethod
    def judge(cls, peers: list[Progress], now: float) -> "ReplicationView":
        """The view of ``peers`` at ``now``."""
        secondaries = [(p.status, p.health(now)) for p in peers]
        available = 1 + sum(health not in (Health.UNHEALTHY, Health.DIVERGED)
                            for _, health in secondaries)
        return cls(now, secondaries, available)
