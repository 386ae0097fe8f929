"""shared.log.node_log: the Raft log on disk, the messages it shows by id, the keys."""

from __future__ import annotations

import logging

import pytest

from shared.consensus.raft import Entry, HardState, Ready
from shared.log.node_log import RaftStorage
from shared.log.sqlite_store import SqliteStore, StoreError
from shared.wire.protocol import encode_entry
from shared.wire.raft_frames import encode_payload

NOOP = None


def literal(text: str) -> bytes:
    return encode_entry(text)


def ready(*, hard_state=None, truncate_from=None, append=(), committed=0) -> Ready:
    return Ready(hard_state, truncate_from, tuple(append), committed, ())


def stored(storage: RaftStorage, *readies: Ready) -> RaftStorage:
    for each in readies:
        storage.stage(each)
    storage.persist()
    return storage


def shown(storage: RaftStorage) -> list[bytes]:
    return storage.messages.entries(0, 1 << 30)


def test_a_new_store_is_not_caught_up_and_holds_nothing(tmp_path):
    state = RaftStorage(str(tmp_path), fsync=True, idempotency_keys=10).load()
    assert (state.term, state.voted_for, state.entries, state.caught_up) == (0, None, (), False)


def test_no_ops_take_no_message_id_and_everything_survives_a_restart(tmp_path):
    storage = RaftStorage(str(tmp_path), True, 10)
    storage.load()
    keyed = encode_payload(literal("b"), key="k1", count=2)
    stored(storage, ready(hard_state=HardState(2, "n1", True),
                          append=[Entry(1, NOOP), Entry(1, literal("a")), Entry(2, NOOP),
                                  Entry(2, keyed), Entry(2, literal("c"))]))
    assert shown(storage) == [literal("a"), literal("b"), literal("c")]
    assert storage.keys.get("k1") == (1, 2)
    assert [storage.message_id(i) for i in (1, 3, 4)] == [0, 1, 2]
    assert [storage.raft_index(m) for m in (0, 1, 2)] == [1, 3, 4]
    storage.close()

    again = RaftStorage(str(tmp_path), True, 10)
    state = again.load()
    assert (state.term, state.voted_for, state.caught_up) == (2, "n1", True)
    assert state.entries == (Entry(1, NOOP), Entry(1, literal("a")), Entry(2, NOOP), Entry(2, keyed),
                             Entry(2, literal("c")))
    assert shown(again) == [literal("a"), literal("b"), literal("c")]
    assert again.keys.get("k1") == (1, 2)


def test_a_truncation_removes_its_messages_and_their_keys_with_one_warning(tmp_path, caplog):
    storage = RaftStorage(str(tmp_path), True, 10)
    storage.load()
    stored(storage, ready(hard_state=HardState(1, None, True),
                          append=[Entry(1, NOOP), Entry(1, literal("a")),
                                  Entry(1, encode_payload(literal("lost"), key="k", count=1))]))
    with caplog.at_level(logging.WARNING, logger="shared.log.node_log"):
        stored(storage, ready(hard_state=HardState(2, None, True), truncate_from=2,
                              append=[Entry(2, NOOP), Entry(2, literal("new"))]))
    assert shown(storage) == [literal("a"), literal("new")]
    assert storage.keys.get("k") is None
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith("truncated messages 1..1: the primary of term 2")
    storage.close()
    state = RaftStorage(str(tmp_path), True, 10).load()
    assert state.entries == (Entry(1, NOOP), Entry(1, literal("a")), Entry(2, NOOP), Entry(2, literal("new")))


def test_readies_staged_together_are_written_as_one_with_the_last_hard_state(tmp_path):
    storage = RaftStorage(str(tmp_path), True, 10)
    storage.load()
    stored(storage,
           ready(hard_state=HardState(1, "a", True), append=[Entry(1, NOOP), Entry(1, literal("x"))]),
           ready(truncate_from=1, append=[Entry(1, literal("y"))]),
           ready(hard_state=HardState(2, None, True), append=[Entry(2, literal("z"))]))
    assert shown(storage) == [literal("y"), literal("z")]
    storage.close()
    state = RaftStorage(str(tmp_path), True, 10).load()
    assert (state.term, state.voted_for) == (2, None)
    assert state.entries == (Entry(1, NOOP), Entry(1, literal("y")), Entry(2, literal("z")))


def test_the_keys_kept_are_the_last_ones_of_the_log(tmp_path):
    storage = RaftStorage(str(tmp_path), True, idempotency_keys=2)
    storage.load()
    stored(storage, ready(hard_state=HardState(1, None, True), append=[
        Entry(1, encode_payload(literal(str(n)), key=f"k{n}", count=1)) for n in range(4)]))
    assert [storage.keys.get(f"k{n}") for n in range(4)] == [None, None, (2, 1), (3, 1)]
    stored(storage, ready(truncate_from=3, append=[Entry(2, literal("other"))]))
    # As a restart would: the log's last two keyed appends, now k1 and k2.
    assert [storage.keys.get(f"k{n}") for n in range(4)] == [None, (1, 1), (2, 1), None]


def test_a_fixed_role_data_directory_is_refused(tmp_path):
    SqliteStore(str(tmp_path), "secondary", True).close()
    with pytest.raises(StoreError, match="belongs to a secondary"):
        RaftStorage(str(tmp_path), True, 10)
