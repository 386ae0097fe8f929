"""A small HTTP client for tests, on http.client: one connection per call."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes
    elapsed: float

    @property
    def json(self):
        return json.loads(self.body)


def request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 30.0,
) -> Response:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, dict(resp.getheaders()), data, time.monotonic() - started)
    finally:
        conn.close()


def post_message(base: str, message: str, http_timeout: float = 30.0,
                 headers: dict | None = None, **fields) -> Response:
    """POST /messages with ``message`` and any of w / timeout as keyword fields."""
    body = json.dumps({"message": message, **fields}).encode()
    return request(
        "POST", f"{base}/messages", body,
        {"Content-Type": "application/json", **(headers or {})}, http_timeout,
    )


def post_batch(base: str, messages: list[str], http_timeout: float = 30.0,
               headers: dict | None = None, **fields) -> Response:
    """POST /messages with the batch ``messages`` and any of w / timeout as keyword fields."""
    body = json.dumps({"messages": messages, **fields}).encode()
    return request("POST", f"{base}/messages", body,
                   {"Content-Type": "application/json", **(headers or {})}, http_timeout)


def get_messages(base: str) -> list[str]:
    resp = request("GET", f"{base}/messages", timeout=10)
    assert resp.status == 200, resp.body
    return resp.json["messages"]


def get_health(base: str) -> dict:
    resp = request("GET", f"{base}/health", timeout=10)
    assert resp.status == 200, resp.body
    return resp.json
