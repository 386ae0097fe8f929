"""The skeleton of a thread that owns zmq sockets and runs one poll loop.

The replicator, the receiver and the tests' relay are each one such thread.
This module owns what they have in common:

- the thread itself, named after its role;
- the stop event and an idempotent ``stop`` that joins the thread;
- the wake-up socketpair (Waitress's trigger idea): another thread that
  queued work for the loop calls ``wake``, and one byte makes ``poll``
  return. Wake-ups coalesce: while one byte is unread, no other is sent;
- the poll loop, whose timeout runs to the subclass's next timer, so the
  thread never sleeps;
- the start-up hand-shake: ``start`` returns once the sockets are open,
  and re-raises what opening them raised;
- the crash log: a bug that escapes a pass is logged once, as CRITICAL,
  and ends the thread; ``running`` then turns False, and ``on_crash``, if
  set, is called (the process uses it to stop: see shared.service).

A subclass implements, all run on the I/O thread:

- ``_open(poller)``: create its sockets and register them;
- ``_pass(events)``: one turn of the loop, given the poll events;
- ``_next_deadline()``: the monotonic time of its next timer, or None;
- ``_quiet_until()``, optional: a time until which its sockets may wait;
- ``_close()``: close its sockets and release whoever waits on it.

Thread: ``start``, ``stop``, ``wake``, ``running`` and ``wake_pending`` from
any thread; everything else on the I/O thread only.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from typing import Callable

import zmq

#: The name its lines carried before shared/ was grouped by concern: log
#: filters and alerts key on it, so it stays.
log = logging.getLogger("shared.io_thread")

#: Frames read from one socket per pass, so one busy peer cannot starve the rest.
RECEIVE_BATCH = 256


class IoThread:
    def __init__(self, name: str) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_pending = False
        self._stopping = threading.Event()
        self._stop_called = False
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        #: Called on the I/O thread after a crash, if set before ``start``.
        self.on_crash: Callable[[], None] | None = None

    # -- any thread -----------------------------------------------------------

    @property
    def running(self) -> bool:
        """True from ``start`` until ``stop``, or until the thread dies of a bug."""
        return self._thread.is_alive() and not self._stopping.is_set()

    @property
    def wake_pending(self) -> bool:
        """A ``wake`` the loop has not taken yet. An unsynchronised reading, for tests."""
        return self._wake_pending

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called or the loop ended."""
        return self._stopping.is_set()

    def start(self, timeout: float = 10.0) -> None:
        """Start the thread; return once ``_open`` is done, raising what it raised."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self._thread.name} did not start in time")
        if self._startup_error is not None:
            raise self._startup_error

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and wait for the thread; a second call does nothing."""
        if self._stop_called:
            return
        self._stop_called = True
        self._stopping.set()
        self._send_wake_byte()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        self._wake_r.close()
        self._wake_w.close()

    def wake(self) -> None:
        """Make the loop run a pass soon. Cheap: at most one byte per pass.

        Unlocked on purpose: the loop clears the flag before its pass reads
        the queues and state that callers fill, so whatever a caller put
        there before finding the flag set is seen by that pass."""
        if not self._wake_pending:
            self._send_wake_byte()

    def _send_wake_byte(self) -> None:
        self._wake_pending = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # stopped: the socketpair is closed and nobody is listening

    # -- the I/O thread ---------------------------------------------------------

    def _main(self) -> None:
        poller = zmq.Poller()
        try:
            self._open(poller)
        except BaseException as exc:  # handed to start(), which raises it
            self._startup_error = exc
            self._stopping.set()
            self._ready.set()
            return
        wake_fd = self._wake_r.fileno()
        poller.register(wake_fd, zmq.POLLIN)
        wake_only = zmq.Poller()
        wake_only.register(wake_fd, zmq.POLLIN)
        self._ready.set()
        woken = False  # a wake the quiet drained, whose pass is still to run
        try:
            while not self._stopping.is_set():
                quiet = self._quiet_until()
                if quiet is not None and wake_only.poll(_ms_until(quiet)):
                    self._drain_wake()
                    woken = True
                    continue  # what woke it may end the quiet, or not: ask again
                # After a quiet, or a wake in one: whatever came meanwhile, at once.
                at_once = quiet is not None or woken
                events = dict(poller.poll(0 if at_once else _ms_until(self._next_deadline())))
                woken = False
                if wake_fd in events:
                    self._drain_wake()
                self._pass(events)
        except Exception:
            # What follows is the owner's to say (on_crash): a node stops, while
            # curve-watch's crash only ends the logging of refused handshakes.
            log.critical("the %s thread crashed", self._thread.name, exc_info=True)
            if self.on_crash is not None:
                self.on_crash()
        finally:
            self._stopping.set()
            self._close()

    def _drain_wake(self) -> None:
        # One read: wake-ups coalesce, so at most a byte or two is waiting
        # (a wake and the stop), and a read that ends in EAGAIN costs a
        # system call and an exception for nothing.
        self._wake_r.recv(4096)
        self._wake_pending = False

    # -- for subclasses -----------------------------------------------------------

    def _only_woken(self, events: dict) -> bool:
        """Whether nothing but ``wake`` (or the poll's timeout) began this pass."""
        wake_fd = self._wake_r.fileno()
        return all(key == wake_fd for key in events)

    def _open(self, poller: zmq.Poller) -> None:
        raise NotImplementedError

    def _pass(self, events: dict) -> None:
        raise NotImplementedError

    def _next_deadline(self) -> float | None:
        return None

    def _quiet_until(self) -> float | None:
        """Until when the loop may watch only ``wake``, leaving what arrives on
        its sockets for the pass after; None: it watches everything. A wake
        meanwhile runs no pass while the quiet lasts: the loop asks again, and
        runs the pass at once when the answer is None (so whatever calls
        ``wake`` with work that cannot wait must also end the quiet)."""
        return None

    def _close(self) -> None:
        raise NotImplementedError


def receive_batch(sock: zmq.Socket, handle: Callable[[list], None], copy: bool = True) -> None:
    """Hand ``handle`` up to RECEIVE_BATCH multipart messages waiting on ``sock``:
    lists of bytes, or with ``copy=False`` of zmq.Frame (which carry metadata).

    It reads only while ``zmq.EVENTS`` shows a message waiting, so that no
    receive ends in EAGAIN: pyzmq gives the GIL up around every receive, and
    a failed one would also raise an exception, both for nothing."""
    for _ in range(RECEIVE_BATCH):
        if not sock.get(zmq.EVENTS) & zmq.POLLIN:
            return
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=copy)
        except zmq.Again:  # not expected after POLLIN; never worth the thread
            return
        handle(frames)


def _ms_until(deadline: float | None) -> int | None:
    if deadline is None:
        return None
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))
