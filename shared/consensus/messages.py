"""The replication messages, as the consensus core reads and writes them.

Plain frozen values: shared/wire/protocol.py turns them into frames and
back, and describes each field. They live here, below the wire, so that the
rules in shared/consensus/ can take and return them without importing any
I/O.

Thread: any (immutable values; new_corr_id is atomic).
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Union

from shared.consensus import history as hist

# A process-wide prefix and a counter: unique across restarts, and far
# cheaper than a uuid4 per frame.
_CORR_PREFIX = uuid.uuid4().hex[:12]
_corr_counter = itertools.count()


@dataclass(frozen=True)
class Leader:
    """Who sends an APPEND or PING: the history and the runs that wrote it."""

    history: str | None
    segments: hist.Segments

    @property
    def run(self) -> hist.Run | None:
        return self.segments[-1].run if self.segments else None

    @cached_property
    def wire(self) -> bytes:
        """Its JSON, as every APPEND and PING carries it: encoded once per run."""
        return json.dumps({"history": self.history, "segments": hist.to_wire(self.segments)}).encode()


@dataclass(frozen=True)
class Append:
    corr_id: str
    leader: Leader
    first: int
    entries: list[bytes]  # each a JSON string literal, validated


@dataclass(frozen=True)
class Ping:
    corr_id: str
    leader: Leader


@dataclass(frozen=True)
class Fetch:
    corr_id: str
    start: int
    #: The largest frame the primary accepts: its ENTRIES answer stays within it.
    frame_limit: int | None = None


@dataclass(frozen=True)
class Status:
    """What a secondary says about itself in every ACK and PONG."""

    node: str
    incarnation: str
    length: int
    history: str | None = None
    run: hist.Run | None = None
    #: The largest frame it accepts (None from a node that does not say):
    #: what it is sent stays within it. Its configuration, not its state,
    #: so two statuses that say the same about what it holds are equal.
    frame_limit: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Ack:
    corr_id: str
    status: Status
    acked: list[tuple[int, int]]


@dataclass(frozen=True)
class Pong:
    corr_id: str
    status: Status
    segments: hist.Segments = ()


@dataclass(frozen=True)
class Entries:
    corr_id: str
    first: int
    entries: list[bytes]


Message = Union[Append, Ping, Fetch, Ack, Pong, Entries]


def new_corr_id() -> str:
    """A fresh correlation id. Thread: any (itertools.count is atomic)."""
    return f"{_CORR_PREFIX}{next(_corr_counter):x}"
