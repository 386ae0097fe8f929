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
formats, and writes whatever has queued up in one system call, at most once
per WRITE_INTERVAL_S.

The line a node logs for every request goes through ``log_request_line``,
which queues a bare tuple instead of a LogRecord: building a record (the
caller's frame, the clock, the thread, the process) costs more of the
shared GIL than everything else that line needs, and it is paid per request.
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
#: The writer writes at most once per this interval: a line after a quiet
#: spell goes out at once, but while lines keep coming, those of an interval
#: gather and go out together. Under load that is one wake-up and one write
#: per interval, not per line: waking a thread costs more of a node's CPU
#: than formatting a line does.
WRITE_INTERVAL_S = 0.05
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
    on the level, so this writes them, once per level, into a format string of
    that level's own, from colorlog's public ``escape_codes`` and
    ``parse_colors``; whether to colour at all is decided once, by colorlog's
    rules (``colour_wanted``); and the time of day is formatted once a second.
    Tracebacks are not coloured (colorlog colours them from Python 3.13 on).
    Thread: the one that formats (the ``log-writer``); it keeps caches unlocked.
    """

    def __init__(
        self, fmt: str, datefmt: str, stream: TextIO, environ: Mapping[str, str] = os.environ
    ) -> None:
        super().__init__(fmt, datefmt)
        self._colour = colour_wanted(stream, environ)
        self._escape_names = set(re.findall(r"%\((\w+)\)", fmt)) & set(escape_codes) | {"log_color"}
        self._reset = self._code(escape_codes["reset"])
        self._fmt_by_level: dict[str, str] = {}
        self._second: int | None = None
        self._asctime = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._asctime = second, super().formatTime(record, datefmt)
        return self._asctime

    def formatMessage(self, record: logging.LogRecord) -> str:
        level_fmt = self._fmt_by_level.get(record.levelname)
        if level_fmt is None:
            level_fmt = self._fmt_by_level[record.levelname] = self._level_fmt(record.levelname)
        message = level_fmt % record.__dict__
        # Like colorlog: end every line uncoloured.
        return message if message.endswith(self._reset) else message + self._reset

    def _level_fmt(self, levelname: str) -> str:
        """``fmt`` with this level's escape codes written in, as literal text."""
        level_colour = parse_colors(colorlog.default_log_colors.get(levelname, ""))
        escapes = {name: self._code(escape_codes[name]) for name in self._escape_names - {"log_color"}}
        escapes["log_color"] = self._code(level_colour)
        return re.sub(r"%\((\w+)\)s",
                      lambda m: escapes[m[1]].replace("%", "%%") if m[1] in escapes else m[0],
                      self._fmt)

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


def log_request_line(logger: logging.Logger, msg: str, *args: object) -> None:
    """``logger.info(msg, *args)`` for the line logged on every request, for a
    fraction of its cost on the calling thread. Thread: any.

    When the writer's handler is the only one a record would reach, and
    nothing would filter it or hold INFO back, it gets a tuple: the time,
    the thread's name, and what to format, later, on the writer. Otherwise
    (logging set up some other way, a filter or a level added, or a test
    capturing records) it is an ordinary ``logger.info``."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handlers = logging.root.handlers
    if (len(handlers) == 1 and type(handlers[0]) is _Enqueue and not handlers[0].filters
            and handlers[0].level <= logging.INFO and _only_root_handles(logger)):
        handlers[0].enqueue_line(logger.name, msg, args)
    else:
        logger.info(msg, *args)


def _only_root_handles(logger: logging.Logger) -> bool:
    """No handler or filter of its own, nor of any ancestor below the root."""
    while logger is not logging.root:
        if logger.handlers or logger.filters or not logger.propagate:
            return False
        logger = logger.parent
    return True


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

    def enqueue_line(self, name: str, msg: str, args: tuple) -> None:
        """Queue an INFO line as a tuple; the writer makes it a record
        (_QueuedLine). Only for a handler without filters or a level above
        INFO, which ``log_request_line`` checks: filters take records."""
        self._records.put((name, msg, args, time.time(), threading.current_thread().name))


class _QueuedLine(logging.LogRecord):
    """An INFO record made on the writer from ``enqueue_line``'s tuple: the
    fields the formatters read, without what LogRecord's own constructor
    looks up (the caller's frame, the process) on the logging thread."""

    def __init__(self, name: str, msg: str, args: tuple, created: float, thread_name: str) -> None:
        self.name, self.msg, self.args = name, msg, args
        self.levelno, self.levelname = logging.INFO, "INFO"
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord does
        self.relativeCreated = (created - logging._startTime) * 1000
        self.threadName, self.thread = thread_name, None
        self.processName, self.process = None, None
        self.pathname = self.filename = self.module = ""
        self.funcName, self.lineno = None, 0
        self.exc_info = self.exc_text = self.stack_info = None


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
        last_write = -WRITE_INTERVAL_S
        while True:
            batch = [self._records.get()]
            # A batching window, not a wait for anything: while lines keep
            # coming, let those of the interval gather.
            time.sleep(max(0.0, last_write + WRITE_INTERVAL_S - time.monotonic()))
            # Then everything queued by now, WRITE_BATCH records per write: the
            # interval bounds how often the writer wakes, never how much it
            # writes, so it keeps up with any rate of lines.
            while True:
                while len(batch) < WRITE_BATCH and not self._records.empty():
                    batch.append(self._records.get())
                if self._write(batch):
                    return
                if self._records.empty():
                    break
                batch = []
            last_write = time.monotonic()

    def _write(self, batch: list) -> bool:
        """Format and write the records of ``batch``; True if it holds the stop mark."""
        lines, stop = [], False
        for item in batch:
            if item is self._STOP:
                stop = True
                continue
            record = _QueuedLine(*item) if type(item) is tuple else item
            try:
                lines.append(self._formatter.format(record) + "\n")
            except Exception:
                # A bad logging call (arguments that do not fit the message)
                # costs its own line, reported as logging's handlers report
                # it, never the writer thread and every line after it.
                self.handler.handleError(record)
        if lines:
            try:
                self._stream.write("".join(lines))
                self._stream.flush()
            except OSError:
                # stderr is gone (a closed pipe): there is nowhere to write
                # these lines or to say so; the writer stays up for the rest.
                pass
        return stop


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
