"""Process-wide logging on stderr, the thread name on every line: colorlog's
colours for people (LOG_FORMAT=text), or one JSON object per line for log
collectors (LOG_FORMAT=json).

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

import json
import logging
import os
import queue
import re
import sys
import threading
import time
from typing import Mapping, TextIO

import colorlog
from colorlog.escape_codes import escape_codes, parse_colors

FORMAT = (
    "%(log_color)s%(asctime)s.%(msecs)03d %(levelname)-7s%(reset)s "
    "%(cyan)s%(threadName)-13s%(reset)s %(name)s: %(message)s"
)
#: Waitress warns "Task queue depth is N" whenever every worker is busy, once
#: per queued request. Under a burst that is thousands of identical lines.
WAITRESS_QUEUE_WARNING_INTERVAL_S = 10.0
#: Records written per system call at most.
WRITE_BATCH = 512
#: LOG_FORMAT's values.
TEXT = "text"
JSON = "json"
LOG_FORMATS = (TEXT, JSON)


def setup_logging(level: str, log_format: str = TEXT) -> "LogWriter":
    """Route every record through a queue to one writer of stderr.

    Text lines are coloured as colorlog colours them: only when stderr is a
    TTY, unless the environment sets FORCE_COLOR (docker logs are no TTY) or
    NO_COLOR. JSON lines are never coloured, whatever the environment says.
    """
    if log_format == JSON:
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = ColourFormatter(FORMAT, datefmt="%H:%M:%S", stream=sys.stderr)
    writer = LogWriter(sys.stderr, formatter)
    root = logging.getLogger()
    root.handlers[:] = [writer.handler]
    root.setLevel(level)
    queue_logger = logging.getLogger("waitress.queue")
    queue_logger.filters = [f for f in queue_logger.filters if not isinstance(f, RateLimitFilter)]
    queue_logger.addFilter(RateLimitFilter(WAITRESS_QUEUE_WARNING_INTERVAL_S))
    writer.start()
    return writer


class ColourFormatter(logging.Formatter):
    """Writes what ``colorlog.ColoredFormatter`` writes, at a fraction of its cost.

    colorlog's formatter copies its table of every escape code (hundreds) into
    each record and reads the environment each time: 20 to 40 µs a line, up to
    a fifth of a core at a few thousand appends a second. The codes depend only
    on the level, so this works out, once per level, just the ones ``fmt``
    names, from colorlog's public ``escape_codes`` and ``parse_colors``; and
    whether to colour at all once, by colorlog's rules (``colour_wanted``).
    Tracebacks are not coloured (colorlog colours them from Python 3.13 on).
    Thread: the one that formats (the ``log-writer``).
    """

    def __init__(
        self, fmt: str, datefmt: str, stream: TextIO, environ: Mapping[str, str] = os.environ
    ) -> None:
        super().__init__(fmt, datefmt)
        self._colour = colour_wanted(stream, environ)
        names = set(re.findall(r"%\((\w+)\)", fmt))
        self._fixed_escapes = {name: self._code(escape_codes[name]) for name in names & set(escape_codes)}
        self._reset = self._code(escape_codes["reset"])
        self._escapes_by_level: dict[str, dict[str, str]] = {}

    def formatMessage(self, record: logging.LogRecord) -> str:
        escapes = self._escapes_by_level.get(record.levelname)
        if escapes is None:
            level_colour = parse_colors(colorlog.default_log_colors.get(record.levelname, ""))
            escapes = {**self._fixed_escapes, "log_color": self._code(level_colour)}
            self._escapes_by_level[record.levelname] = escapes
        message = super().formatMessage(_WithEscapes(record, escapes))
        # Like colorlog: end every line uncoloured.
        return message if message.endswith(self._reset) else message + self._reset

    def _code(self, escape: str) -> str:
        return escape if self._colour else ""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, for log collectors.

    Fields: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``,
    ``thread`` and ``message``; ``exception`` (the traceback text) and
    ``stack`` only when the record has them. JSON escapes every control
    character, so a line never holds a line break or an escape code, even
    when a message does. Thread: the one that formats (the ``log-writer``).
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["exception"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return json.dumps(fields)


def colour_wanted(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """colorlog's rule: FORCE_COLOR set, colour; else NO_COLOR set or no TTY, none."""
    if "FORCE_COLOR" in environ:
        return True
    return "NO_COLOR" not in environ and stream.isatty()


class _WithEscapes:
    """A record's attributes plus escape codes, for the format string to name."""

    def __init__(self, record: logging.LogRecord, escapes: Mapping[str, str]) -> None:
        self.__dict__.update(record.__dict__)
        self.__dict__.update(escapes)


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
