"""The cluster's history: which run of a primary wrote which ids.

A **history id** names one cluster's log for its whole life. A new cluster
mints one on its first append; every node keeps it, and a node never takes
entries of another history.

A **run** is one stretch of a primary's life, from its start to its end,
named ``(number, token)``: the number grows by one each time a primary
starts, the token is random, so two primaries that chose the same number
still differ. A run begins at its **base**, the length of the log it took
over; every id it appends is at or past its base.

The **segments** of a log say which run appended each id: a list of
``(number, token, base)``, bases ascending, the last one the current run.
A secondary keeps the segments of the run it follows. When a new run
reaches it, the first id at which its own segments and the new ones name
different runs is where its log stops agreeing with the primary's; it
drops its entries from that id on (``divergence``). That is how an entry
that only a crashed primary's run ever wrote is rolled back, and it is the
only way a node removes a message.

Pure functions on immutable values; thread: any.
"""

from __future__ import annotations

import secrets
import uuid
from typing import NamedTuple

#: A run that appends nothing leaves no segment, so this many segments means
#: as many primary runs that each appended; far more than any cluster sees.
MAX_SEGMENTS = 10_000


class Run(NamedTuple):
    number: int
    token: str


class Segment(NamedTuple):
    number: int
    token: str
    base: int

    @property
    def run(self) -> Run:
        return Run(self.number, self.token)


Segments = tuple[Segment, ...]


def new_history_id() -> str:
    return uuid.uuid4().hex


def next_run(highest_seen: int) -> Run:
    """A run numbered above every run seen so far."""
    return Run(highest_seen + 1, secrets.token_hex(4))


def start_run(segments: Segments, run: Run, base: int) -> Segments:
    """The segments once ``run`` starts at ``base``. A run that appended
    nothing (its base is the next one's too) leaves no trace."""
    kept = tuple(s for s in segments if s.base < base)
    return (*kept, Segment(run.number, run.token, base))


def run_at(segments: Segments, seq: int) -> Run | None:
    """The run that appended (or will append) ``seq``."""
    found = None
    for segment in segments:
        if segment.base > seq:
            break
        found = segment.run
    return found


def divergence(own: Segments, new: Segments) -> int | None:
    """The first id at which ``own`` and ``new`` name different runs, or None.

    Both are step functions over ids whose steps are their bases, so the
    first disagreement, if any, is at one of those bases."""
    for base in sorted({s.base for s in own} | {s.base for s in new}):
        if run_at(own, base) != run_at(new, base):
            return base
    return None


def to_wire(segments: Segments) -> list[list]:
    return [list(s) for s in segments]


def from_wire(value: object) -> Segments:
    """Segments from JSON; ValueError unless well formed (bases ascending from 0)."""
    if not isinstance(value, list) or len(value) > MAX_SEGMENTS:
        raise ValueError(f"segments must be a list of at most {MAX_SEGMENTS}")
    segments = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or type(item[0]) is not int
            or not isinstance(item[1], str)
            or not 0 < len(item[1]) <= 64
            or type(item[2]) is not int
            or not 0 <= item[0] < 2**53
            or not 0 <= item[2] < 2**53
        ):
            raise ValueError("a segment must be [run number, run token, base]")
        segments.append(Segment(item[0], item[1], item[2]))
    bases = [s.base for s in segments]
    numbers = [s.number for s in segments]
    if segments and (bases[0] != 0 or bases != sorted(set(bases)) or numbers != sorted(numbers)):
        raise ValueError("segments must start at id 0, with bases and run numbers ascending")
    return tuple(segments)
