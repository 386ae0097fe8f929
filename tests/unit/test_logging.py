"""Logging setup: thread names on every line, no flood of Waitress queue
warnings, colorlog's colours in text, and JSON lines that are never coloured."""

from __future__ import annotations

import datetime
import io
import json
import logging
import sys
import threading

import colorlog
import pytest

from shared.logging_setup import FORMAT, JSON, ColourFormatter, JsonFormatter, RateLimitFilter, setup_logging


def test_every_line_names_its_thread(capsys):
    writer = setup_logging("INFO")
    try:
        worker = threading.Thread(
            target=lambda: logging.getLogger("t").info("from the worker"), name="replicator-io"
        )
        worker.start()
        worker.join()
        logging.getLogger("t").debug("below the level")
    finally:
        writer.stop()  # writes out what is queued
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "replicator-io" in err and "from the worker" in err and "INFO" in err
    assert "below the level" not in err


def test_a_burst_of_waitress_queue_warnings_logs_one_line(capsys):
    writer = setup_logging("INFO")
    try:
        for depth in range(200):
            logging.getLogger("waitress.queue").warning("Task queue depth is %d", depth)
    finally:
        writer.stop()
        logging.getLogger().handlers.clear()
    assert capsys.readouterr().err.count("Task queue depth") == 1


def test_rate_limit_filter_lets_one_through_per_interval_and_counts_the_rest():
    now = [0.0]
    limiter = RateLimitFilter(10.0, clock=lambda: now[0])

    def record():
        return logging.LogRecord("waitress.queue", logging.WARNING, __file__, 1, "Task queue depth is %d", (3,), None)

    assert limiter.filter(record())
    assert not any(limiter.filter(record()) for _ in range(500))
    now[0] = 10.0
    passed = record()
    assert limiter.filter(passed)
    assert "500 similar lines suppressed" in passed.getMessage()


def test_tracebacks_survive_the_queue(capsys):
    writer = setup_logging("INFO")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("t").exception("it failed")
    finally:
        writer.stop()
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "it failed" in err and "Traceback" in err and "ValueError: boom" in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _records() -> list[logging.LogRecord]:
    records = [
        logging.LogRecord("x", level, __file__, 1, "id=%d", (7,), None)
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL, 15)
    ]
    ends_in_reset = logging.LogRecord("x", logging.INFO, __file__, 1, "already reset\033[0m", (), None)
    return records + [ends_in_reset]


@pytest.mark.parametrize(
    "stream, environ, coloured",
    [
        (io.StringIO, {}, False),
        (io.StringIO, {"FORCE_COLOR": "1"}, True),
        (io.StringIO, {"FORCE_COLOR": ""}, True),
        (_Terminal, {}, True),
        (_Terminal, {"NO_COLOR": "1"}, False),
        (_Terminal, {"NO_COLOR": "1", "FORCE_COLOR": "1"}, True),
    ],
)
def test_the_formatter_writes_exactly_what_colorlog_writes(monkeypatch, stream, environ, coloured):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    ours = ColourFormatter(FORMAT, datefmt="%H:%M:%S", stream=stream())
    theirs = colorlog.ColoredFormatter(FORMAT, datefmt="%H:%M:%S", stream=stream())
    records = _records()
    if not coloured:  # colorlog colours tracebacks on Python 3.13+, this formatter does not
        try:
            raise ValueError("boom")
        except ValueError:
            records.append(logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()))
    for record in records:
        written = ours.format(record)
        assert written == theirs.format(record)
        assert ("\033[36m" in written) == coloured  # the thread name in cyan


def _json_lines(text: str) -> list[dict]:
    lines = text.splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


def test_json_lines_hold_time_level_logger_thread_and_message(capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # would colour text lines; never JSON ones
    writer = setup_logging("INFO", JSON)
    try:
        worker = threading.Thread(
            target=lambda: logging.getLogger("primary.appender").warning("id=%d acks=%d", 7, 2),
            name="waitress-3",
        )
        worker.start()
        worker.join()
        logging.getLogger("t").info("second line")
        logging.getLogger("t").debug("below the level")
    finally:
        writer.stop()
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "\033" not in err
    first, second = _json_lines(err)
    assert first.keys() == {"time", "level", "logger", "thread", "message"}
    assert (first["level"], first["logger"], first["thread"], first["message"]) == (
        "WARNING", "primary.appender", "waitress-3", "id=7 acks=2")
    assert second["message"] == "second line" and second["thread"] == "MainThread"
    stamp = datetime.datetime.strptime(first["time"], "%Y-%m-%dT%H:%M:%S.%f%z")  # "Z": UTC
    assert abs(stamp - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(minutes=1)


def test_a_json_line_carries_the_traceback_and_stays_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed\nat \033[31monce", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\033" not in line
    fields = json.loads(line)
    assert fields["message"] == "failed\nat \033[31monce"  # escaped, not lost
    assert fields["exception"].startswith("Traceback") and "ValueError: boom" in fields["exception"]


def test_json_lines_survive_the_writer_batching_records_together(capsys):
    writer = setup_logging("INFO", JSON)
    try:
        for n in range(2000):  # more than one WRITE_BATCH
            logging.getLogger("t").info("line %d", n)
    finally:
        writer.stop()
        logging.getLogger().handlers.clear()
    assert [f["message"] for f in _json_lines(capsys.readouterr().err)] == [f"line {n}" for n in range(2000)]
