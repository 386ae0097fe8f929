"""Forwarding an append from a secondary to the primary, over keep-alive HTTP.

A secondary that takes ``POST /messages`` sends it on to the primary's
ADVERTISED_URL with the client's body and the headers that matter
(Content-Type, Authorization, Idempotency-Key, byte for byte as they came:
latin-1 text, as WSGI hands them over), marked with FORWARDED_BY
so that the primary never forwards it again, and hands the answer back
as it came. What the client is told when the forward fails depends on
whether the request may have reached the primary:

- it could not connect: nothing was sent, so nothing was appended
  (``NotSent``: the caller answers 503 "no primary");
- the connection failed or timed out once the request was on its way: the
  append's fate is unknown (``Unknown``: 502, or 504 for a timeout).

Each Waitress thread keeps one connection per primary URL; one idle for
longer than IDLE_REUSE_S is not reused, since Waitress may be closing it
(HTTP_IDLE_TIMEOUT), and a request lost on a connection the server closed
could not be told from one that reached it. Connections have TCP
keepalive, so a primary whose machine vanished (no RST) is noticed.

A forward waits for its answer in slices of POLL_S: between them it asks
whether the primary it went to is still this node's primary. When a new
term or another primary comes (a failover), the forward gives up within
a second, its outcome unknown (502), rather than holding a worker thread
for the append's whole timeout.

Thread: any Waitress worker; each uses only its own connections.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

#: The header that marks a forwarded append, naming the node that forwarded it.
FORWARDED_BY = "Replog-Forwarded-By"
#: The client's headers that travel with a forwarded append.
PASSED_HEADERS = ("Content-Type", "Authorization", "Idempotency-Key")
#: The primary's headers that travel back.
RETURNED_HEADERS = ("Content-Type", "Retry-After", "Served-By")
#: Seconds a kept connection may have been idle and still be reused.
IDLE_REUSE_S = 5.0
#: Seconds to connect: the primary is near; a primary that does not accept
#: in this time is as good as gone.
CONNECT_TIMEOUT_S = 2.0
#: Seconds a forward waits beyond the append's own timeout, for the answer
#: to travel; an append without a timeout waits at most UNBOUNDED_WAIT_S.
ANSWER_MARGIN_S = 5.0
UNBOUNDED_WAIT_S = 300.0
#: Seconds between two looks at whether the primary is still the primary.
POLL_S = 0.25
#: TCP keepalive: idle seconds before the first probe, between probes, and probes.
KEEPALIVE = (5, 2, 3)


class NotSent(Exception):
    """The primary could not be reached: the request never left."""


class Unknown(Exception):
    """The request may have reached the primary, but no answer came back."""

    def __init__(self, why: str, timed_out: bool) -> None:
        super().__init__(why)
        self.timed_out = timed_out


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


class Forwarder:
    def __init__(self, node_name: str) -> None:
        self._node_name = node_name
        self._local = threading.local()

    def forward(self, url: str, body: bytes, headers: dict[str, str], timeout: float | None,
                still_primary: Callable[[], bool] = lambda: True) -> Answer:
        """POST ``body`` to ``url``/messages. Raises NotSent or Unknown; Unknown
        too once ``still_primary`` says the primary changed meanwhile."""
        connection = self._connection(url)
        wait = (timeout if timeout is not None else UNBOUNDED_WAIT_S) + ANSWER_MARGIN_S
        sent_headers = {name: value for name, value in headers.items() if name in PASSED_HEADERS}
        sent_headers[FORWARDED_BY] = self._node_name
        try:
            connection.sock.settimeout(wait)
            connection.request("POST", "/messages", body, sent_headers)
            _await_answer(connection.sock, time.monotonic() + wait, still_primary)
            response = connection.getresponse()
            answer = Answer(response.status, response.read(),
                            {name: response.getheader(name) for name in RETURNED_HEADERS
                             if response.getheader(name) is not None})
        except (OSError, http.client.HTTPException) as exc:
            self._drop(url)
            timed_out = isinstance(exc, socket.timeout)
            raise Unknown(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                          timed_out) from None
        except BaseException:
            # A request cut off half-written must not be followed by the next
            # one on the same connection: that one would fail as unknown, sent or not.
            self._drop(url)
            raise
        self._local.connections[url] = (connection, time.monotonic())
        if response.will_close:
            self._drop(url)
        return answer

    def _connection(self, url: str) -> http.client.HTTPConnection:
        connections = self._connections()
        kept = connections.get(url)
        if kept is not None and time.monotonic() - kept[1] < IDLE_REUSE_S:
            return kept[0]
        self._drop(url)
        parts = urlsplit(url)
        make = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = make(parts.hostname, parts.port, timeout=CONNECT_TIMEOUT_S)
        try:
            connection.connect()
        except OSError as exc:
            raise NotSent(f"cannot connect to {url}: {exc.strerror or exc}") from None
        _keep_alive(connection.sock)
        connections[url] = (connection, time.monotonic())
        return connection

    def _connections(self) -> dict[str, tuple[http.client.HTTPConnection, float]]:
        if not hasattr(self._local, "connections"):
            self._local.connections = {}
        return self._local.connections

    def _drop(self, url: str) -> None:
        kept = self._connections().pop(url, None)
        if kept is not None:
            kept[0].close()


class _Replaced(OSError):
    """The primary a forward went to is no longer this node's primary."""


def _await_answer(sock: socket.socket, deadline: float, still_primary: Callable[[], bool]) -> None:
    """Until the answer starts to arrive; raises socket.timeout at ``deadline``,
    and _Replaced (an OSError) once the primary has changed."""
    poller = select.poll()  # not select(): a descriptor may be above 1024
    poller.register(sock, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no answer in time")
        if poller.poll(min(POLL_S, left) * 1000):
            return
        if not still_primary():
            raise _Replaced("the primary changed while the append was forwarded")


def _keep_alive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = KEEPALIVE
    for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, option):  # Linux; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
