"""How healthy the primary thinks a secondary is, judged from its silence.

Pure: ``health_at`` counts missed heartbeats from the time it is given, and
a ProgressStatus is the immutable snapshot of one Progress
(shared.consensus.progress) that /health and the quorum check read.

Thread: any (pure functions and immutable values).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class ReplicationSettings(Protocol):
    """The timing a Progress follows (primary.config.ReplicationSettings)."""

    heartbeat_interval: float
    suspect_after: int
    unhealthy_after: int
    retry_backoff_max: float
    batch_max_entries: int
    max_flights: int


class Health(str, enum.Enum):
    UNKNOWN = "unknown"  # never heard from since the primary started
    HEALTHY = "healthy"
    SUSPECTED = "suspected"
    UNHEALTHY = "unhealthy"
    DIVERGED = "diverged"  # another history, a newer run, or entries never sent: never written to


def health_at(
    now: float, last_heard: float | None, watching_since: float, settings: ReplicationSettings
) -> Health:
    """Health from silence, counted in missed heartbeats. Pure; thread: any."""
    silent_for = now - (watching_since if last_heard is None else last_heard)
    missed = int(silent_for / settings.heartbeat_interval)
    if missed >= settings.unhealthy_after:
        return Health.UNHEALTHY
    if last_heard is None:
        return Health.UNKNOWN
    return Health.SUSPECTED if missed >= settings.suspect_after else Health.HEALTHY


@dataclass(frozen=True)
class ProgressStatus:
    """A consistent snapshot for other threads (/health, the quorum check)."""

    name: str
    endpoint: str
    watching_since: float
    last_heard: float | None
    acked_length: int
    incarnation: str | None
    #: Why this secondary is not written to, if it is diverged.
    diverged: str | None = None
    #: Batches sent to it again for want of an ACK, since the primary started.
    resends: int = 0

    def lag(self, log_length: int) -> int:
        """Messages of a log ``log_length`` long that it has not shown to hold."""
        return max(0, log_length - self.acked_length)

    def health(self, now: float, settings: ReplicationSettings) -> Health:
        if self.diverged is not None:
            return Health.DIVERGED
        return health_at(now, self.last_heard, self.watching_since, settings)
