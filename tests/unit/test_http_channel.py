"""WorkerFlushedChannel: Waitress's main loop leaves a response being written
to the worker writing it, and does not spin on it (shared.web.http_channel)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from importlib.metadata import version
from types import SimpleNamespace

import bottle
import pytest
import waitress
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.server import BaseWSGIServer

from shared.web.http_channel import (
    UncheckedWaitress, WorkerFlushedChannel, require_checked_waitress, use_worker_flushed_channels,
)
from shared.service import create_http_server

#: Below Waitress's 16 MiB high watermark, and far more than the two sockets
#: buffer between them, so that a worker's send leaves most of it unsent.
BIG_BYTES = 12 << 20


@pytest.fixture
def channel():
    ours, theirs = socket.socketpair()
    server = SimpleNamespace(add_task=lambda channel: None, pull_trigger=lambda: None, active_channels={})
    made = WorkerFlushedChannel(server, ours, ("127.0.0.1", 1), Adjustments(), map={})
    yield made
    made.close()
    theirs.close()


def test_output_pending_while_the_worker_writes_is_left_to_it(channel):
    channel.requests = [object()]  # a request in progress
    channel.total_outbufs_len = 57  # appended, its send under way on the worker
    assert not channel.writable()


def test_the_main_loop_drains_output_the_worker_waits_on(channel):
    channel.requests = [object()]
    channel.total_outbufs_len = channel.adj.outbuf_high_watermark + 1
    assert channel.writable()


def test_at_exactly_the_watermark_the_main_loop_still_drains(channel):
    # A worker waits while the output is over the watermark, and the main loop
    # wakes it only once the output is below: at exactly the watermark, a
    # main loop that stopped watching would leave the worker waiting for good.
    channel.requests = [object()]
    channel.total_outbufs_len = channel.adj.outbuf_high_watermark
    assert channel.writable()


def test_once_the_request_is_done_pending_output_is_the_main_loops(channel):
    channel.total_outbufs_len = 57
    assert channel.writable()
    channel.total_outbufs_len = 0
    assert not channel.writable()


def test_a_connection_to_close_is_always_watched(channel):
    channel.requests = [object()]
    channel.will_close = True
    assert channel.writable()


@pytest.fixture
def serving():
    """A server made as the nodes make theirs, with GET /big and a GET /slow
    that waits to be released, run on a thread of its own."""
    slow_started, release = threading.Event(), threading.Event()
    app = bottle.Bottle()
    app.route("/big", callback=lambda: b"x" * BIG_BYTES)

    @app.route("/slow")
    def slow():
        slow_started.set()
        release.wait(30)
        return b"done"

    server = create_http_server(app, "127.0.0.1", 0, threads=4, connection_limit=10)
    thread = threading.Thread(target=server.run, name="waitress-main", daemon=True)
    thread.start()
    yield int(server.effective_port), slow_started
    release.set()
    server.task_dispatcher.shutdown()
    wasyncore.close_all(server._map)  # the loop ends once its map is empty
    thread.join(10)


def test_a_pipelined_requests_answer_is_sent_while_the_next_one_waits(serving):
    port, slow_started = serving
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        client.settimeout(10)
        client.connect(("127.0.0.1", port))
        # One packet, two requests: Waitress reads both and serves them in turn.
        client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert slow_started.wait(10), "the second request was never served"
        # /big's worker has moved on to /slow, which waits; most of /big is
        # still in the channel's buffer, and must reach the client now.
        received = b""
        while b"\r\n\r\n" not in received:
            received += client.recv(1 << 16)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % BIG_BYTES in head
        while len(body) < BIG_BYTES:
            chunk = client.recv(1 << 20)
            assert chunk, "the connection closed before /big's answer was whole"
            body += chunk
        assert len(body) == BIG_BYTES


def test_every_listener_of_a_multi_address_server_uses_the_channel():
    server = waitress.create_server(bottle.Bottle(), listen="127.0.0.1:0 127.0.0.1:0")
    listeners = [v for v in server.map.values() if isinstance(v, BaseWSGIServer)]
    try:
        assert len(listeners) == 2
        use_worker_flushed_channels(server)
        assert all(listener.channel_class is WorkerFlushedChannel for listener in listeners)
    finally:
        server.task_dispatcher.shutdown()
        wasyncore.close_all(server.map)


def test_a_waitress_it_was_not_checked_against_is_refused_by_name():
    require_checked_waitress()  # the pinned one passes
    with pytest.raises(UncheckedWaitress, match=r"^waitress 9\.9\.9 is installed, but shared/web/http_channel\.py"):
        require_checked_waitress("9.9.9")


def test_a_node_on_an_unchecked_waitress_exits_with_one_line_before_it_starts():
    pretend = ("import sys, shared.web.http_channel as channel; "
               "channel.CHECKED_WAITRESS_VERSIONS = frozenset({'0.0'}); "
               "from primary.main import main; sys.exit(main())")
    done = subprocess.run([sys.executable, "-c", pretend], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HTTP_PORT": "0"})
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"primary: cannot start: waitress {version('waitress')} is installed, but "
        "shared/web/http_channel.py relies on its internals as of 0.0 only: check them "
        "(that module's docstring lists them), or install the version in requirements.txt"
    ]
