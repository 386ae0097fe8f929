"""Paged reads: GET /messages?from=N&limit=1000 at offsets spread over a large log.

A page is a slice of the log, so it should cost the same at any offset: the
figure is the median time of a page at the start, at 25%, 50% and 75% of
the log and at its last page, and the ratio of the last page's median to
the first's shows whether the time grows with ``from``. Every page read is
compared with what the node was given, message for message.

It needs a node that already holds a large log: the ready-time scenario's
primary (tests.bench.durability), started on a DATA_DIR written directly,
runs it before its log changes.

Thread: the benchmark's main thread.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

from tests.support.http import Response, request
from tests.support.processes import Node

PAGE = 1_000
#: Where the pages start, as fractions of the log; 1.0 stands for the last page.
POSITIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Reads of each page; the median counts.
READS = 7


@dataclass
class PagedReads:
    messages: int
    #: Median read time of the page at each offset, in ms, in offset order.
    median_ms: dict[int, float]
    #: What the pages held that was not stored there; empty when nothing.
    problem: str

    @property
    def slowest_ms(self) -> float:
        return max(self.median_ms.values())

    @property
    def last_over_first(self) -> float:
        """The last page's median over the first's: about 1 when ``from`` costs nothing."""
        medians = list(self.median_ms.values())
        return medians[-1] / medians[0]

    def to_json(self) -> dict:
        return {
            "messages": self.messages,
            "page": PAGE,
            "reads_per_offset": READS,
            "median_ms": {str(offset): ms for offset, ms in self.median_ms.items()},
            "last_over_first": round(self.last_over_first, 2),
            "ok": not self.problem,
            "problem": self.problem,
        }


def offsets(messages: int) -> list[int]:
    """The first id of each page timed: never past the last full page."""
    last_page = messages - PAGE
    return sorted({min(int(messages * position), last_page) for position in POSITIONS})


def time_pages(node: Node, messages: int, stored: Callable[[int], str]) -> PagedReads:
    """Time READS reads of a page at each offset of ``node``'s log of
    ``messages``, whose message at id ``seq`` is ``stored(seq)``."""
    starts = offsets(messages)
    times: dict[int, list[float]] = {start: [] for start in starts}
    problems = []
    # Round after round over every offset: a busy moment of the machine
    # falls on every offset alike rather than on one.
    for _ in range(READS):
        for start in starts:
            response = request("GET", f"{node.url}/messages?from={start}&limit={PAGE}")
            times[start].append(response.elapsed * 1000)
            problem = _page_problem(response, start, stored)
            if problem:
                problems.append(problem)
    return PagedReads(
        messages,
        {start: round(statistics.median(each), 2) for start, each in times.items()},
        "; ".join(sorted(set(problems))),
    )


def _page_problem(response: Response, start: int, stored: Callable[[int], str]) -> str:
    """What is wrong with the page from ``start``; empty if nothing."""
    if response.status != 200:
        return f"page from {start:,}: {response.status} {response.body[:200]!r}"
    page = response.json
    expected = [stored(seq) for seq in range(start, start + PAGE)]
    if page["messages"] != expected or page["from"] != start or page["next"] != start + PAGE:
        return (f"page from {start:,}: {len(page['messages'])} messages from {page['from']}, "
                f"next {page['next']}, not the {PAGE} stored from {start:,}")
    return ""
