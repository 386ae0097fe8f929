"""What both apps share: JSON error pages (a crash is a JSON 500, never a
traceback) and the OpenAPI route."""

from __future__ import annotations

import logging

import webtest

from shared.web.http import new_app


def test_a_crash_in_a_route_is_a_json_500_and_the_traceback_stays_in_the_log(caplog):
    app = new_app({"openapi": "3.0.3"})

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    resp = webtest.TestApp(app).get("/boom", expect_errors=True)
    assert resp.status_int == 500 and resp.content_type == "application/json"
    assert resp.json == {"error": "internal error; the server log has the details"}
    assert "secret internals" not in resp.text and "Traceback" not in resp.text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "secret internals" in errors[0].getMessage()
    assert "Traceback" not in errors[0].getMessage(), "one line; the traceback is for DEBUG"


def test_repeated_crashes_log_one_error_line_per_interval(caplog):
    app = new_app({"openapi": "3.0.3"})

    @app.get("/boom")
    def boom():
        raise RuntimeError("every time")

    client = webtest.TestApp(app)
    with caplog.at_level(logging.DEBUG):
        for _ in range(50):
            assert client.get("/boom", expect_errors=True).status_int == 500
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    tracebacks = [r for r in caplog.records if r.levelno == logging.DEBUG and "Traceback" in r.getMessage()]
    assert len(errors) <= 1 and len(tracebacks) == 50


def test_the_app_serves_its_openapi_document():
    document = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {}}
    resp = webtest.TestApp(new_app(document)).get("/openapi.json")
    assert resp.content_type == "application/json" and resp.json == document


def test_a_path_that_is_not_utf8_is_no_endpoint():
    """Bottle would drop the bytes it cannot decode, and route "/messages%ff" as "/messages"."""
    app = new_app({"openapi": "3.0.3"})
    calls = []
    app.post("/messages", callback=lambda: calls.append("appended"))
    client = webtest.TestApp(app)
    for path in ("/messages%ff", "/messages%e9", "/openapi.json%ff"):
        resp = client.request(path, method="POST" if path.startswith("/messages") else "GET",
                              expect_errors=True)
        assert (resp.status_int, resp.json) == (404, {"error": "no such endpoint"}), path
    assert calls == []
    assert client.get("/openapi.json%C3%A9", expect_errors=True).status_int == 404  # é, valid UTF-8
