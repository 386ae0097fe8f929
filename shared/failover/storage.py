"""A failover node's log: the Raft log on disk, and the messages it shows.

The Raft log (shared.consensus.raft_log) holds client messages and, at the
start of each primary's term, a no-op that takes no message id (thesis
§6.4). On disk it is the node's SQLite store (shared.log.sqlite_store):
``entries`` by Raft index, a no-op as an empty body; ``meta`` the term, the
vote, whether the node has been caught up (see PersistedState), and the
terms as runs ``[[term, first index], ...]``; ``keyed`` the appends made
under an Idempotency-Key, by Raft index, cut with their entries.

The messages, ids 0, 1, 2, ..., are an in-memory OrderedLog that reads
serve: message id = Raft index - the no-ops before it. An entry shows
there once it is on disk. A truncation (a primary of a later term does
not hold the tail) removes the messages with it, and their keys, with
one WARNING; it never reaches below the committed length (the core raises
SafetyViolation first, and the node stops).

Thread: ``load`` on the main thread before ``node-io`` starts; ``persist``
and everything else that writes on ``node-io`` only. ``messages`` is an
OrderedLog, safe to read from any thread.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

from shared.consensus.raft import Entry, PersistedState, Ready
from shared.log.idempotency import IdempotencyTable
from shared.log.ordered_log import OrderedLog
from shared.log.sqlite_store import Changes, SqliteStore, StoreError
from shared.wire.raft_frames import decode_payload

log = logging.getLogger(__name__)

#: The store's role: a fixed-role node's data directory is refused, and the other way round.
ROLE = "failover"


@dataclass
class _Batch:
    """The changes of several Readies, written in one transaction."""

    truncate_from: int | None = None
    entries: dict[int, Entry] | None = None
    meta: dict | None = None


class RaftStorage:
    def __init__(self, data_dir: str, fsync: bool, idempotency_keys: int) -> None:
        self._store = SqliteStore(data_dir, ROLE, fsync)
        self.path = self._store.path
        #: What GET /messages serves: the client messages, by id.
        self.messages = OrderedLog()
        self._key_capacity = idempotency_keys
        #: Which message each recent Idempotency-Key appended; node-io only.
        self.keys = IdempotencyTable(idempotency_keys)
        self._term = 0  # the node's current term, as last persisted
        self._terms: list[list[int]] = []  # [term, first index] runs, ascending
        self._noops: list[int] = []  # the Raft indexes of no-ops, ascending
        self._length = 0  # Raft entries on disk
        self._pending = _Batch()

    # -- main thread, at start ------------------------------------------------

    def load(self) -> PersistedState:
        """What the node restarts from. A new store is not caught up: see PersistedState."""
        meta = self._store.meta()
        fresh = "term" not in meta
        self._terms = [list(run) for run in meta.get("terms", [])]
        entries = []
        for index, body in self._store.entries():
            if index != len(entries):
                raise StoreError(f"{self.path}: the log has a gap at index {len(entries)}")
            entries.append(Entry(self._term_at(index), body or None))
        self._show(0, entries)
        self._term = meta.get("term", 0)
        return PersistedState(meta.get("term", 0), meta.get("voted_for"), tuple(entries),
                              caught_up=not fresh and meta.get("caught_up", True))

    # -- node-io --------------------------------------------------------------

    def stage(self, ready: Ready) -> None:
        """Take one Ready's changes; ``persist`` writes them with the others staged."""
        pending = self._pending
        if ready.hard_state is not None:
            state = ready.hard_state
            pending.meta = {"term": state.term, "voted_for": state.voted_for,
                            "caught_up": state.caught_up}
        if ready.truncate_from is not None:
            start = ready.truncate_from
            if pending.truncate_from is None or start < pending.truncate_from:
                pending.truncate_from = start
            pending.entries = {i: e for i, e in (pending.entries or {}).items() if i < start}
        if ready.append:
            pending.entries = pending.entries or {}
            start = ready.truncate_from if ready.truncate_from is not None else self._staged_length()
            for offset, entry in enumerate(ready.append):
                pending.entries[start + offset] = entry

    def persist(self) -> None:
        """Write what was staged, in one transaction (fsynced under FSYNC), then
        show it: only then may the messages that depend on it be sent.
        Raises StoreError when the write failed."""
        pending = self._pending
        if pending.truncate_from is None and not pending.entries and pending.meta is None:
            return
        entries = sorted((pending.entries or {}).items())
        terms = self._terms_after(pending.truncate_from, entries)
        keyed = [(index, p.key, p.count) for index, p in
                 ((i, decode_payload(e.payload)) for i, e in entries if e.payload is not None)
                 if p.key is not None]
        meta = dict(pending.meta or {})
        self._term = meta.get("term", self._term)
        if terms != self._terms:
            meta["terms"] = terms
        self._store.commit(Changes([(i, e.payload or b"") for i, e in entries],
                                   pending.truncate_from, meta, keyed))
        self._pending = _Batch()
        self._terms = terms
        if pending.truncate_from is not None and pending.truncate_from < self._length:
            self._truncate(pending.truncate_from)
        if entries:
            self._show(entries[0][0], [entry for _, entry in entries])

    def message_count(self, raft_length: int) -> int:
        """How many client messages the first ``raft_length`` entries hold."""
        return raft_length - bisect.bisect_left(self._noops, raft_length)

    def message_id(self, raft_index: int) -> int:
        """The id of the message at ``raft_index`` (not a no-op)."""
        return self.message_count(raft_index)

    def raft_index(self, message_id: int) -> int:
        """The Raft index of message ``message_id``: past every no-op before it."""
        index = message_id
        for noop in self._noops:  # one per term: a short list
            if noop > index:
                break
            index += 1
        return index

    def close(self) -> None:
        self._store.close()

    # -- its own ---------------------------------------------------------------

    def _staged_length(self) -> int:
        """The log's length once what is staged is written."""
        pending = self._pending
        kept = self._length if pending.truncate_from is None else min(self._length, pending.truncate_from)
        return max([kept - 1, *(pending.entries or {})]) + 1

    def _term_at(self, index: int) -> int:
        position = bisect.bisect_right([first for _, first in self._terms], index) - 1
        if position < 0:
            raise StoreError(f"{self.path}: no term is recorded for index {index}")
        return self._terms[position][0]

    def _terms_after(self, truncate_from: int | None,
                     entries: list[tuple[int, Entry]]) -> list[list[int]]:
        """The term runs once ``entries`` are written after a truncation at ``truncate_from``."""
        terms = [list(run) for run in self._terms]
        if truncate_from is not None:
            terms = [run for run in terms if run[1] < truncate_from]
        for index, entry in entries:
            if not terms or terms[-1][0] != entry.term:
                terms.append([entry.term, index])
        return terms

    def _truncate(self, start: int) -> None:
        first_id = self.message_count(start)
        removed = self.messages.truncate(first_id)
        del self._noops[bisect.bisect_left(self._noops, start):]
        self._length = start
        self.keys = self._keys_from_store(start)  # the keys the log still holds, as at a start
        if removed:
            log.warning("truncated messages %d..%d: the primary of term %d does not hold them "
                        "(they were never committed)", removed[0], removed[-1], self._term)

    def _keys_from_store(self, below: int) -> IdempotencyTable:
        """The table the stored keyed appends before index ``below`` give: the
        last ``capacity`` of them (``_show`` adds those of the entries after)."""
        return IdempotencyTable(self._key_capacity, [(self.message_id(first), key, count)
                                                      for first, key, count in self._store.keyed()
                                                      if first < below])

    def _show(self, start: int, entries: list[Entry]) -> None:
        """Show ``entries``, which continue the log from ``start`` (its length)."""
        for offset, entry in enumerate(entries):
            index = start + offset
            if entry.payload is None:
                self._noops.append(index)
                continue
            payload = decode_payload(entry.payload)
            message_id = self.messages.append(payload.literal)
            if payload.key is not None:  # in log order: the table keeps the log's last keys
                self.keys.remember(payload.key, message_id, payload.count)
        self._length = start + len(entries)
