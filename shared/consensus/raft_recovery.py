"""How a fixed primary that starts without a log takes one over from its secondaries.

A fixed primary starts empty when it keeps its log in memory, or when its
DATA_DIR was lost. It cannot simply begin a term: its secondaries hold
the log, acknowledged writes included. This is Viewstamped Replication's
recovery (Liskov & Cowling, "Viewstamped Replication Revisited", §4.3) and
view change (§4.2), where the one primary plays the new view's primary: it
asks every configured secondary what it holds (StateRequest, repeated every
heartbeat, or ASK_AGAIN_S if sooner, until answered), then:

- **No secondary keeps a cluster's log:** the cluster is new. Once every
  secondary has answered, or two heartbeat intervals after the first one
  did, or after ``timeout`` if none does, recovery ends with nothing; the
  primary's first append names the new cluster.
- **Some do:** it waits until every secondary has answered, or ``timeout``.
  It takes the cluster of the newest run any member holds an entry of
  (``_choose_cluster``), and of its members, the most up-to-date log by
  Raft's order (last term, then length): every entry acknowledged by any
  answering member is in it, since one primary wrote every term and log
  matching holds. It fetches that log
  (a FetchRequest answered by several FetchReplies, back to back, one a
  tick of the source's core, so that the source cuts and sends a page while
  this node takes the one before; a start and its keys first, a page per
  fetch, when the source's log was compacted). The first fetch asks for
  FETCH_PAGES pages, each later one for about FETCH_BYTES of pages the size
  of those that came (at most MAX_FETCH_PAGES): each round trip leaves one
  side idle for a page's time, so a log of small messages comes in few
  fetches, while one of large messages never has much more than FETCH_BYTES
  on its way. A page is taken only if the source's log before it is the one
  recovered so far (its length, last term and checksum, the check
  AppendEntries makes: RaftNode._takes_page); a source whose page is not
  taken is passed over. The sources are the members whose log ends in the
  best one's term, longest first (their logs agree as far as the shorter
  goes); once none is left, those of the next term (a member that answers
  after the decision joins them in its rank). A source whose log ends is
  passed over too while a candidate said it held more (one that restarted
  without its log ends short of what it said), and recovery ends once what
  was taken is as long as the longest candidate said, or once every source
  was passed over, with what it took. A source silent for ``timeout`` is
  not given up: the next candidate is asked meanwhile, and it again in its
  turn, for as long as it takes. Ending with part of the log, the primary
  would begin a run that truncates the rest on every secondary once they
  answer again, acknowledged entries included.

Then the primary begins a term above every term it heard, and unless every
secondary answered, at least its clock (RaftNode._run_after_recovery), so
that its runs are numbered in the order it began them; it replicates as
usual: a secondary's entries past the recovered log are truncated by log
matching. A secondary that was silent all along and held more loses what
it alone held: the documented limit of recovery without a disk.

Sans-I/O: RaftNode (shared.consensus.raft) feeds it replies and the time,
sends what ``requests`` returns, and appends what ``take_recovered`` hands
over. It logs its progress. Thread: the owner's I/O thread only.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from shared.consensus.raft_log import ENTRY_BODY, ENTRY_COUNT, Entry, KeyRecord, LogStart, Snapshot
from shared.consensus.raft_messages import (
    MAX_FETCH_PAGES, FetchReply, FetchRequest, StateReply, StateRequest,
)

#: The name its lines carried before the fixed roles ran on the Raft engine:
#: log filters and alerts key on it, so it stays.
log = logging.getLogger("primary.recovery")

#: How often, at most, a silent secondary is asked again (a question that
#: changes nothing): a question lost on a connection still coming up costs
#: this long, not a heartbeat of the fixed primary (1 s unless told).
ASK_AGAIN_S = 0.1
#: Pages the first fetch asks for: the source sends them back to back.
FETCH_PAGES = 4
#: Bytes of entries a later fetch asks for, about: as many pages as that
#: takes, judged by the pages that came before.
FETCH_BYTES = 16 << 20


@dataclass
class _Fetch:
    """The fetch in flight: its source, where its next page must begin, the
    keys offset it asked for, when it was sent or last brought a page, how
    many of its pages are still to come, and the bytes of those that came."""

    source: str
    length: int
    keys_offset: int
    heard_at: float
    pages_left: int
    received_bytes: int = 0


class Recovery:
    def __init__(self, name: str, secondaries: Sequence[str], now: float, heartbeat_interval: float,
                 timeout: float, takes_page: Callable[[FetchReply], bool]) -> None:
        """``takes_page(page)``: whether a page continues the log recovered so
        far (the owner's log, which ``take_recovered`` fills)."""
        self._name = name
        self._takes_page = takes_page
        self._secondaries = tuple(secondaries)
        self._interval = min(heartbeat_interval, ASK_AGAIN_S)
        self._fresh_grace = 2 * heartbeat_interval
        #: A fetch unanswered this long is sent again (to the next candidate,
        #: once its source was silent for ``timeout``).
        self._fetch_timeout = max(1.0, 2 * heartbeat_interval)
        self._started = now
        self._timeout = timeout
        self._deadline = now + timeout
        self._source_deadline = 0.0  # when the next candidate is asked, if the source stays silent
        self._next_ask = now
        self._first_answer: float | None = None
        self._answers: dict[str, StateReply] = {}
        #: The members to fetch from, best first, as each answered: none can lose
        #: an entry while no primary writes, but by restarting without its log.
        self._sources: dict[str, StateReply] = {}
        #: The candidate fetched from (``_candidates``); None: the first.
        self._source: str | None = None
        self._fetch: _Fetch | None = None
        self._pages = FETCH_PAGES  # what the next fetch asks for
        #: A start being received: it, its count of keys, and the keys so far.
        self._snapshot: tuple[LogStart, int, list[KeyRecord]] | None = None
        self._recovered_snapshot: Snapshot | None = None
        self._recovered: list[Entry] = []
        self._length = 0  # the log's length once what was handed over is appended
        self._messages = 0
        self.fetching = False
        self.done = False
        #: Once done: the cluster whose log it took over (None: a new cluster),
        #: the highest term any secondary spoke in, and whether every one of
        #: them had answered when it decided (it then knows every run any heard of).
        self.cluster: str | None = None
        self.highest_term = 0
        self.heard_everyone = False
        log.info("recovering: asking %d secondaries for their logs (for up to %gs)",
                 len(self._secondaries), timeout)

    @property
    def recovered_messages(self) -> int:
        """Messages taken over so far (for /health and the log)."""
        return self._messages

    def deadline(self) -> float:
        """When ``requests`` may next have something to do."""
        if self.fetching:
            return self._fetch.heard_at + self._fetch_timeout if self._fetch else self._next_ask
        deadlines = [self._deadline, self._next_ask]
        if self._first_answer is not None and not self._holders():
            deadlines.append(self._first_answer + self._fresh_grace)
        return min(deadlines)

    def requests(self, now: float) -> list[tuple[str, StateRequest | FetchRequest]]:
        """What to send now; decides, once enough have answered."""
        if self.done:
            return []
        if not self.fetching:
            self._decide(now)
        if self.fetching:
            return self._next_fetch(now)
        if self.done or now < self._next_ask:
            return []
        self._next_ask = now + self._interval
        return [(peer, StateRequest(self._name, 0)) for peer in self._secondaries if peer not in self._answers]

    def ask_again(self, peer: str, now: float) -> None:
        """``peer`` just became reachable: ask it now if it has not answered; if
        it is the source being fetched from, fetch again now."""
        if self._fetch is not None and self._fetch.source == peer:
            # It may have gone before the connection was up: fetch again, now
            # (as if it timed out: a source that only ever reconnects is silent).
            self._fetch.heard_at = now - self._fetch_timeout
        if peer not in self._answers:
            self._next_ask = self._started  # ask every silent one again, now

    def take(self, reply: StateReply | FetchReply, now: float) -> None:
        if isinstance(reply, StateReply):
            if reply.sender not in self._answers and self._first_answer is None:
                self._first_answer = now
            late = self.fetching and reply.sender not in self._answers
            self._answers[reply.sender] = reply
            # Its log's last term too: under FSYNC=off, a stored term may lag the log.
            self.highest_term = max(self.highest_term, reply.term, reply.last_log_term)
            if late and reply.cluster == self.cluster:
                self._add_source(reply)
        elif self._fetch is not None and reply.sender == self._fetch.source:
            self._source_deadline = now + self._timeout
            self._take_fetched(reply, now)

    def take_recovered(self) -> tuple[Snapshot | None, list[Entry]]:
        """What recovery took since the last call: a start to install, then entries."""
        snapshot, entries = self._recovered_snapshot, self._recovered
        self._recovered_snapshot, self._recovered = None, []
        return snapshot, entries

    # -- its own ------------------------------------------------------------------------

    def _holders(self) -> dict[str, StateReply]:
        return {name: reply for name, reply in self._answers.items() if reply.cluster is not None}

    def _decide(self, now: float) -> None:
        holders = self._holders()
        everyone = self.heard_everyone = len(self._answers) == len(self._secondaries)
        if not holders:
            grace_over = self._first_answer is not None and now >= self._first_answer + self._fresh_grace
            if everyone or grace_over or now >= self._deadline:
                self._finish(None, now)
            return
        if not everyone and now < self._deadline:
            return
        self.cluster = self._choose_cluster(holders)
        members = {name: r for name, r in holders.items() if r.cluster == self.cluster}
        for member in members.values():
            self._add_source(member)
        self._source_deadline = now + self._timeout
        self.fetching = True
        silent = sorted(set(self._secondaries) - set(self._answers))
        log.info("recovering history %s from %s (%d entries in the longest log)%s",
                 self.cluster, ", ".join(self._sources), next(iter(self._sources.values())).log_length,
                 f"; no answer from {', '.join(silent)}" if silent else "")

    @staticmethod
    def _choose_cluster(holders: dict[str, StateReply]) -> str:
        """The cluster of the newest run any member holds an entry of (then the
        one most members keep, then the longest log): every run is this
        primary's, so that is the log it last led, with whatever it acknowledged
        since it left another (RaftNode._run_after_recovery)."""
        counts = Counter(reply.cluster for reply in holders.values())
        newest = {c: max(r.last_log_term for r in holders.values() if r.cluster == c) for c in counts}
        longest = {c: max(r.log_length for r in holders.values() if r.cluster == c) for c in counts}
        return max(counts, key=lambda c: (newest[c], counts[c], longest[c]))

    def _add_source(self, answer: StateReply) -> None:
        """A member of the cluster taken over becomes a source, in its rank (an
        answer that came after the decision too: each of its pages is checked
        as any other's, so it can only bring what agrees with what was taken)."""
        ranked = sorted([*self._sources.values(), answer], key=lambda r: (r.last_log_term, r.log_length),
                        reverse=True)
        self._sources = {r.sender: r for r in ranked}

    def _next_fetch(self, now: float) -> list[tuple[str, FetchRequest]]:
        if self._fetch is not None:
            if now < self._fetch.heard_at + self._fetch_timeout:
                return []
            silent, self._fetch = self._fetch.source, None
            if now >= self._source_deadline:  # until then, a fetch or its answer may just be lost
                self._on_silent_source(silent, now)
        if not self._sources:
            self._finish(self.cluster, now)
            return []
        source = self._current_source()
        keys_offset = len(self._snapshot[2]) if self._snapshot else 0
        self._fetch = _Fetch(source, self._length, keys_offset, now, self._pages)
        return [(source, FetchRequest(self._name, 0, self._length, keys_offset, self._pages))]

    def _current_source(self) -> str:
        candidates = self._candidates()
        if self._source not in candidates:  # none yet, or passed over, or outranked
            self._source = candidates[0]
        return self._source

    def _candidates(self) -> list[str]:
        """The sources the log is taken from now: those whose log ends in the
        term of the best one left, longest first. Their logs agree as far as
        the shorter goes (one primary wrote that term), so each takes over
        where another left; a source whose log ends in an older term may hold
        entries that one overwrote, and is asked only once none is left."""
        best_term = next(iter(self._sources.values())).last_log_term
        return [name for name, answer in self._sources.items() if answer.last_log_term == best_term]

    def _on_silent_source(self, silent: str, now: float) -> None:
        """A source silent for ``timeout`` is not given up: silence proves
        nothing (a partition, a pause), and ending with part of the log, the
        new run would truncate the rest on every secondary that holds it once
        they answer again, acknowledged entries included. The next candidate
        is asked meanwhile, and it again in its turn, for as long as it takes."""
        candidates = self._candidates()
        if silent in candidates:
            self._source = candidates[(candidates.index(silent) + 1) % len(candidates)]
        following = self._current_source()
        log.warning("recovering: %s did not answer a fetch for %.1fs; %s", silent,
                    now - (self._source_deadline - self._timeout),
                    f"asking {following}" if following != silent else "asking it again")
        self._source_deadline = now + self._timeout

    def _pass_over(self, source: str, why: str, now: float) -> None:
        """``source`` has nothing more to give: it is not asked again."""
        log.warning("recovering: %s %s", source, why)
        del self._sources[source]
        self._source_deadline = now + self._timeout

    def _take_fetched(self, reply: FetchReply, now: float) -> None:
        fetch = self._fetch
        if reply.prev_length != fetch.length:
            return  # an answer to an earlier fetch
        if reply.start is None and not self._takes_page(reply):
            self._fetch = None
            holds = "fewer entries than" if reply.prev_term is None else "another log than"
            self._pass_over(fetch.source, f"holds {holds} the {reply.prev_length} taken; trying the others",
                            now)
            return
        fetch.heard_at = now
        fetch.pages_left -= 1
        if reply.start is not None:
            self._fetch = None  # a start's keys come a page per fetch
            self._take_start_chunk(reply, fetch.keys_offset)
        elif reply.entries:
            self._recovered.extend(reply.entries)
            self._length += len(reply.entries)
            self._messages += sum(map(ENTRY_COUNT, reply.entries))
            fetch.length = self._length
            fetch.received_bytes += sum(map(len, map(ENTRY_BODY, reply.entries)))
            if not fetch.pages_left:
                self._fetch = None
                self._size_next_fetch(fetch)
        else:  # the source's log ends there
            self._fetch = None
            self._on_end_of(fetch.source, now)

    def _on_end_of(self, source: str, now: float) -> None:
        """``source`` gave all it holds. That is the log, unless a candidate said
        it held more: one that restarted without its log answers so too, and
        is passed over in its turn (while no primary writes, a log shrinks
        only by a restart)."""
        longest = self._sources[self._candidates()[0]]
        if self._length >= longest.log_length:
            self._finish(self.cluster, now)
        elif self._length < self._sources[source].log_length:
            self._pass_over(source, f"holds {self._length} entries, fewer than it said (it restarted "
                                    "without its log?); trying the others", now)
        else:
            self._pass_over(source, f"gave all it holds; asking {longest.sender}, which holds more",
                            now)

    def _size_next_fetch(self, fetch: _Fetch) -> None:
        """Ask next for about FETCH_BYTES of pages like those ``fetch`` brought."""
        page_bytes = max(1, fetch.received_bytes // self._pages)
        self._pages = max(1, min(MAX_FETCH_PAGES, FETCH_BYTES // page_bytes))

    def _take_start_chunk(self, reply: FetchReply, keys_offset: int) -> None:
        """Gathers the pages of one copy of a start's keys, named by the start and
        its count of keys: the keys in force at a start only lose their oldest
        (to new keyed appends), so another count is another copy, whose offsets
        differ: start over. (A source pages from one copy, taken at the first
        page: RaftNode._snapshot_lent_to; this covers a source that restarted
        or was replaced meanwhile.)"""
        if self._snapshot is None or self._snapshot[:2] != (reply.start, reply.keys_total):
            self._snapshot = (reply.start, reply.keys_total, [])
        keys = self._snapshot[2]
        if reply.keys_offset == len(keys):
            keys.extend(reply.keys)
        if len(keys) >= reply.keys_total:
            self._recovered_snapshot = Snapshot(reply.start, tuple(keys))
            self._recovered = []
            self._length = reply.start.index
            self._messages = reply.start.first_id
            self._snapshot = None

    def _finish(self, cluster: str | None, now: float) -> None:
        self.done, self.fetching, self.cluster = True, False, cluster
        took = now - self._started
        if cluster is None:
            log.info("recovery found no history: a new cluster (%.2fs)", took)
        else:
            log.info("recovered %d messages of history %s from %s in %.2fs", self._messages, cluster,
                     ", ".join(self._answered_sources()), took)

    def _answered_sources(self) -> list[str]:
        return sorted(name for name, reply in self._answers.items() if reply.cluster == self.cluster
                      and reply.last_log_term == max(r.last_log_term for r in self._answers.values()
                                                     if r.cluster == self.cluster))
