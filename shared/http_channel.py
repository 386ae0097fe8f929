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
past the high watermark, where the worker waits for the main loop to drain
the output. Once the request is done, pending output is the main loop's
again, as in Waitress. A connection with a request in progress is not
readable either (Waitress reads no request ahead), so until the worker is
done, or stuck on a full socket, the main loop does not look at it.

Thread: Waitress's main loop calls ``writable``; everything else is Waitress's.
"""

from __future__ import annotations

from waitress.channel import HTTPChannel


class WorkerFlushedChannel(HTTPChannel):
    def writable(self) -> bool:
        if self.requests and not (self.will_close or self.close_when_flushed):
            return self.total_outbufs_len > self.adj.outbuf_high_watermark
        return super().writable()
