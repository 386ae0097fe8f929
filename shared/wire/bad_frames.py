"""Logging of dropped frames, at a rate no peer can drive up.

A peer can send malformed frames as fast as the network carries them;
one WARNING each would fill the disk (100,000 frames wrote 18 MB in a
second). This logs the first bad frame of each peer, then at most one line
per peer per interval, which counts the frames dropped in between. A
peer is named by what its frame claims, which a forger picks afresh for
each frame: so over all peers at most MAX_LINES lines are written per
interval, and the next line written counts the frames left out meanwhile.

Thread: the I/O thread that owns the socket the frames arrive on.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

#: Seconds between two lines about the same peer.
INTERVAL_S = 5.0
#: Peers remembered at once; the oldest is forgotten beyond it.
MAX_PEERS = 1024
#: Lines per interval about all peers together.
MAX_LINES = 20


class BadFrameLog:
    def __init__(self, logger: logging.Logger, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        self._peers: dict[str, tuple[float, int]] = {}  # peer -> (next line due, dropped since)
        self._lines_until = 0.0  # the end of the interval ``_lines`` counts the lines of
        self._lines = 0
        self._left_out = 0  # frames dropped without a line: the interval's lines were spent
        #: Frames dropped since start, logged or not (for /health).
        self.count = 0

    def dropped(self, peer: str, what: str, *args, level: int = logging.WARNING) -> None:
        """Note a dropped frame from ``peer``; ``what`` and ``args`` as for logging.
        ``level``: ERROR for a frame that claims what cannot be true (a second
        primary in a term, a contradicted committed entry): a forgery, or a
        peer whose state is broken."""
        self.count += 1
        now = self._clock()
        due, held_back = self._peers.get(peer, (0.0, 0))
        if now < due:
            self._peers[peer] = (due, held_back + 1)
            return
        if now >= self._lines_until:
            self._lines_until, self._lines = now + self._interval_s, 0
        if self._lines >= MAX_LINES:
            self._left_out += 1
            return
        self._lines += 1
        self._peers.pop(peer, None)
        if len(self._peers) >= MAX_PEERS:
            self._peers.pop(next(iter(self._peers)))
        self._peers[peer] = (now + self._interval_s, 0)
        suffix = f" ({held_back} more dropped from {peer} since the last line)" if held_back else ""
        if self._left_out:
            suffix += f" ({self._left_out} more dropped meanwhile without a line: too many senders)"
            self._left_out = 0
        self._log.log(level, "dropped a bad frame from %s: " + what + suffix, peer, *args)
