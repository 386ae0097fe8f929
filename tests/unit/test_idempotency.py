"""The idempotency table: the last ``capacity`` keys, FIFO, and built again from the log."""

from __future__ import annotations

from shared.log.idempotency import IdempotencyTable


def test_the_oldest_key_is_forgotten_past_the_capacity():
    table = IdempotencyTable(2)
    for seq, key in enumerate("abc"):
        table.remember(key, seq, 1)
    assert (table.get("a"), table.get("b"), table.get("c")) == (None, (1, 1), (2, 1))


def test_built_from_the_logs_keyed_appends_it_keeps_the_same_keys_a_running_table_would():
    keyed = [(0, "a", 1), (1, "b", 3), (4, "c", 1)]
    running = IdempotencyTable(2)
    for first, key, count in keyed:
        running.remember(key, first, count)
    rebuilt = IdempotencyTable(2, keyed)
    assert [rebuilt.get(k) for k in "abc"] == [running.get(k) for k in "abc"] == [None, (1, 3), (4, 1)]
