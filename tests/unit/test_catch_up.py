"""A secondary that comes up late is caught up in batches: seconds, not minutes."""

from __future__ import annotations

import time

from secondary.receiver import Receiver
from shared.log.ordered_log import OrderedLog
from shared.wire.protocol import encode_entry
from tests.support.documents import document_bytes
from tests.support.waiting import wait_until

BACKLOG = 100_000


def test_a_late_secondary_receives_a_100k_backlog_in_order_in_seconds(ctx, make_inprocess_cluster):
    cluster = make_inprocess_cluster(names=("s1",), running=(), quorum=1)
    for i in range(BACKLOG):
        cluster.store.append(encode_entry(f"message {i:06d} " + "x" * 80))
    cluster.replicator.notify_appended()
    spec = cluster.config.secondaries[0]
    store = OrderedLog()
    receiver = Receiver(ctx, spec.endpoint, store, spec.name)
    started = time.monotonic()
    receiver.start()
    try:
        wait_until(lambda: len(store) == BACKLOG, 60, interval=0.05, what="the catch-up")
        elapsed = time.monotonic() - started
        assert document_bytes(store) == document_bytes(cluster.store)
        assert elapsed < 30, f"catching up {BACKLOG} messages took {elapsed:.1f}s"
    finally:
        receiver.stop()
