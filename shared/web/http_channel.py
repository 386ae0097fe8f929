"""The HTTP connection class both roles' Waitress servers use: Waitress's own,
with one change to when its main loop watches a connection for writing.

Waitress's main loop asks every connection, on every turn, whether it wants
to write (``writable``): yes whenever output is pending. But a worker thread
writing a response appends it to that output and sends it itself, holding
the connection's output lock, and the send gives up the GIL. For as long as
the worker then waits to get the GIL back, the main loop sees output
pending, finds it cannot take the lock, and turns again at once: poll
answers immediately, every turn hands the GIL to another thread, and the
worker it waits for is further delayed. Under load this settles into a
state of its own, seen in the benchmark: 40 to 60 turns of the main loop
per request, a third of the throughput, for the rest of the run.

So, while a request is being served, the main loop leaves the writing to
the worker, which flushes its own output (Waitress's ``send_bytes`` is 1),
and watches the connection only when the worker cannot go on without it:
at or past the high watermark, where the worker waits for the main loop to
drain the output (the worker waits while the output is over the watermark
and is woken only once it is below: at exactly the watermark the main loop
must still drain it). Once the request is done, pending output is the main
loop's again, as in Waitress. A connection with a request in progress is
not readable either (Waitress reads no request ahead), so until the worker
is done, or stuck on a full socket, the main loop does not look at it.

One exception: pipelined requests, read from one packet. When a request
ends with output unsent and the next one is already being served, that
output is no longer its worker's: the next worker may not write for a long
time (a tailing read waits up to a minute). The finished request marks it,
and the main loop sends it as Waitress would until it is all out.

**The Waitress internals it relies on**, none of them documented API:

- ``waitress.channel.HTTPChannel``, subclassed, with its ``writable()`` and
  ``service()`` methods overridden and called through ``super()``;
- on a channel: ``requests`` (the requests read and not yet finished),
  ``total_outbufs_len``, ``will_close``, ``close_when_flushed``,
  ``adj.outbuf_high_watermark`` and ``server.pull_trigger()``;
- on a server: ``BaseWSGIServer.channel_class`` (the class it makes a
  connection of), and ``MultiSocketServer.map`` (its listening servers).

They were checked against the versions in CHECKED_WAITRESS_VERSIONS only.
On any other, ``require_checked_waitress`` refuses to start the node, with
one line that says so, rather than let an upgrade change the behaviour
subtly: check the list above against the new version, then add it.

Thread: Waitress's main loop calls ``writable``; a worker calls ``service``;
``require_checked_waitress`` and ``use_worker_flushed_channels`` run at start.
"""

from __future__ import annotations

from importlib.metadata import version

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer

#: The Waitress releases whose internals (listed above) this module was checked against.
CHECKED_WAITRESS_VERSIONS = frozenset({"3.0.2"})


class UncheckedWaitress(RuntimeError):
    """The installed Waitress is not one this module was checked against."""


def require_checked_waitress(installed: str | None = None) -> None:
    """Raise UncheckedWaitress unless ``installed`` (by default, the installed
    Waitress's version) is in CHECKED_WAITRESS_VERSIONS."""
    installed = version("waitress") if installed is None else installed
    if installed not in CHECKED_WAITRESS_VERSIONS:
        raise UncheckedWaitress(
            f"waitress {installed} is installed, but shared/web/http_channel.py relies on its "
            f"internals as of {', '.join(sorted(CHECKED_WAITRESS_VERSIONS))} only: check them "
            "(that module's docstring lists them), or install the version in requirements.txt"
        )


class WorkerFlushedChannel(HTTPChannel):
    #: Output of a finished request is pending while the next is served.
    #: Set by a worker, cleared by the main loop once the output is out.
    _finished_output_pending = False

    def writable(self) -> bool:
        if self._finished_output_pending:
            if self.total_outbufs_len:
                return super().writable()
            self._finished_output_pending = False
        if self.requests and not (self.will_close or self.close_when_flushed):
            return self.total_outbufs_len >= self.adj.outbuf_high_watermark
        return super().writable()

    def service(self) -> None:
        super().service()
        if self.requests and self.total_outbufs_len:
            self._finished_output_pending = True
            self.server.pull_trigger()


def use_worker_flushed_channels(server) -> None:
    """Make ``server``, as waitress.create_server returns it, use
    WorkerFlushedChannel: a host name with several addresses gives a
    MultiSocketServer, with one listening server per address. Raises
    UncheckedWaitress on a Waitress it was not checked against."""
    require_checked_waitress()
    listeners = server.map.values() if isinstance(server, MultiSocketServer) else [server]
    for listener in listeners:
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = WorkerFlushedChannel
