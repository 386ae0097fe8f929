"""A TCP byte relay between the primary and one secondary, for tests: it
keeps a copy of every byte it carries, so a test can look at the wire.

Unlike tests/support/relay.py, which relays zmq frames (and so sits above
any zmq security), this one relays the raw TCP stream: what it records is
exactly what an eavesdropper on the network would see.

The ``tcp-relay`` thread (shared.wire.io_thread) owns every socket: the listener
on 127.0.0.1 (a random port) and, per accepted connection, the pair of it
and its connection to the secondary. Other threads read ``carried``.
"""

from __future__ import annotations

import socket
import threading

import zmq

from shared.wire.io_thread import IoThread

CHUNK = 65536


class TcpRelay(IoThread):
    def __init__(self, target: str) -> None:
        """``target``: the secondary's ``tcp://HOST:PORT``."""
        super().__init__("tcp-relay")
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self._target = (host, int(port))
        self._listener: socket.socket | None = None
        self._poller: zmq.Poller | None = None
        #: fd -> (its socket, the socket it forwards to)
        self._links: dict[int, tuple[socket.socket, socket.socket]] = {}
        self._lock = threading.Lock()
        self._carried = bytearray()
        self.endpoint: str | None = None

    @property
    def carried(self) -> bytes:
        """Every byte relayed so far, both directions together."""
        with self._lock:
            return bytes(self._carried)

    # -- tcp-relay thread -----------------------------------------------------

    def _open(self, poller: zmq.Poller) -> None:
        self._poller = poller
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        poller.register(self._listener.fileno(), zmq.POLLIN)
        self.endpoint = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"

    def _pass(self, events: dict) -> None:
        if self._listener.fileno() in events:
            self._accept()
        for fd in [fd for fd in events if fd in self._links]:
            if fd in self._links:  # its partner may have closed it this pass
                self._forward(fd)

    def _accept(self) -> None:
        try:
            inbound, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            outbound = socket.create_connection(self._target, timeout=5)
        except OSError:
            inbound.close()  # the secondary is down: so is the relay's side
            return
        for one, other in ((inbound, outbound), (outbound, inbound)):
            one.setblocking(True)
            self._links[one.fileno()] = (one, other)
            self._poller.register(one.fileno(), zmq.POLLIN)

    def _forward(self, fd: int) -> None:
        source, sink = self._links[fd]
        try:
            data = source.recv(CHUNK)
            if data:
                with self._lock:
                    self._carried += data
                sink.sendall(data)
                return
        except OSError:
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
        if self._listener is not None:
            self._listener.close()
