"""Process-wide logging: colorlog on stderr, the thread name on every line.

Call ``setup_logging`` once, from the main thread, before Waitress starts
(Waitress calls ``logging.basicConfig``, which does nothing once the root
logger has a handler), and ``stop`` the returned writer last, at exit, so
the final lines are written. Any thread may log.

Writing is done by one thread of its own, ``log-writer``. A logging thread
only puts its record on a queue. A handler that wrote to stderr itself would
hold its lock across the write; the write releases the GIL, and every other
thread that logs queued behind that lock until the writer had the GIL back:
under load, most Waitress workers were found parked there. The writer also
formats, and writes whatever has queued up in one system call.
"""

from __future__ import annotations

import logging
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
#: Records written per system call at most.
WRITE_BATCH = 512


def setup_logging(level: str) -> "LogWriter":
    """Route every record through a queue to one writer of stderr.

    colorlog colours stderr only when it is a TTY, unless the environment
    sets FORCE_COLOR (docker logs are no TTY) or NO_COLOR.
    """
    writer = LogWriter(sys.stderr, _LeanColoredFormatter(FORMAT, datefmt="%H:%M:%S", stream=sys.stderr))
    root = logging.getLogger()
    root.handlers[:] = [writer.handler]
    root.setLevel(level)
    queue_logger = logging.getLogger("waitress.queue")
    queue_logger.filters = [f for f in queue_logger.filters if not isinstance(f, RateLimitFilter)]
    queue_logger.addFilter(RateLimitFilter(WAITRESS_QUEUE_WARNING_INTERVAL_S))
    writer.start()
    return writer


class _LeanColoredFormatter(colorlog.ColoredFormatter):
    """colorlog's formatter, minus its cost per record.

    colorlog copies its table of every escape code (hundreds) into each record
    and checks the environment each time: about 60 µs a line, a fifth of a
    core at a few thousand appends a second. The codes depend only on the
    level, so this keeps, per level, just the ones FORMAT uses.
    """

    _USED = ("log_color", "reset", "cyan")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._escapes_by_level: dict[str, dict[str, str]] = {}

    def _escape_code_map(self, item: str) -> dict[str, str]:
        escapes = self._escapes_by_level.get(item)
        if escapes is None:
            every = super()._escape_code_map(item)
            escapes = self._escapes_by_level[item] = {key: every[key] for key in self._USED}
        return escapes


class _Enqueue(logging.Handler):
    """The handler every thread calls: it only queues the record."""

    def __init__(self, records: queue.SimpleQueue) -> None:
        super().__init__()
        self._records = records

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: SimpleQueue.put is atomic, and taking a lock per
        # record is what this module exists to avoid.
        if self.filter(record):
            self._records.put(record)
        return True


class LogWriter:
    """Formats queued records and writes them, on the ``log-writer`` thread."""

    _STOP = object()

    def __init__(self, stream, formatter: logging.Formatter) -> None:
        self._stream = stream
        self._formatter = formatter
        self._records: queue.SimpleQueue = queue.SimpleQueue()
        self.handler = _Enqueue(self._records)
        self._thread = threading.Thread(target=self._write_forever, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write out what is queued, then end the thread."""
        self._records.put(self._STOP)
        self._thread.join(timeout)

    def _write_forever(self) -> None:
        while True:
            batch = [self._records.get()]
            while len(batch) < WRITE_BATCH and not self._records.empty():
                batch.append(self._records.get())
            records = [r for r in batch if r is not self._STOP]
            if records:
                self._stream.write("".join(self._formatter.format(r) + "\n" for r in records))
                self._stream.flush()
            if len(records) != len(batch):
                return


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
