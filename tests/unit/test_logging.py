"""Logging setup: thread names on every line, no flood of Waitress queue
warnings, colorlog's colours in text, and JSON lines that are never coloured."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import re
import sys
import threading

import colorlog
import pytest

from shared.runtime.logging_setup import (
    FORMAT, JSON, WRITE_BATCH, ColourFormatter, JsonFormatter, RateLimitFilter, log_request_line, setup_logging,
)


@contextlib.contextmanager
def logging_set_up(*args):
    """``setup_logging(*args)`` for one test; on the way out every queued
    line is written (the writer stops) and the root's handlers go."""
    writer = setup_logging(*args)
    try:
        yield
    finally:
        writer.stop()
        logging.getLogger().handlers.clear()


def test_every_line_names_its_thread(capsys):
    with logging_set_up("INFO"):
        worker = threading.Thread(
            target=lambda: logging.getLogger("t").info("from the worker"), name="replicator-io"
        )
        worker.start()
        worker.join()
        logging.getLogger("t").debug("below the level")
    err = capsys.readouterr().err
    assert "replicator-io" in err and "from the worker" in err and "INFO" in err
    assert "below the level" not in err


def test_a_burst_of_waitress_queue_warnings_logs_one_line(capsys):
    with logging_set_up("INFO"):
        for depth in range(200):
            logging.getLogger("waitress.queue").warning("Task queue depth is %d", depth)
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
    with logging_set_up("INFO"):
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("t").exception("it failed")
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
    with logging_set_up("INFO", JSON):
        worker = threading.Thread(
            target=lambda: logging.getLogger("primary.appender").warning("id=%d acks=%d", 7, 2),
            name="waitress-3",
        )
        worker.start()
        worker.join()
        logging.getLogger("t").info("second line")
        logging.getLogger("t").debug("below the level")
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
    with logging_set_up("INFO", JSON):
        for n in range(2000):  # more than one WRITE_BATCH
            logging.getLogger("t").info("line %d", n)
    assert [f["message"] for f in _json_lines(capsys.readouterr().err)] == [f"line {n}" for n in range(2000)]


def test_the_writer_keeps_up_with_far_more_lines_than_a_batch_per_interval(capsys):
    # 60,000 lines queued at once: at WRITE_BATCH lines per WRITE_INTERVAL_S
    # they would take about 6 s, and stop() gives the writer 5.
    count = 120 * WRITE_BATCH
    with logging_set_up("INFO", JSON):
        logger = logging.getLogger("primary.appender")
        for n in range(count):
            log_request_line(logger, "append id=%d", n)
    lines = _json_lines(capsys.readouterr().err)
    assert [f["message"] for f in lines] == [f"append id={n}" for n in range(count)]


def test_a_bad_logging_call_costs_its_own_line_and_no_other(capsys):
    with logging_set_up("INFO", JSON):
        logging.getLogger("t").info("before")
        logging.getLogger("t").info("%d messages", "not a number")  # a bug in a caller
        logging.getLogger("t").info("after")
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err  # reported as logging's own handlers report it
    messages = [json.loads(line)["message"] for line in err.splitlines() if line.startswith("{")]
    assert messages == ["before", "after"]


def _log_both_ways(log_format: str, capsys) -> list[str]:
    """The same INFO line through logger.info and through log_request_line,
    from a thread named like a Waitress worker."""
    with logging_set_up("INFO", log_format):
        logger = logging.getLogger("primary.appender")
        worker = threading.Thread(name="waitress-7", target=lambda: (
            logger.info("append id=%d w=%d", 7, 3), log_request_line(logger, "append id=%d w=%d", 7, 3)))
        worker.start()
        worker.join()
    return capsys.readouterr().err.splitlines()


def test_a_request_line_is_written_as_logger_info_writes_it(capsys):
    ordinary, queued = _log_both_ways("text", capsys)
    time_of_day = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} ")
    assert time_of_day.match(ordinary) and time_of_day.match(queued)
    assert time_of_day.sub("", queued) == time_of_day.sub("", ordinary)
    assert "waitress-7" in queued and "primary.appender: append id=7 w=3" in queued


def test_a_request_line_in_json_has_the_fields_of_any_other_line(capsys):
    ordinary, queued = (json.loads(line) for line in _log_both_ways(JSON, capsys))
    assert {**queued, "time": ""} == {**ordinary, "time": ""}
    assert queued["thread"] == "waitress-7" and queued["message"] == "append id=7 w=3"


def test_a_request_line_below_the_level_is_not_written(capsys):
    with logging_set_up("WARNING"):
        log_request_line(logging.getLogger("primary.appender"), "append id=%d", 4)
    assert capsys.readouterr().err == ""


def test_a_request_line_reaches_every_handler_when_the_writer_is_not_alone(caplog):
    with logging_set_up("INFO"):
        logging.getLogger().addHandler(caplog.handler)  # as a test capturing records does
        log_request_line(logging.getLogger("primary.appender"), "append id=%d", 4)
    assert [r.getMessage() for r in caplog.records] == ["append id=4"]


def test_a_filter_on_the_writers_handler_judges_request_lines_too(capsys):
    with logging_set_up("INFO", JSON):
        [handler] = logging.getLogger().handlers
        handler.addFilter(lambda record: "keep" in record.getMessage())
        for word in ("keep", "drop"):
            log_request_line(logging.getLogger("primary.appender"), "append %s", word)
    assert [f["message"] for f in _json_lines(capsys.readouterr().err)] == ["append keep"]


def test_the_writers_handler_level_holds_request_lines_back_too(capsys):
    with logging_set_up("INFO"):
        logging.getLogger().handlers[0].setLevel(logging.WARNING)
        log_request_line(logging.getLogger("primary.appender"), "append id=%d", 4)
    assert capsys.readouterr().err == ""


def test_the_time_of_day_follows_the_clock_across_seconds():
    ours = ColourFormatter(FORMAT, datefmt="%H:%M:%S", stream=io.StringIO())
    theirs = colorlog.ColoredFormatter(FORMAT, datefmt="%H:%M:%S", stream=io.StringIO())
    for created in (1_000.25, 1_000.75, 1_001.5, 4_000.0, 1_000.5):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "at %s", (created,), None)
        record.created, record.msecs = created, (created % 1) * 1000
        assert ours.format(record) == theirs.format(record)
