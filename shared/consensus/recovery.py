"""How a primary that starts without a log finds the one to take over.

A primary starts empty when it keeps its log in memory, or when its
DATA_DIR was lost. Before it accepts an append it asks every configured
secondary, with PINGs that name no history, which history it holds, how
many messages, and under which runs (shared.consensus.history). Then:

- **No secondary holds a history:** the cluster is new. Once every
  secondary has answered, or two heartbeat intervals after the first one
  did, or after ``recovery_timeout`` if none does, the primary starts
  fresh; its first append mints the history.
- **Some secondary holds one:** the primary waits for every configured
  secondary, or ``recovery_timeout``. It takes the history most of them
  hold, and of its holders, those that follow its newest run are the
  sources: they agree on every id they hold. It fetches, in FETCH/ENTRIES
  round trips, the longest gap-free run from id 0 of everything the sources
  hold, entries past a gap included, with ids unchanged.

A secondary that was down through all this and holds more comes back to a
newer run and truncates what it alone held (secondary.receiver). That is
the documented limit of recovery without a disk.

This module is sans-I/O, like the Follower: the replicator's I/O thread
feeds it replies and the time, sends the FETCHes it asks for, and appends
what comes back. Thread: the replicator's I/O thread only.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from shared.consensus import messages
from shared.consensus.history import Segments

#: The name its lines carried before shared/ was grouped by concern: log
#: filters and alerts key on it, so it stays.
log = logging.getLogger("primary.recovery")


@dataclass(frozen=True)
class Outcome:
    """What recovery found: the history to continue (None for a new cluster),
    the segments of the log it fetched, and the highest run number seen."""

    history: str | None
    segments: Segments
    highest_run: int


@dataclass
class _Fetch:
    source: str
    corr_id: str
    sent_at: float


class Recovery:
    def __init__(self, secondaries: list[str], heartbeat_interval: float,
                 timeout: float, now: float) -> None:
        self._secondaries = secondaries
        self._fresh_grace = 2 * heartbeat_interval
        #: A source silent this long on a FETCH is passed over.
        self._fetch_timeout = max(1.0, 2 * heartbeat_interval)
        self._started = now
        self._deadline = now + timeout
        self._first_answer: float | None = None
        self._answers: dict[str, tuple[messages.Status, Segments]] = {}
        self.outcome: Outcome | None = None
        self._chosen: Outcome | None = None  # the log being fetched
        self._sources: list[str] = []  # longest log first
        self._untried: list[str] = []  # sources not yet asked for the next id
        self._fetch: _Fetch | None = None
        #: The next id to fetch: how much of the log is recovered.
        self.recovered = 0
        self.fetching = False
        log.info("recovering: asking %d secondaries for their logs (for up to %gs)",
                 len(secondaries), timeout)

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def on_pong(self, name: str, pong: messages.Pong, now: float) -> None:
        if name not in self._answers and self._first_answer is None:
            self._first_answer = now
        self._answers[name] = (pong.status, pong.segments)

    def step(self, now: float) -> None:
        """Decide, once enough have answered, which log to take over."""
        if self.fetching or self.done:
            return
        everyone = len(self._answers) == len(self._secondaries)
        holders = {n: a for n, a in self._answers.items() if a[0].history is not None}
        if not holders:
            grace_over = self._first_answer is not None and now >= self._first_answer + self._fresh_grace
            if everyone or grace_over or now >= self._deadline:
                self._finish(Outcome(None, (), 0), now)
            return
        if not everyone and now < self._deadline:
            return
        self._choose(holders, now)

    def next_fetch(self, now: float) -> tuple[str, int] | None:
        """The source to ask for the entries from ``recovered`` on, if one is due."""
        if not self.fetching:
            return None
        if self._fetch is not None:
            if now < self._fetch.sent_at + self._fetch_timeout:
                return None
            log.warning("recovering: %s did not answer a fetch; trying the others", self._fetch.source)
            self._untried.remove(self._fetch.source)
            self._fetch = None
        if not self._untried:
            self._finish(self._chosen, now)
            return None
        return self._untried[0], self.recovered

    def sent_fetch(self, source: str, corr_id: str, now: float) -> None:
        self._fetch = _Fetch(source, corr_id, now)

    def on_entries(self, source: str, entries: messages.Entries) -> bool:
        """Whether these entries are the ones asked for; if so the caller appends them."""
        fetch = self._fetch
        if fetch is None or fetch.source != source or fetch.corr_id != entries.corr_id:
            return False
        self._fetch = None
        if entries.first != self.recovered:
            return False
        if entries.entries:
            self.recovered += len(entries.entries)
            self._untried = list(self._sources)
        else:
            self._untried.remove(source)
        return bool(entries.entries)

    def deadline(self, now: float) -> float | None:
        """When ``step`` or ``next_fetch`` may next have something to do."""
        if self.done:
            return None
        if self.fetching:
            # An unanswered fetch times out; otherwise the next is sent at once
            # (or when its socket can take it, which wakes the loop anyway).
            return None if self._fetch is None else self._fetch.sent_at + self._fetch_timeout
        deadlines = [self._deadline]
        holders = any(status.history is not None for status, _ in self._answers.values())
        if self._first_answer is not None and not holders:
            deadlines.append(self._first_answer + self._fresh_grace)
        return min(deadlines)

    def _choose(self, holders: dict, now: float) -> None:
        counts = Counter(status.history for status, _ in holders.values())
        longest = {h: max(s.length for s, _ in holders.values() if s.history == h) for h in counts}
        history = max(counts, key=lambda h: (counts[h], longest[h]))
        members = {n: a for n, a in holders.items() if a[0].history == history}
        highest = max(s.run.number for s, _ in members.values() if s.run is not None)
        newest = {n: a for n, a in members.items() if a[0].run is not None and a[0].run.number == highest}
        # Two primaries may have picked the same number; the longer log's run wins.
        run = max((a[0].run for a in newest.values()),
                  key=lambda r: max(s.length for s, _ in newest.values() if s.run == r))
        sources = {n: a for n, a in newest.items() if a[0].run == run}
        self._sources = sorted(sources, key=lambda n: -sources[n][0].length)
        self._untried = list(self._sources)
        segments = next(iter(sources.values()))[1]
        self._chosen = Outcome(history, segments, highest)
        self.fetching = True
        others = sorted(set(self._secondaries) - set(self._answers))
        log.info(
            "recovering history %s from %s (the longest holds %d messages)%s",
            history, ", ".join(self._sources), sources[self._sources[0]][0].length,
            f"; no answer from {', '.join(others)}" if others else "",
        )

    def _finish(self, outcome: Outcome, now: float) -> None:
        self.outcome = outcome
        self.fetching = False
        took = now - self._started
        if outcome.history is None:
            log.info("recovery found no history: a new cluster (%.2fs)", took)
        else:
            log.info("recovered %d messages of history %s from %s in %.2fs",
                     self.recovered, outcome.history, ", ".join(self._sources), took)
