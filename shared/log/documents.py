"""The JSON documents GET /messages answers with, built from the log's entries.

An entry holds its messages' JSON string literals joined by commas (the
way they travel and are stored), so a run of whole entries joined by
commas is already the inside of a JSON array: a read copies bytes, and
cuts, by the literals' quotes, only an entry a page begins or ends inside of.

- a page: ``{"messages": [...], "from": N, "next": M, "length": L}``;
- the whole retained log: ``{"messages": [...], "first_id": F}``.

Both are produced in chunks, so a large read is never copied whole into
one response body; a document whose size is known up front says it
(Content-Length), one read from disk in a stream does not.

Pure functions; thread: any.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

#: Bytes per chunk of a streamed document, about: big enough to keep the
#: number of writes low, small enough never to copy much at once.
CHUNK_BYTES = 256 << 10


@dataclass
class Page:
    """Messages [from_id, stop_id) of a log whose readers see ``length`` messages,
    as the entries that hold them: (first id, count, body), in order (the
    first may begin before ``from_id``, the last end after ``stop_id``)."""

    from_id: int
    stop_id: int
    length: int
    first_kept: int  # the first id retention kept
    parts: Iterable[tuple[int, int, bytes]]
    size_known: bool = True  # False: ``parts`` is read as the document is sent


#: One JSON string literal as encode_entry writes it: ASCII, quotes and
#: backslashes escaped (every entry a node stores was checked to be such).
_LITERAL = re.compile(rb'"(?:[^"\\]|\\.)*"')


def cut(body: bytes, skip: int, end: int) -> bytes:
    """Literals [skip, end) of an entry's body, as they stand in it: found by
    their quotes, neither parsed nor encoded again, so a small page out of a
    large batch costs the bytes up to its last message, not the batch."""
    start = stop = 0
    for index, literal in enumerate(_LITERAL.finditer(body)):
        if index == skip:
            start = literal.start()
        if index == end - 1:
            stop = literal.end()
            break
    return body[start:stop]


def page_document(page: Page) -> tuple[int | None, Iterator[bytes]]:
    close = b'],"from":%d,"next":%d,"length":%d}' % (page.from_id, page.stop_id, page.length)
    return _document(page, close)


def whole_document(page: Page) -> tuple[int | None, Iterator[bytes]]:
    return _document(page, b'],"first_id":%d}' % page.first_kept)


def _document(page: Page, close: bytes) -> tuple[int | None, Iterator[bytes]]:
    opening = b'{"messages":['
    if not page.size_known:
        return None, _chunks(opening, _bodies(page), close)
    bodies = _bodies_listed(page)
    size = len(opening) + sum(map(len, bodies)) + max(len(bodies) - 1, 0) + len(close)
    return size, _chunks(opening, bodies, close)


def _bodies_listed(page: Page) -> list[bytes]:
    """``_bodies`` of a page whose parts are a list, in C loops but at its ends:
    of the parts that hold messages of the page, only the first and the last
    can be cut."""
    from_id, stop_id = page.from_id, page.stop_id
    inside = [part for part in page.parts if part[1] and part[0] < stop_id and part[0] + part[1] > from_id]
    if len(inside) <= 2:
        return list(_bodies(replace(page, parts=inside)))
    head, tail = _bodies(replace(page, parts=inside[:1])), _bodies(replace(page, parts=inside[-1:]))
    return [*head, *(body for _, _, body in inside[1:-1]), *tail]


def _bodies(page: Page) -> Iterator[bytes]:
    """Each entry's part of the messages: whole, or cut to [from_id, stop_id)."""
    for first_id, count, body in page.parts:
        if first_id >= page.stop_id:
            return
        if count == 0:
            continue
        skip, end = max(page.from_id - first_id, 0), min(page.stop_id - first_id, count)
        if skip == 0 and end == count:
            yield body
        elif skip < end:
            yield cut(body, skip, end)


def _chunks(opening: bytes, bodies: Iterable[bytes], close: bytes) -> Iterator[bytes]:
    yield opening
    chunk: list[bytes] = []
    size, comma = 0, b""
    for body in bodies:
        chunk.append(body)
        size += len(body) + 1
        if size >= CHUNK_BYTES:
            yield comma + b",".join(chunk)
            chunk, size, comma = [], 0, b","
    if chunk:
        yield comma + b",".join(chunk)
    yield close
