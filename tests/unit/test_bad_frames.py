"""Dropped frames are logged once per peer per interval, with a count."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from shared.wire.bad_frames import BadFrameLog


def test_one_line_per_peer_per_interval_then_a_count(caplog):
    clock = SimpleNamespace(now=100.0)
    frames = BadFrameLog(logging.getLogger("test.frames"), interval_s=5.0, clock=lambda: clock.now)
    with caplog.at_level(logging.WARNING, logger="test.frames"):
        for _ in range(1000):
            frames.dropped("peer a", "junk %d", 1)
        frames.dropped("peer b", "junk %d", 2)
        clock.now += 5.0
        frames.dropped("peer a", "junk %d", 3)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dropped a bad frame from peer a: junk 1",
        "dropped a bad frame from peer b: junk 2",
        "dropped a bad frame from peer a: junk 3 (999 more dropped from peer a since the last line)",
    ]
