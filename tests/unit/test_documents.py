"""shared.log.documents: the JSON documents of GET /messages, built from entries.

Each test builds the entries a log holds (their bodies as the wire makes
them: shared.wire.frames.encode_entry) and checks the exact bytes sent, the
size announced for them, the chunks they come in, and that a message
comes back as it was appended, whatever it holds.
"""

from __future__ import annotations

import json

from shared.log.documents import CHUNK_BYTES, Page, cut, page_document, whole_document
from shared.wire.frames import encode_entry

#: Messages a naive encoder or a naive cut at commas would get wrong.
AWKWARD = ["", 'quo"te', "back\\slash", "com,ma", "],[", "line\nbreak", "tab\t", "nul\x00",
           "\x7f", "é", "\u2028", "emoji 😀", "lone \ud800 surrogate", "\udfff", '"\\"', " "]


def body_of(messages: list[str]) -> bytes:
    """An entry's body: its messages' literals joined by commas (a no-op's is empty)."""
    return b",".join(encode_entry(message) for message in messages)


def parts_of(entries: list[list[str]], first_id: int = 0) -> list[tuple[int, int, bytes]]:
    """(first id, count, body) of consecutive entries, as a log hands them to a document."""
    parts = []
    for messages in entries:
        parts.append((first_id, len(messages), body_of(messages)))
        first_id += len(messages)
    return parts


def sent(document: tuple[int | None, object]) -> bytes:
    """The bytes a document's chunks add up to; they must match its announced size."""
    size, chunks = document
    data = b"".join(chunks)
    assert size is None or size == len(data), f"announced {size} bytes, sent {len(data)}"
    return data


def test_cut_gives_back_the_literals_encode_entry_made_as_they_stand():
    body = body_of(AWKWARD)
    for skip in range(len(AWKWARD)):
        for end in range(skip + 1, len(AWKWARD) + 1):
            assert cut(body, skip, end) == body_of(AWKWARD[skip:end]), (skip, end)
    assert cut(body_of(["only"]), 0, 1) == b'"only"'


def test_awkward_messages_come_back_exactly_whole_or_cut_by_a_page():
    parts = parts_of([AWKWARD[:5], AWKWARD[5:], ["last"]])
    everything = AWKWARD + ["last"]
    whole = json.loads(sent(whole_document(Page(0, len(everything), len(everything), 0, parts))))
    assert whole["messages"] == everything
    for first in range(len(everything)):
        for stop in range(first, len(everything) + 1):
            page = json.loads(sent(page_document(Page(first, stop, len(everything), 0, parts))))
            assert page["messages"] == everything[first:stop], (first, stop)


def test_a_page_is_exact_json_naming_its_ends_and_the_logs_length():
    parts = parts_of([["a", "b", "c"], ["d"], ["e", "f", "g"]])
    assert sent(page_document(Page(1, 6, 9, 0, parts))) == (
        b'{"messages":["b","c","d","e","f"],"from":1,"next":6,"length":9}')
    assert sent(page_document(Page(3, 4, 9, 0, parts[1:2]))) == (
        b'{"messages":["d"],"from":3,"next":4,"length":9}')


def test_an_empty_page_and_an_empty_log_are_exact_with_their_sizes():
    assert sent(page_document(Page(5, 5, 5, 0, []))) == b'{"messages":[],"from":5,"next":5,"length":5}'
    size, chunks = whole_document(Page(0, 0, 0, 0, []))
    assert b"".join(chunks) == b'{"messages":[],"first_id":0}' and size == 28


def test_the_whole_log_names_the_first_id_retention_kept():
    parts = parts_of([["x", "y"], ["z"]], first_id=40)
    assert sent(whole_document(Page(40, 43, 43, 40, parts))) == b'{"messages":["x","y","z"],"first_id":40}'


def test_no_ops_add_nothing_wherever_they_sit():
    parts = parts_of([[], ["a"], [], [], ["b", "c"], []])
    assert sent(whole_document(Page(0, 3, 3, 0, parts))) == b'{"messages":["a","b","c"],"first_id":0}'
    assert sent(page_document(Page(1, 3, 3, 0, parts))) == (
        b'{"messages":["b","c"],"from":1,"next":3,"length":3}')


def test_a_page_reads_no_entry_past_its_end():
    """A page from disk is streamed as it is read: once it has its last message,
    it must stop asking for entries (the rest of the log)."""
    read = []

    def entries():
        for part in parts_of([["a"], ["b", "c"], ["d"], ["e"]]):
            read.append(part[0])
            yield part

    assert sent(page_document(Page(1, 3, 5, 0, entries(), size_known=False))) == (
        b'{"messages":["b","c"],"from":1,"next":3,"length":5}')
    assert read == [0, 1, 3]  # the entry after the page is seen, and nothing further


def test_a_streamed_document_announces_no_size_and_reads_nothing_before_it_is_sent():
    read = []

    def entries():
        for part in parts_of([["a", "b"], ["c"]]):
            read.append(part[0])
            yield part

    size, chunks = whole_document(Page(0, 3, 3, 0, entries(), size_known=False))
    assert size is None and read == []
    assert b"".join(chunks) == b'{"messages":["a","b","c"],"first_id":0}' and read == [0, 2]


def test_a_large_document_comes_in_chunks_of_about_chunk_bytes_with_its_exact_size():
    big = "big" * 400_000
    entries = [[f"m{i}" for i in range(n, n + 10)] for n in range(0, 10_000, 10)]
    entries += [["x" * 10_000]] * 200 + [[big], ["after"]]
    messages = [message for batch in entries for message in batch]
    size, chunks = whole_document(Page(0, len(messages), len(messages), 0, parts_of(entries)))
    chunks = list(chunks)
    assert size == sum(map(len, chunks))
    assert json.loads(b"".join(chunks))["messages"] == messages
    assert len(chunks) > 8
    # A byte budget per chunk whatever the number of messages; an entry larger
    # than the budget goes whole (it is never split), closing the chunk it joins.
    largest_body = len(encode_entry(big))
    assert all(len(chunk) <= CHUNK_BYTES + largest_body + 1 for chunk in chunks)
    assert sum(1 for chunk in chunks if len(chunk) > CHUNK_BYTES + 10_003) == 1
