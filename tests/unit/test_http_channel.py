"""WorkerFlushedChannel: Waitress's main loop leaves a response being written
to the worker writing it, and does not spin on it (shared.http_channel)."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
from waitress.adjustments import Adjustments

from shared.http_channel import WorkerFlushedChannel


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


def test_once_the_request_is_done_pending_output_is_the_main_loops(channel):
    channel.total_outbufs_len = 57
    assert channel.writable()
    channel.total_outbufs_len = 0
    assert not channel.writable()


def test_a_connection_to_close_is_always_watched(channel):
    channel.requests = [object()]
    channel.will_close = True
    assert channel.writable()
