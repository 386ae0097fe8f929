"""The ordered log: seq assignment, dedup, out-of-order arrival, prefix exposure."""

from __future__ import annotations

import threading

from shared.ordered_log import OrderedLog
from shared.protocol import encode_entry
from tests.support.documents import messages_of

rendered = messages_of


def test_append_assigns_consecutive_seqs():
    log = OrderedLog()
    assert [log.append(encode_entry(m)) for m in "abc"] == [0, 1, 2]
    assert rendered(log) == ["a", "b", "c"] and len(log) == 3


def test_concurrent_appends_get_unique_gap_free_seqs():
    log = OrderedLog()
    seqs: list[int] = []
    lock = threading.Lock()

    def writer(n):
        mine = [log.append(encode_entry(f"{n}-{i}")) for i in range(500)]
        with lock:
            seqs.extend(mine)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(4000))


def test_put_ignores_duplicates():
    log = OrderedLog()
    assert log.put(0, encode_entry("a")) is True
    assert log.put(0, encode_entry("changed")) is False
    assert rendered(log) == ["a"]


def test_out_of_order_entries_stay_hidden_until_the_gap_fills():
    log = OrderedLog()
    assert log.put(2, encode_entry("c"))
    assert log.put(1, encode_entry("b"))
    assert rendered(log) == [] and len(log) == 0
    assert log.holds(2) and log.holds(1) and not log.holds(0)
    assert log.put(2, encode_entry("c")) is False  # dedup also ahead of the gap
    assert log.put(0, encode_entry("a"))
    assert rendered(log) == ["a", "b", "c"] and len(log) == 3


def test_entries_and_entry_read_the_visible_prefix_only():
    log = OrderedLog()
    log.put(0, encode_entry("a"))
    log.put(5, encode_entry("f"))
    assert log.entries(0, 10) == [encode_entry("a")]
    assert log.entry(0) == encode_entry("a") and log.entry(5) is None


def test_render_survives_awkward_strings():
    log = OrderedLog()
    awkward = ["", "quote\"", "back\\slash", "nul\x00", "line\nbreak", "emoji 😀", "\ud800"]
    for message in awkward:
        log.append(encode_entry(message))
    assert rendered(log) == awkward


def test_clear_forgets_everything():
    log = OrderedLog()
    log.put(0, encode_entry("a"))
    log.put(3, encode_entry("d"))
    log.clear()
    assert len(log) == 0 and not log.holds(3) and rendered(log) == []


def test_the_document_streams_in_chunks_of_the_announced_size():
    log = OrderedLog()
    for i in range(10_000):
        log.append(encode_entry(f"m{i}"))
    size, chunks = log.messages_document()
    chunks = list(chunks)
    assert len(chunks) > 3 and sum(map(len, chunks)) == size
    assert rendered(log) == [f"m{i}" for i in range(10_000)]
    empty_size, empty = OrderedLog().messages_document()
    assert b"".join(empty) == b'{"messages":[]}' and empty_size == 15
