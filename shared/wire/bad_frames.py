"""Logging of dropped frames, at a rate no peer can drive up.

A peer can send malformed frames as fast as the network carries them;
one WARNING each would fill the disk (100,000 frames wrote 18 MB in a
second). This logs the first bad frame of each peer, then at most one line
per peer per interval, which counts the frames dropped in between.

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


class BadFrameLog:
    def __init__(self, logger: logging.Logger, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        self._peers: dict[str, tuple[float, int]] = {}  # peer -> (next line due, dropped since)
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
        self._peers.pop(peer, None)
        if len(self._peers) >= MAX_PEERS:
            self._peers.pop(next(iter(self._peers)))
        self._peers[peer] = (now + self._interval_s, 0)
        suffix = f" ({held_back} more dropped from {peer} since the last line)" if held_back else ""
        self._log.log(level, "dropped a bad frame from %s: " + what + suffix, peer, *args)
