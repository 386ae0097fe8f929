"""HTTP pieces both roles share: JSON answers and JSON errors for Bottle apps.

Every answer either role gives, success or error, is JSON. Bottle's own
errors (404 unknown path, 405 wrong method, 500 crash) would be HTML; the
handler installed here turns them into ``{"error": ...}`` and keeps the
traceback in the log, never in the response.

Thread: any Waitress worker thread (Bottle's request/response are thread-local).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Iterator

import bottle

from shared.runtime.logging_setup import RateLimitFilter

#: The name its lines carried before shared/ was grouped by concern: log
#: filters and alerts key on it, so it stays.
log = logging.getLogger("shared.http")
crash_log = logging.getLogger(f"{log.name}.crashes")
crash_log.addFilter(RateLimitFilter(5.0))

JSON = "application/json"

_REASONS = {
    404: "no such endpoint",
    405: "method not allowed on this endpoint",
    500: "internal error; the server log has the details",
}


def raw_header(name: str) -> str | None:
    """A request header as it came (None if it did not): its bytes as latin-1
    text, as WSGI hands them over, whatever they are. Bottle's ``get_header``
    decodes them again as UTF-8 and raises on any other byte: a client's junk
    header would be a 500 instead of the answer a bad value gets."""
    return bottle.request.headers.raw(name)


def json_response(status: int, payload: dict, headers: dict | None = None) -> bottle.HTTPResponse:
    """A complete response; return it or raise it from a route."""
    return bottle.HTTPResponse(
        body=json.dumps(payload).encode(),
        status=status,
        headers={"Content-Type": JSON, **(headers or {})},
    )


def json_error(status: int, message: str, headers: dict | None = None, **details) -> bottle.HTTPResponse:
    return json_response(status, {"error": message, **details}, headers)


#: What the HTML pages may load: nothing from elsewhere, only their own
#: inline script and style, and requests to the node that served them (or,
#: with ``connect_anywhere``, to any http(s) origin as well).
_PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "connect-src 'self'{anywhere}; img-src data:; form-action 'none'; base-uri 'none'")


def html_response(page: bytes, connect_anywhere: bool = False) -> bottle.HTTPResponse:
    """A self-contained HTML page (``GET /``), which holds no data of the log.
    ``connect_anywhere``: its script may fetch from other origins too (the
    failover dashboard polls every node, whose URLs it learns as it runs)."""
    policy = _PAGE_POLICY.format(anywhere=" http: https:" if connect_anywhere else "")
    return bottle.HTTPResponse(body=page, headers={
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": policy,
        "Cache-Control": "no-cache",
    })


def streamed_json(size: int | None, chunks: Iterator[bytes]) -> bottle.HTTPResponse:
    """A 200 whose JSON body is already encoded, sent chunk by chunk; with its
    Content-Length when ``size`` is known (else chunked, as a large read from disk)."""
    headers = {"Content-Type": JSON}
    if size is not None:
        headers["Content-Length"] = str(size)
    return bottle.HTTPResponse(body=chunks, status=200, headers=headers)


class LogReads:
    """A cap on whole-log reads served at once: each holds a worker thread
    until its client has taken the last byte, and a client that never reads
    would hold it for good. Beyond the cap, a read is answered 503 at once,
    so stalled readers can pin at most ``slots`` threads.

    Thread: any Waitress worker."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)

    def serve(self, size: int | None, chunks: Iterator[bytes]) -> bottle.HTTPResponse:
        """``streamed_json`` while a slot is free, released when the response
        ends, however it ends; else a 503."""
        if not self._free.acquire(blocking=False):
            return json_error(503, f"busy: {self.slots} reads of the whole log are already being "
                                   "sent; retry later", {"Retry-After": "1"})
        return streamed_json(size, _Releasing(chunks, self._free.release))


class _Releasing:
    """The chunks of a response, and a release run once when they are done:
    sent to the end, or closed (WSGI calls ``close`` however it ended)."""

    def __init__(self, chunks: Iterator[bytes], release) -> None:
        self._chunks = iter(chunks)
        self._release = release
        self._released = False

    def __iter__(self) -> "_Releasing":
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._release()


def new_app(openapi_document: dict) -> bottle.Bottle:
    """A Bottle app whose every error page is a JSON ``{"error": ...}`` object,
    serving ``openapi_document`` at ``GET /openapi.json``."""
    app = bottle.Bottle()
    app.default_error_handler = _json_error_page
    app.add_hook("before_request", _refuse_undecodable_path)
    document = json.dumps(openapi_document, indent=2).encode()

    @app.get("/openapi.json")
    def openapi():
        return bottle.HTTPResponse(body=document, headers={"Content-Type": JSON})

    return app


def _refuse_undecodable_path() -> None:
    """404 for a path that is not UTF-8: Bottle would drop the bytes it cannot
    decode and route what is left ("/messages%ff" as "/messages")."""
    try:
        bottle.request.environ["bottle.raw_path"].encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise bottle.HTTPError(404) from None


def _json_error_page(error: bottle.HTTPError) -> bytes:
    if error.status_code >= 500:
        # One line, at a limited rate: a bug that every request hits must not
        # flood the log. The traceback, long, is for DEBUG.
        crash_log.error("%s %s failed: %r (traceback at DEBUG)",
                        bottle.request.method, bottle.request.path, error.exception)
        log.debug("the traceback of that failure:\n%s", error.traceback or "")
    bottle.response.content_type = JSON
    reason = _REASONS.get(error.status_code, error.body or error.status_line)
    if error.status_code == 405:
        reason = f"{reason}; allowed: {bottle.response.get_header('Allow', '')}"
    return json.dumps({"error": reason}).encode()
