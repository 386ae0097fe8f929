"""A faulty network between the primary and one secondary, for tests.

The relay binds a ROUTER on 127.0.0.1 (a random port) for the primary to
connect to, and connects a DEALER to the secondary. Frames pass both ways,
each subject to the faults currently set: dropped, duplicated, delayed by a
random amount (which also reorders them), or held while paused.

The ``relay-io`` thread (shared.wire.io_thread) owns both sockets. Other threads change the faults
through ``set_faults``, ``pause`` and ``resume``; the settings are plain
attributes read once per frame, under a lock.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from dataclasses import dataclass, replace

import zmq

from shared.consensus.raft_messages import AppendEntries
from shared.wire import frames
from shared.wire.io_thread import IoThread, receive_batch

TO_SECONDARY, TO_PRIMARY = "to-secondary", "to-primary"


@dataclass(frozen=True)
class Faults:
    drop: float = 0.0  # probability a frame is lost
    duplicate: float = 0.0  # probability a frame is delivered twice
    delay: tuple[float, float] = (0.0, 0.0)  # seconds, uniform per frame: reorders
    paused: bool = False  # hold every frame until resumed


class Relay(IoThread):
    def __init__(self, ctx: zmq.Context, secondary_endpoint: str) -> None:
        super().__init__("relay-io")
        self._ctx = ctx
        self._secondary_endpoint = secondary_endpoint
        self._lock = threading.Lock()
        self._faults = Faults()
        self._queue: list[tuple[float, int, str, list[bytes]]] = []
        self._held: list[tuple[str, list[bytes]]] = []
        self._order = itertools.count()
        self._primary_identity: bytes | None = None
        self._front: zmq.Socket | None = None
        self._back: zmq.Socket | None = None
        self.endpoint: str | None = None
        self.forwarded = {TO_SECONDARY: 0, TO_PRIMARY: 0}
        #: Messages in the AppendEntries frames the primary sent (resends
        #: included), whatever the faults then did to them. An unsynchronised reading.
        self.appended_entries = 0

    def start(self) -> "Relay":
        super().start()
        return self

    def set_faults(self, **changes) -> None:
        with self._lock:
            self._faults = replace(self._faults, **changes)
        self.wake()

    def pause(self) -> None:
        self.set_faults(paused=True)

    def resume(self) -> None:
        self.set_faults(paused=False)

    # -- relay-io thread ------------------------------------------------------

    def _open(self, poller: zmq.Poller) -> None:
        self._front = self._ctx.socket(zmq.ROUTER)
        self._back = self._ctx.socket(zmq.DEALER)
        for sock in (self._front, self._back):
            sock.linger = 0
            poller.register(sock, zmq.POLLIN)
        port = self._front.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._back.connect(self._secondary_endpoint)

    def _pass(self, events: dict) -> None:
        if self._front in events:
            receive_batch(self._front, self._from_primary)
        if self._back in events:
            receive_batch(self._back, lambda frames: self._admit(TO_PRIMARY, frames))
        self._deliver_due()

    def _next_deadline(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def _close(self) -> None:
        for sock in (self._front, self._back):
            if sock is not None:
                sock.close()

    def _from_primary(self, parts: list[bytes]) -> None:
        self._primary_identity, *payload = parts
        if payload and payload[0].startswith(b"REPLICATE "):
            try:
                message, _ = frames.decode(payload)
            except frames.ProtocolError:
                pass  # passed on as it is: the secondary judges it
            else:
                if isinstance(message, AppendEntries):
                    self.appended_entries += sum(entry.count for entry in message.entries)
        self._admit(TO_SECONDARY, payload)

    def _admit(self, direction: str, frames: list[bytes]) -> None:
        with self._lock:
            faults = self._faults
        if faults.paused:
            self._held.append((direction, frames))
            return
        if random.random() < faults.drop:
            return
        copies = 2 if random.random() < faults.duplicate else 1
        for _ in range(copies):
            due = time.monotonic() + random.uniform(*faults.delay)
            heapq.heappush(self._queue, (due, next(self._order), direction, frames))

    def _deliver_due(self) -> None:
        with self._lock:
            paused = self._faults.paused
        if not paused and self._held:
            held, self._held = self._held, []
            for direction, frames in held:
                self._admit(direction, frames)
        now = time.monotonic()
        while self._queue and self._queue[0][0] <= now:
            _, _, direction, frames = heapq.heappop(self._queue)
            try:
                if direction == TO_SECONDARY:
                    self._back.send_multipart(frames, zmq.NOBLOCK)
                elif self._primary_identity is not None:
                    self._front.send_multipart([self._primary_identity, *frames], zmq.NOBLOCK)
                self.forwarded[direction] += 1
            except zmq.Again:
                pass  # a full or absent peer: the frame is lost, as on a real network
