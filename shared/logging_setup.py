"""Process-wide logging: colorlog on stderr, the thread name on every line.

Call ``setup_logging`` once, from the main thread, before Waitress starts
(Waitress calls ``logging.basicConfig``, which does nothing once the root
logger has a handler), and stop the returned listener last, at exit, so the
final lines are written. After that any thread may log.

Writing is done by one thread of its own. A request thread only puts its
record on a queue: a handler that wrote to stderr itself would hold its lock
across the write, the write releases the GIL, and every other thread that
logs would queue behind that lock until the writer got the GIL back, a
convoy that cut append throughput several times over.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import threading
import time

import colorlog

FORMAT = (
    "%(log_color)s%(asctime)s.%(msecs)03d %(levelname)-7s%(reset)s "
    "%(cyan)s%(threadName)-13s%(reset)s %(name)s: %(message)s"
)
#: Waitress warns "Task queue depth is N" whenever every worker is busy, once
#: per queued request. Under a burst that is thousands of identical lines.
WAITRESS_QUEUE_WARNING_INTERVAL_S = 10.0


def setup_logging(level: str) -> logging.handlers.QueueListener:
    """Route every record through a queue to one colour handler on stderr.

    colorlog colours stderr only when it is a TTY, unless the environment
    sets FORCE_COLOR (docker logs are no TTY) or NO_COLOR.
    """
    writer = colorlog.StreamHandler(sys.stderr)
    writer.setFormatter(colorlog.ColoredFormatter(FORMAT, datefmt="%H:%M:%S", stream=sys.stderr))
    records: queue.SimpleQueue = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level)
    queue_logger = logging.getLogger("waitress.queue")
    queue_logger.filters = [f for f in queue_logger.filters if not isinstance(f, RateLimitFilter)]
    queue_logger.addFilter(RateLimitFilter(WAITRESS_QUEUE_WARNING_INTERVAL_S))
    listener = logging.handlers.QueueListener(records, writer)
    listener.start()
    listener._thread.name = "log-writer"  # QueueListener offers no other way to name it
    return listener


class RateLimitFilter(logging.Filter):
    """Let one record through per interval and count the ones held back."""

    def __init__(self, interval_s: float, clock=time.monotonic) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next_allowed = 0.0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = self._clock()
            if now < self._next_allowed:
                self._suppressed += 1
                return False
            if self._suppressed:
                record.msg = f"{record.msg} ({self._suppressed} similar lines suppressed)"
            self._next_allowed = now + self._interval_s
            self._suppressed = 0
            return True
