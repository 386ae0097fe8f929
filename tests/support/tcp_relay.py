"""A TCP byte relay for tests: between the primary and one secondary, or,
in a failover cluster, from one node to one peer, so that a test can look
at the wire or cut the link.

Unlike tests/support/relay.py, which relays zmq frames (and so sits above
any zmq security), this one relays the raw TCP stream: what it records is
exactly what an eavesdropper on the network would see.

- ``carried``: every byte relayed so far (unless made with ``record=False``,
  as a long-running cluster's relays are, so that they hold no copy).
- ``set_target``: the address it relays to may be given after it starts,
  since a node bound to port 0 tells its port only once it runs. Until
  then, every connection it accepts is closed at once.
- ``block`` / ``unblock``: a cut link. ``block`` closes every connection it
  relays and, until ``unblock``, closes each new one as soon as it is
  accepted; both return once the relay's thread has done it.

The relay's thread (shared.wire.io_thread) owns every socket: the listener
on 127.0.0.1 (a random port) and, per accepted connection, the pair of it
and its connection to the target. Other threads hand it commands through a
queue and ``wake``; they read only ``carried`` and the counters.
"""

from __future__ import annotations

import queue
import select
import socket
import threading
import time

import zmq

from shared.wire.io_thread import IoThread

CHUNK = 65536
#: How long a relayed send may stall (a peer that reads nothing) before the
#: link is dropped, so that a command is never held up for longer.
SEND_TIMEOUT_S = 5.0
#: How long ``set_target`` / ``block`` / ``unblock`` wait for the thread.
COMMAND_TIMEOUT_S = 10.0


def _address(target: str) -> tuple[str, int]:
    host, port = target.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Send all of ``data`` on a non-blocking socket, within SEND_TIMEOUT_S."""
    view = memoryview(data)
    deadline = time.monotonic() + SEND_TIMEOUT_S
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the relayed peer reads nothing") from None
            select.select([], [sock], [], remaining)


class TcpRelay(IoThread):
    def __init__(self, target: str | None = None, name: str = "tcp-relay", record: bool = True) -> None:
        """``target``: the ``tcp://HOST:PORT`` to relay to, now or later
        (``set_target``); ``name``: the thread's; ``record``: keep a copy of
        every byte in ``carried``."""
        super().__init__(name)
        self._target = _address(target) if target is not None else None
        self._record = record
        self._blocked = False
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._listener: socket.socket | None = None
        self._poller: zmq.Poller | None = None
        #: fd -> (its socket, the socket it forwards to)
        self._links: dict[int, tuple[socket.socket, socket.socket]] = {}
        self._lock = threading.Lock()
        self._carried = bytearray()
        self._accepted = 0
        self._refused = 0
        self.endpoint: str | None = None

    # -- any thread -----------------------------------------------------------

    @property
    def carried(self) -> bytes:
        """Every byte relayed so far, both directions together."""
        with self._lock:
            return bytes(self._carried)

    @property
    def accepted(self) -> int:
        """Connections relayed to the target so far."""
        with self._lock:
            return self._accepted

    @property
    def refused(self) -> int:
        """Connections closed at once: no target yet, blocked, or the target down."""
        with self._lock:
            return self._refused

    def set_target(self, target: str) -> None:
        """Relay new connections to ``target`` (``tcp://HOST:PORT``) from now on."""
        self._command("target", _address(target))

    def block(self) -> None:
        """Close every relayed connection, and refuse new ones until ``unblock``."""
        self._command("block", True)

    def unblock(self) -> None:
        self._command("block", False)

    def _command(self, kind: str, value) -> None:
        done = threading.Event()
        self._commands.put((kind, value, done))
        self.wake()
        if not self._thread.is_alive():
            return  # not started yet: its first pass applies it
        if not done.wait(COMMAND_TIMEOUT_S):
            raise AssertionError(f"{self._thread.name} did not apply {kind}={value!r} in time")

    # -- the relay's thread -----------------------------------------------------

    def _open(self, poller: zmq.Poller) -> None:
        self._poller = poller
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        poller.register(self._listener.fileno(), zmq.POLLIN)
        self.endpoint = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"

    def _pass(self, events: dict) -> None:
        # The sockets that are readable, taken before anything is closed or
        # accepted in this pass: a new socket may get a closed one's fd.
        readable = [(fd, self._links[fd][0]) for fd in events if fd in self._links]
        self._apply_commands()
        if self._listener.fileno() in events:
            self._accept()
        for fd, sock in readable:
            if self._links.get(fd, (None,))[0] is sock:  # not closed this pass
                self._forward(fd)

    def _apply_commands(self) -> None:
        while True:
            try:
                kind, value, done = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "target":
                self._target = value
            elif kind == "block":
                self._blocked = value
                if value:
                    for one, other in list(self._links.values()):
                        if one.fileno() in self._links:
                            self._drop(one, other)
            done.set()

    def _accept(self) -> None:
        try:
            inbound, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self._blocked or self._target is None:
            self._refuse(inbound)
            return
        try:
            outbound = socket.create_connection(self._target, timeout=5)
        except OSError:
            self._refuse(inbound)  # the target is down: so is the relay's side
            return
        with self._lock:
            self._accepted += 1
        for one, other in ((inbound, outbound), (outbound, inbound)):
            one.setblocking(False)
            self._links[one.fileno()] = (one, other)
            self._poller.register(one.fileno(), zmq.POLLIN)

    def _refuse(self, sock: socket.socket) -> None:
        with self._lock:
            self._refused += 1
        sock.close()

    def _forward(self, fd: int) -> None:
        source, sink = self._links[fd]
        try:
            data = source.recv(CHUNK)
        except BlockingIOError:  # a spurious wake-up
            return
        except OSError:
            data = b""
        try:
            if data:
                if self._record:
                    with self._lock:
                        self._carried += data
                _send_all(sink, data)
                return
        except OSError:  # TimeoutError included: a sink that stalls loses its link
            pass
        self._drop(source, sink)

    def _drop(self, *pair: socket.socket) -> None:
        for sock in pair:
            self._poller.unregister(sock.fileno())
            del self._links[sock.fileno()]
            sock.close()

    def _close(self) -> None:
        for sock, _ in self._links.values():
            sock.close()
        self._links.clear()
        if self._listener is not None:
            self._listener.close()
        while True:  # release anyone still waiting on a command
            try:
                self._commands.get_nowait()[2].set()
            except queue.Empty:
                return
