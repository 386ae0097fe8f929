"""shared.node.forwarding against a stand-in primary on 127.0.0.1: the client's
headers travel byte for byte, and a forward that fails half-way leaves no
half-written connection behind for the next one."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.node.forwarding import FORWARDED_BY, Forwarder


class _Primary(BaseHTTPRequestHandler):
    """Answers every POST 201 on a kept-alive connection, and records its headers' bytes."""

    protocol_version = "HTTP/1.1"
    received: list[dict[str, bytes]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        # http.server reads header bytes as latin-1: encoding them back gives the bytes sent.
        self.received.append({name: value.encode("latin-1") for name, value in self.headers.items()})
        body = b'{"id": 0}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def primary_url():
    _Primary.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Primary)
    thread = threading.Thread(target=server.serve_forever, name="stand-in-primary", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_client_s_headers_reach_the_primary_byte_for_byte(primary_url):
    content_type = "application/json; charset=é".encode()  # UTF-8 beyond ASCII
    authorization = b"Bearer \xff" + "€".encode()  # a byte that is not UTF-8, and one beyond latin-1
    # As WSGI hands them over: each byte a latin-1 character (shared.web.http.raw_header).
    answer = Forwarder("n2").forward(primary_url, b'{"message": "m"}',
                                     {"Content-Type": content_type.decode("latin-1"),
                                      "Authorization": authorization.decode("latin-1")}, 5.0)
    assert answer.status == 201
    [received] = _Primary.received
    assert (received["Content-Type"], received["Authorization"]) == (content_type, authorization)
    assert received[FORWARDED_BY] == b"n2"


def test_a_forward_that_fails_half_way_does_not_spoil_the_next_one_on_its_thread(primary_url):
    forwarder = Forwarder("n2")
    assert forwarder.forward(primary_url, b"{}", {}, 5.0).status == 201  # the connection is now kept
    with pytest.raises(ValueError):  # http.client refuses the header once the request has begun
        forwarder.forward(primary_url, b"{}", {"Idempotency-Key": "a\nb"}, 5.0)
    assert forwarder.forward(primary_url, b"{}", {}, 5.0).status == 201
    assert len(_Primary.received) == 2
