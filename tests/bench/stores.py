"""The stores the benchmark writes directly, and what it measures of stores on disk.

Some scenarios need a node that already holds a large log: loading one
over HTTP would take minutes (10,000,000 messages: far longer), so
``build_store`` writes the node's DATA_DIR directly, with the product's own
``shared.log.sqlite_log.SqliteLog`` and its ``Changes``, in big
transactions, holding what a node of that role would have written:

- the entries: the first run's no-op at index 0 (term 1, no messages),
  then one entry per append of ``per_entry`` messages (the body: their
  JSON literals joined by ","; ``count``, ``first_id``, ``offset``: the
  bytes of bodies before it; the CRC-32 digest chain of
  ``shared.consensus.raft_log.digest_after``), all of term 1;
- the term runs (one: term 1 from index 0); no start (nothing dropped);
- the hard state a node of that role has once its first term began
  (``Identity``): a fixed primary's term 1, its vote for itself, the
  cluster's name; a fixed secondary's term 1 and that name; a failover
  node's term 1 and its vote for the first primary;
- the incarnation: a node with FSYNC=always keeps it across restarts.

The role is the store's (``SqliteLog`` refuses another role's): a fixed
primary opens "primary", a fixed secondary "secondary", a failover node
"failover" (primary/main.py, secondary/main.py, shared/node/main.py).

Stores are written without fsync: only the node started on them is
measured, and the files are then in the page cache. A failover cluster's
three stores are one store copied (``copy_store``) with each node's own
hard state and incarnation, as a cluster holds the same entries.

Thread: the benchmark's main thread.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from shared.consensus.raft_log import Entry, HardState, digest_after
from shared.log.sqlite_log import FILE_NAME, Changes, SqliteLog
from shared.wire.frames import encode_entry

#: Entries per transaction while a store is built.
BUILD_BATCH = 100_000
#: The term every built entry is of: the cluster's first.
TERM = 1
#: SqliteLog's key_capacity: built stores hold no keyed appends.
KEY_CAPACITY = 100_000


def message(tag: str, seq: int, size: int) -> str:
    """The message stored at ``seq``: unique, ``size`` ASCII bytes, like post.lua's."""
    head = f"{tag} n{seq} "
    return head + "x" * (size - len(head))


@dataclass(frozen=True)
class Identity:
    """Which store a node opens (its role) and what it remembers of its cluster."""

    role: str
    hard_state: HardState


def new_cluster_name() -> str:
    """A fixed-role cluster's name, as a fixed primary draws it at its first run."""
    return uuid.uuid4().hex[:16]


def fixed_primary(cluster: str, name: str = "primary") -> Identity:
    """A fixed primary whose first run (term 1) named ``cluster``."""
    return Identity("primary", HardState(TERM, name, True, 0, cluster))


def fixed_secondary(cluster: str) -> Identity:
    """A fixed secondary that followed that run."""
    return Identity("secondary", HardState(TERM, None, True, 0, cluster))


def failover_node(voted_for: str, name: str) -> Identity:
    """A failover node of a cluster whose first term elected ``voted_for``; the
    others heard that term before they were caught up (their vote floor)."""
    return Identity("failover", HardState(TERM, voted_for, True, 0 if name == voted_for else TERM, None))


def build_store(data_dir: Path, identity: Identity, count: int, tag: str, size: int,
                per_entry: int = 1) -> None:
    """Write a store in ``data_dir``: messages ``message(tag, 0..count-1, size)``,
    ``per_entry`` to an entry, and ``identity``."""
    store = SqliteLog(str(data_dir), identity.role, fsync=False, key_capacity=KEY_CAPACITY)
    try:
        noop = Entry(TERM)
        digest = digest_after(0, noop)
        now = time.time()
        store.commit(Changes(rows=[(0, TERM, 0, 0, 0, digest, now, None, b"")], runs=[(0, TERM)],
                             hard_state=identity.hard_state, incarnation=uuid.uuid4().hex))
        index, first_id, offset = 1, 0, 0
        while first_id < count:
            rows = []
            while first_id < count and len(rows) < BUILD_BATCH:
                n = min(per_entry, count - first_id)
                body = b",".join(encode_entry(message(tag, seq, size)) for seq in range(first_id, first_id + n))
                digest = digest_after(digest, Entry(TERM, body, n))
                rows.append((index, TERM, first_id, n, offset, digest, now, None, body))
                index, first_id, offset = index + 1, first_id + n, offset + len(body)
            store.commit(Changes(rows=rows))
    finally:
        store.close()
    _checkpoint(data_dir)


def copy_store(source: Path, target: Path, identity: Identity) -> None:
    """``source``'s store in ``target``, with ``identity``'s hard state and a new incarnation."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / FILE_NAME, target / FILE_NAME)
    store = SqliteLog(str(target), identity.role, fsync=False, key_capacity=KEY_CAPACITY)
    try:
        store.commit(Changes(hard_state=identity.hard_state, incarnation=uuid.uuid4().hex))
    finally:
        store.close()
    _checkpoint(target)


def size_on_disk(data_dir: Path) -> int:
    """The store's bytes on disk: the database file and its write-ahead log."""
    return sum(path.stat().st_size for path in (data_dir / FILE_NAME, data_dir / f"{FILE_NAME}-wal")
               if path.exists())


def _checkpoint(data_dir: Path) -> None:
    """Fold the write-ahead log into the database file, so that it can be copied alone."""
    db = sqlite3.connect(data_dir / FILE_NAME)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
