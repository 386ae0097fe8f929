"""A linearizability checker for histories of appends and reads on the log.

This module owns the model of such a history (``Append``, ``Read``), the
check (``check_linearizable``), and ``LinearHistory``, which client threads
record into while a workload runs (and which can make the HTTP calls for
them). ``checker.py`` checks that the final log keeps its promises; this
checks that every answer a client got fits one order in real time.

The model
---------
The log is one total order of unique messages, append-only, at ids 0, 1, 2...
An append (of one message, or of a batch that lands at consecutive ids all
at once) ends ``ok`` (acknowledged with its id: the first one for a batch),
``refused`` (nothing was appended), or ``unknown`` (it may take effect at any
moment after its start, or never; a 503/504 that carried an id says where it
sits if it is there at all). A read answers a page: ``first``, the messages
at ids first, first+1, ..., and ``length``, how many messages the log held
when the read took effect. ``final_log`` is the converged log after the run.

The history is linearizable when each append that happened gets a time t in
[start, end] and each read a time r in [start, end] such that appends take
effect in id order (a batch at one t), and a read of length L sees exactly
the ids below L: t <= r for each of them and t > r for id L. Besides: every
ok append is in the final log at its id, a refused append is nowhere, an
unknown one is in the final log as a whole (at its id, if it had one) or
nowhere (then it did not happen, but no read may have seen it), each read's
messages are the final log's at those ids, and no message is there twice.

Why the times reduce to one pass (and the proof that the pass is exact)
----------------------------------------------------------------------
The final log fixes the order, so only the times are unknown. Number the
effects 0..n-1 in id order (an effect: one append, a batch counted once,
covering ids a_j .. b_j - 1); a read whose length falls strictly inside a
batch is a violation of its own. The constraints are

  (1) s_j <= t_j <= e_j          (e_j: the ack time if ok, else infinity)
  (2) t_{j-1} <= t_j
  (3) for a read of length L = a_j:  t_{j-1} <= r < t_j  and  rs <= r <= re

r appears only in (3), so eliminate it: some r exists exactly when each of
its lower bounds is below each of its upper bounds, that is

  t_{j-1} <= re    (an upper bound on effect j-1; L == n gives only this one)
  rs < t_j         (a strict lower bound on effect j; L == 0 gives only this)
  t_{j-1} < t_j    (a read between them makes (2) strict)

Now every constraint is either a constant upper bound on one t_j, or a lower
bound t_j >= f(t_{j-1}) with f non-decreasing (a constant, t_{j-1} itself, or
"just after" either). The pass gives each effect its earliest time T_j, the
largest of its lower bounds evaluated at T_{j-1}, and checks T_j against its
upper bounds. That is exact:

- if every T_j meets its upper bounds, T meets every constraint (the lower
  ones by construction), and r = max(rs, T_{j-1}) places each read;
- any solution S has S_j >= T_j for every j, by induction: S_j >= f(S_{j-1})
  >= f(T_{j-1}) for each lower bound f, so S_j >= their largest, T_j. So if
  T_j > c for an upper bound c, then S_j > c too: there is no solution.

Ties are exact, with no epsilon to tune: "strictly after x" has no earliest
real time, so a time is kept as an ``_Instant`` (x, k), x plus k
infinitesimal steps, compared as a pair. A finite set of strict and non-strict
inequalities has a real solution exactly when it has one of that form, so an
append acknowledged at the very instant a read starts must be seen by it,
and two appends at the same instant leave no room for a read between them.

The pass is O(n) after building dictionaries over the messages: a history of
100,000 operations checks in well under a second. Violations name the two
bounds that clash: the lower one T_j came from and the upper one it broke.
After a clash T_j is pulled down to the broken bound, so one stale read is
reported once, not once for every later append it also conflicts with.

Thread: ``check_linearizable`` is pure. ``LinearHistory`` may be used from
any number of client threads at once.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Container, Iterable, NamedTuple, Sequence
from urllib.parse import urlencode

from tests.support.http import post_batch, post_message, request

OK, REFUSED, UNKNOWN = "ok", "refused", "unknown"
OUTCOMES = (OK, REFUSED, UNKNOWN)


@dataclass(frozen=True)
class Append:
    """One POST of one message or a batch, as its client saw it."""

    messages: tuple[str, ...]
    #: time.monotonic() before the request was sent, and after its answer
    #: came (or it failed). An unknown append's end is ignored: it may take
    #: effect at any moment after its start.
    start: float
    end: float | None
    outcome: str
    #: The id the answer gave (a batch's first id), if any.
    id: int | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if not self.messages:
            raise ValueError("an append carries at least one message")
        if self.outcome == OK and (self.id is None or self.end is None):
            raise ValueError("an ok append has an id and an end")
        if self.end is not None and self.end < self.start:
            raise ValueError(f"an append cannot end ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True)
class Read:
    """One answered page of GET /messages, as its client saw it."""

    start: float
    end: float
    #: The first id asked for, and the messages at first, first + 1, ...
    first: int
    messages: tuple[str, ...]
    #: How many messages the log held when the read took effect.
    length: int
    #: Which node answered (for the reports only).
    node: str = ""

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"a read cannot end ({self.end}) before it starts ({self.start})")
        if self.first < 0 or self.length < 0:
            raise ValueError("a read's first id and length are never negative")


def check_linearizable(appends: Iterable[Append], reads: Iterable[Read],
                       final_log: Sequence[str], others: Container[str] = ()) -> list[str]:
    """Every violation found, as readable lines; empty when the history is
    linearizable (see the module docstring for what that means).

    ``others``: messages in the final log that were written outside the
    history (a test's setup); they may have taken effect at any time."""
    appends, reads = list(appends), list(reads)
    owners, violations = _owners(appends)
    positions, duplicates = _positions(final_log)
    violations += duplicates
    for append in appends:
        violations += _placement(append, positions)
    for read in reads:
        violations += _page(read, final_log, owners, positions)
    effects, strangers = _effects(final_log, owners, others)
    violations += strangers
    violations += _times(effects, reads, len(final_log))
    return violations


# -- where things are ------------------------------------------------------


def _owners(appends: list[Append]) -> tuple[dict[str, tuple[Append, int]], list[str]]:
    """Each message's append and its place in it; a message sent twice would
    make every other answer ambiguous, so it is a violation of the history."""
    owners: dict[str, tuple[Append, int]] = {}
    violations = []
    for append in appends:
        for index, message in enumerate(append.messages):
            if message in owners:
                violations.append(f"{message} was sent by two appends: the history needs unique messages")
                continue
            owners[message] = (append, index)
    return owners, violations


def _positions(final_log: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """Each message's id in the final log (its first, if it is there twice)."""
    positions: dict[str, int] = {}
    violations = []
    for id_, message in enumerate(final_log):
        if message in positions:
            violations.append(f"{message} is in the final log twice, at ids {positions[message]} and {id_}")
        else:
            positions[message] = id_
    return positions, violations


def _placement(append: Append, positions: dict[str, int]) -> list[str]:
    """Whether ``append`` is in the final log where its outcome says."""
    found = [positions.get(message) for message in append.messages]
    if append.outcome == REFUSED:
        there = [(m, p) for m, p in zip(append.messages, found) if p is not None]
        return [f"{_append_name(append)} was refused, but {m} is in the final log at id {p}"
                for m, p in there[:1]]
    if append.outcome == UNKNOWN and all(p is None for p in found):
        return []  # it never happened; any read that saw it is caught in _page
    first = append.id if append.id is not None else found[0]
    if first is not None and found == list(range(first, first + len(found))):
        return []
    if append.outcome == OK:
        told = f"acknowledged at {_at(append.end)} with id {append.id}"
    else:
        told = "outcome unknown" + (f", told id {append.id}" if append.id is not None else "")
    if None in found:
        lost = append.messages[found.index(None)]
        return [f"{_append_name(append)} ({told}) is missing from the final log ({lost} is not there)"]
    return [f"{_append_name(append)} ({told}) sits at ids {_ids(found)} in the final log"]


def _page(read: Read, final_log: Sequence[str], owners: dict[str, tuple[Append, int]],
          positions: dict[str, int]) -> list[str]:
    """Whether the page a read returned agrees with its length and the final log."""
    shown = len(read.messages)
    # An empty page says nothing of ``first``: a page asked for past the end is empty.
    fits = not shown or read.first + shown <= read.length
    if fits and read.length <= len(final_log) \
            and tuple(final_log[read.first:read.first + shown]) == read.messages:
        return []
    violations = []
    name = _read_name(read)
    if not fits:
        violations.append(f"{name} returned ids {read.first}..{read.first + shown - 1} "
                          f"but said the log held {read.length}")
    if read.length > len(final_log):
        violations.append(f"{name} saw {_count(read.length)}, but the final log holds only "
                          f"{len(final_log)}: a read saw messages that were later lost")
    for offset, message in enumerate(read.messages):
        id_ = read.first + offset
        if id_ < len(final_log) and final_log[id_] == message:
            continue
        violations.append(f"{name} saw {message} at id {id_}, but " +
                          _why_not_there(message, id_, final_log, owners, positions))
        break  # the first difference explains the page; the rest would repeat it
    return violations


def _why_not_there(message: str, id_: int, final_log: Sequence[str],
                   owners: dict[str, tuple[Append, int]], positions: dict[str, int]) -> str:
    append = owners.get(message, (None, 0))[0]
    if message in positions:
        return f"the final log has it at id {positions[message]}"
    if append is not None and append.outcome == REFUSED:
        return "that append was refused: a refused message showed up"
    if append is not None and append.outcome == UNKNOWN:
        return ("the final log lacks it (its append's outcome was unknown): "
                "a read saw a message that was later lost")
    if append is not None:
        return "the final log lacks it: an acknowledged message was lost"
    held = final_log[id_] if id_ < len(final_log) else "nothing"
    return f"no append sent it, and the final log holds {held} there"


# -- the times -------------------------------------------------------------


#: A moment, as a pair (at, steps): ``at`` plus ``steps`` infinitesimal steps
#: after it (see the module docstring). Pairs compare as we need them to.
#: Plain tuples, not a NamedTuple: the pass builds one per effect.
_Instant = tuple[float, int]
_NEVER: _Instant = (-math.inf, 0)


@dataclass
class _Effect:
    """Ids first .. first + count - 1 of the final log, which one append (or
    none, for a message written outside the history) put there at once."""

    first: int
    count: int
    append: Append | None
    messages: list[str]


def _effects(final_log: Sequence[str], owners: dict[str, tuple[Append, int]],
             others: Container[str]) -> tuple[list[_Effect], list[str]]:
    """The final log cut into effects, in id order. A batch split apart is
    a violation (of _placement) and becomes several effects here."""
    effects: list[_Effect] = []
    violations = []
    previous: tuple[Append, int] | None = None
    for id_, message in enumerate(final_log):
        owner = owners.get(message)
        if owner is None and message not in others:
            violations.append(f"{message} is in the final log at id {id_}, "
                              f"but no append in the history sent it")
        if owner is not None and previous is not None and owner[0] is previous[0] \
                and owner[1] == previous[1] + 1:
            effects[-1].count += 1
            effects[-1].messages.append(message)
        else:
            effects.append(_Effect(id_, 1, owner[0] if owner else None, [message]))
        previous = owner
    return effects, violations


class _Bound(NamedTuple):
    """Where a bound on an effect's time comes from: the append's own start
    (a lower bound) or acknowledgement (upper), when ``read`` is None; else a
    read that did not see the effect (lower: its start) or saw it (upper: its end)."""

    effect: _Effect
    read: Read | None = None

    @property
    def lower(self) -> float:
        return self.read.start if self.read is not None else self.effect.append.start

    @property
    def upper(self) -> float:
        return self.read.end if self.read is not None else self.effect.append.end


def _times(effects: list[_Effect], reads: list[Read], size: int) -> list[str]:
    """The earliest-times pass of the module docstring."""
    unseen_by, seen_by, violations = _binding_reads(effects, reads, size)
    earliest, why = _NEVER, None
    tie_read: Read | None = None  # the latest read that made the order strict since ``why``
    for effect in effects:
        append, unseen = effect.append, unseen_by.get(effect.first)
        # Lower bounds: the previous effect (just after it, if a read sits
        # between), the append's start, and just after a read that missed it.
        if unseen is not None and effect.first > 0:
            earliest, tie_read = (earliest[0], earliest[1] + 1), unseen
        if append is not None and (append.start, 0) > earliest:
            earliest, why, tie_read = (append.start, 0), _Bound(effect), None
        if unseen is not None and (unseen.start, 1) > earliest:
            earliest, why, tie_read = (unseen.start, 1), _Bound(effect, unseen), None
        # Upper bounds: its acknowledgement, and the end of a read that saw it.
        seen = seen_by.get(effect.first + effect.count)
        acknowledged = append.end if append is not None and append.outcome == OK else math.inf
        if earliest > (min(acknowledged, seen.end if seen else math.inf), 0):
            uppers = [_Bound(effect)] if acknowledged < math.inf else []
            uppers += [_Bound(effect, seen)] if seen else []
            for bound in sorted(uppers, key=lambda b: b.upper):  # the tighter first
                if earliest > (bound.upper, 0):
                    violations.append(_clash(why, bound, tie_read if earliest[0] == bound.upper else None))
                    earliest = (bound.upper, 0)  # report each root cause once, not its whole cascade
    return violations


def _binding_reads(effects: list[_Effect], reads: list[Read],
                   size: int) -> tuple[dict[int, Read], dict[int, Read], list[str]]:
    """By length L: the read of length L that started last (it binds the
    lower bound on the effect at id L), and the one that ended first (it binds
    the upper bound on the effect before). A read whose length cuts a batch
    fits nowhere, and is reported instead."""
    effect_at = {effect.first for effect in effects}
    latest_start: dict[int, Read] = {}
    earliest_end: dict[int, Read] = {}
    violations = []
    for read in reads:
        if read.length > size:
            continue  # reported by _page; it fits no place in the final log
        if read.length < size and read.length not in effect_at:
            violations.append(_partial_batch(read, effects))
            continue
        known = latest_start.get(read.length)
        if known is None or read.start > known.start:
            latest_start[read.length] = read
        known = earliest_end.get(read.length)
        if known is None or read.end < known.end:
            earliest_end[read.length] = read
    return latest_start, earliest_end, violations


def _partial_batch(read: Read, effects: list[_Effect]) -> str:
    batch = next(e for e in effects if e.first < read.length < e.first + e.count)
    return (f"{_read_name(read)} saw {_count(read.length)}, partway through "
            f"{_effect_name(batch)}, which lands all at once")


def _clash(lower: _Bound, upper: _Bound, tie_read: Read | None) -> str:
    """A readable account of a lower bound above an upper bound."""
    low, high = _times_apart(lower.lower, upper.upper)
    if lower.read is not None and upper.read is None:
        line = (f"{_read_name(lower.read)} saw {_count(lower.read.length)}, but "
                f"{_effect_name(upper.effect)} was acknowledged at {high}, "
                f"{'before' if high != low else 'as'} the read began: a stale read")
    elif lower.read is not None:
        line = (f"{_read_name(lower.read)} saw {_count(lower.read.length)}, fewer than the "
                f"{upper.read.length} that {_read_name(upper.read)} saw, though it began at {low} "
                f"and that read had ended at {high}: the log went backwards")
    elif upper.read is not None:
        line = (f"{_read_name(upper.read)} saw {_count(upper.read.length)}, including "
                f"{_effect_name(lower.effect)}, which was only sent at {low}, "
                f"after the read ended at {high}: a read from the future")
    else:  # two appends (not one: an Append never ends before it starts)
        line = (f"{_effect_name(upper.effect)} was acknowledged at {high}, but it sits after "
                f"{_effect_name(lower.effect)}, which was only sent at {low}: "
                f"the ids disagree with real time")
    if tie_read is not None:
        line += (f" (a tie at {high} is not enough: {_read_name(tie_read)} saw "
                 f"{_count(tie_read.length)}, so it must fit between ids {tie_read.length - 1} "
                 f"and {tie_read.length})")
    return line


# -- names and times in the reports ----------------------------------------


def _append_name(append: Append) -> str:
    if len(append.messages) == 1:
        return f"the append of {append.messages[0]}"
    return f"the batch {append.messages[0]}..{append.messages[-1]}"


def _effect_name(effect: _Effect) -> str:
    if effect.append is None:
        return f"{effect.messages[0]} at id {effect.first} (written outside the history)"
    if effect.count == 1 and len(effect.append.messages) == 1:
        return f"the append of {effect.messages[0]} at id {effect.first}"
    return (f"the batch {effect.messages[0]}..{effect.messages[-1]} at ids "
            f"{effect.first}..{effect.first + effect.count - 1}")


def _read_name(read: Read) -> str:
    where = f" on {read.node}" if read.node else ""
    return f"read{where} during [{_at(read.start)}, {_at(read.end)}]"


def _count(length: int) -> str:
    return "1 message" if length == 1 else f"{length} messages"


def _at(moment: float) -> str:
    return f"{moment:.3f}"


def _times_apart(first: float, second: float) -> tuple[str, str]:
    """Both, printed with enough decimals that different moments look different."""
    for decimals in range(3, 10):
        shown = f"{first:.{decimals}f}", f"{second:.{decimals}f}"
        if first == second or shown[0] != shown[1]:
            return shown
    return repr(first), repr(second)


def _ids(found: list[int | None]) -> str:
    return ", ".join("none" if p is None else str(p) for p in found)


# -- recording -------------------------------------------------------------


class LinearHistory:
    """The appends and reads of a workload, as its clients saw them.

    Client threads either record what they did themselves (``record_append``,
    ``record_read``) or let ``append``/``append_batch``/``read`` make the HTTP
    call, classify its answer and record it. Messages made here are unique
    (``{prefix}-{n}``), as the model needs.
    Thread: any; every method may be called from many threads at once."""

    def __init__(self, prefix: str = "m") -> None:
        self._lock = threading.Lock()
        self._prefix = prefix
        self._counter = itertools.count()
        self._appends: list[Append] = []
        self._reads: list[Read] = []

    def record_append(self, append: Append) -> None:
        with self._lock:
            self._appends.append(append)

    def record_read(self, read: Read) -> None:
        with self._lock:
            self._reads.append(read)

    def new_messages(self, count: int = 1) -> tuple[str, ...]:
        """``count`` messages never made before by this history."""
        with self._lock:
            return tuple(f"{self._prefix}-{next(self._counter)}" for _ in range(count))

    def append(self, url: str, w: object = "majority", http_timeout: float = 30.0) -> Append:
        """POST one new message to ``url``; record and return the outcome."""
        (message,) = self.new_messages()
        start = time.monotonic()
        try:
            response = post_message(url, message, w=w, http_timeout=http_timeout)
        except (OSError, http.client.HTTPException):
            # The connection broke, perhaps after the node appended it.
            return self._recorded(Append((message,), start, time.monotonic(), UNKNOWN))
        end = time.monotonic()
        outcome, id_ = classify_append(response.status, _json_object(response.body), "id")
        return self._recorded(Append((message,), start, end, outcome, id_))

    def append_batch(self, url: str, count: int, w: object = "majority",
                     http_timeout: float = 30.0) -> Append:
        """POST a batch of ``count`` new messages to ``url``; record and return the outcome."""
        messages = self.new_messages(count)
        start = time.monotonic()
        try:
            response = post_batch(url, list(messages), w=w, http_timeout=http_timeout)
        except (OSError, http.client.HTTPException):
            return self._recorded(Append(messages, start, time.monotonic(), UNKNOWN))
        end = time.monotonic()
        outcome, id_ = classify_append(response.status, _json_object(response.body), "first_id")
        return self._recorded(Append(messages, start, end, outcome, id_))

    def read(self, url: str, first: int = 0, limit: int = 100, consistency: str | None = None,
             http_timeout: float = 30.0) -> Read | None:
        """GET a page from ``url`` and record it; None (and nothing recorded)
        if the answer was not a page, since an error says nothing about the log."""
        query = {"from": first, "limit": limit}
        if consistency is not None:
            query["consistency"] = consistency
        start = time.monotonic()
        try:
            response = request("GET", f"{url}/messages?{urlencode(query)}", timeout=http_timeout)
        except (OSError, http.client.HTTPException):
            return None
        end = time.monotonic()
        page = _json_object(response.body)
        if response.status != 200 or not {"messages", "from", "length"} <= page.keys():
            return None
        node = next((v for k, v in response.headers.items() if k.lower() == "served-by"), url)
        read = Read(start, end, page["from"], tuple(page["messages"]), page["length"], node)
        self.record_read(read)
        return read

    def operations(self) -> tuple[list[Append], list[Read]]:
        """Copies of everything recorded so far."""
        with self._lock:
            return list(self._appends), list(self._reads)

    def check(self, final_log: Sequence[str], others: Container[str] = ()) -> list[str]:
        """``check_linearizable`` over everything recorded."""
        appends, reads = self.operations()
        return check_linearizable(appends, reads, final_log, others)

    def _recorded(self, append: Append) -> Append:
        self.record_append(append)
        return append


def classify_append(status: int, body: dict, id_key: str = "id") -> tuple[str, int | None]:
    """An append's outcome and id from its answer: a 200/201 with an id is
    ok; a 503/504 with one appended but did not confirm (unknown, at that id);
    a 4xx, or a 503 without an id, appended nothing; anything else (a 502, a
    504 without an id, an answer that is not the API's) may or may not have."""
    id_ = body.get(id_key)
    if not isinstance(id_, int) or isinstance(id_, bool):
        id_ = None
    if status in (200, 201) and id_ is not None:
        return OK, id_
    if status in (503, 504) and id_ is not None:
        return UNKNOWN, id_
    if 400 <= status < 500 or status == 503:
        return REFUSED, None
    return UNKNOWN, None


def _json_object(body: bytes) -> dict:
    """The answer's JSON object, or {} when it is not one (a proxy's page)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
