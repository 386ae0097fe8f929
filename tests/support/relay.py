"""A faulty network between the primary and one secondary, for tests.

The relay binds a ROUTER on 127.0.0.1 (a random port) for the primary to
connect to, and connects a DEALER to the secondary. Frames pass both ways,
each subject to the faults currently set: dropped, duplicated, delayed by a
random amount (which also reorders them), or held while paused.

The ``relay-io`` thread owns both sockets. Other threads change the faults
through ``set_faults``, ``pause`` and ``resume``; the settings are plain
attributes read once per frame, under a lock.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import socket
import threading
import time
from dataclasses import dataclass, replace

import zmq

TO_SECONDARY, TO_PRIMARY = "to-secondary", "to-primary"


@dataclass(frozen=True)
class Faults:
    drop: float = 0.0  # probability a frame is lost
    duplicate: float = 0.0  # probability a frame is delivered twice
    delay: tuple[float, float] = (0.0, 0.0)  # seconds, uniform per frame: reorders
    paused: bool = False  # hold every frame until resumed


class Relay:
    def __init__(self, ctx: zmq.Context, secondary_endpoint: str) -> None:
        self._ctx = ctx
        self._secondary_endpoint = secondary_endpoint
        self._lock = threading.Lock()
        self._faults = Faults()
        self._queue: list[tuple[float, int, str, list[bytes]]] = []
        self._held: list[tuple[str, list[bytes]]] = []
        self._order = itertools.count()
        self._primary_identity: bytes | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self.endpoint: str | None = None
        self.forwarded = {TO_SECONDARY: 0, TO_PRIMARY: 0}
        self._thread = threading.Thread(target=self._run, name="relay-io", daemon=True)

    def start(self) -> "Relay":
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake_w.send(b"x")
        self._thread.join(5)
        self._wake_r.close()
        self._wake_w.close()

    def set_faults(self, **changes) -> None:
        with self._lock:
            self._faults = replace(self._faults, **changes)
        self._wake_w.send(b"x")

    def pause(self) -> None:
        self.set_faults(paused=True)

    def resume(self) -> None:
        self.set_faults(paused=False)

    # -- relay-io thread ------------------------------------------------------

    def _run(self) -> None:
        front = self._ctx.socket(zmq.ROUTER)
        back = self._ctx.socket(zmq.DEALER)
        for sock in (front, back):
            sock.linger = 0
        port = front.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        back.connect(self._secondary_endpoint)
        self._ready.set()
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        poller.register(back, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                events = dict(poller.poll(self._ms_until_due()))
                if self._wake_r.fileno() in events:
                    self._wake_r.recv(4096)
                if front in events:
                    self._primary_identity, *frames = front.recv_multipart()
                    self._admit(TO_SECONDARY, frames)
                if back in events:
                    self._admit(TO_PRIMARY, back.recv_multipart())
                self._deliver_due(front, back)
        finally:
            front.close()
            back.close()

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

    def _ms_until_due(self) -> int | None:
        if not self._queue:
            return None
        return max(0, math.ceil((self._queue[0][0] - time.monotonic()) * 1000))

    def _deliver_due(self, front: zmq.Socket, back: zmq.Socket) -> None:
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
                    back.send_multipart(frames, zmq.NOBLOCK)
                elif self._primary_identity is not None:
                    front.send_multipart([self._primary_identity, *frames], zmq.NOBLOCK)
                self.forwarded[direction] += 1
            except zmq.Again:
                pass  # a full or absent peer: the frame is lost, as on a real network
