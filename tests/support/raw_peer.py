"""A DEALER on a node's replication port that speaks the frames by hand, as
anyone who can reach that port could (in plain mode): for tests of what a
node does with frames no real peer would send. Close it before the test's
Context is terminated.

Thread: the test's.
"""

from __future__ import annotations

import itertools
import time

import zmq

from shared.consensus.raft_log import Entry, digest_after
from shared.consensus.raft_messages import AppendEntries, Message
from shared.wire import frames
from shared.wire.frames import encode_entry

ENVELOPE = frames.Envelope("http://127.0.0.1:9", 64 << 20, "http://127.0.0.1:9")


class RawPeer:
    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self._sock = ctx.socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.connect(endpoint)

    def send(self, message: Message | bytes, envelope: frames.Envelope = ENVELOPE) -> None:
        self._sock.send(message if isinstance(message, bytes) else frames.encode(message, envelope))

    def send_parts(self, *parts: bytes) -> None:
        """A frame in several zmq parts, as no node sends one."""
        self._sock.send_multipart(list(parts))

    def receive(self, timeout: float = 10.0) -> tuple[Message, frames.Envelope]:
        """The next message to arrive, and what its frame said of its sender."""
        assert self._sock.poll(max(0.0, timeout) * 1000), f"no answer within {timeout}s"
        return frames.decode(self._sock.recv_multipart())

    def request(self, message: Message, envelope: frames.Envelope = ENVELOPE,
                timeout: float = 10.0) -> Message:
        """Send ``message``; its answer: the next that echoes its seq, or the next
        at all for a message without one. Those before it are passed over."""
        self.send(message, envelope)
        seq = getattr(message, "seq", None)
        deadline = time.monotonic() + timeout
        while True:
            answer, _ = self.receive(deadline - time.monotonic())
            if seq is None or getattr(answer, "seq", None) == seq:
                return answer

    def silent_for(self, seconds: float) -> bool:
        """Whether nothing at all arrives within ``seconds``."""
        return not self._sock.poll(seconds * 1000)

    def close(self) -> None:
        self._sock.close()


class HandMadePrimary:
    """A primary of one term, made by hand on a RawPeer: it keeps the log it
    sent, so that each AppendEntries carries the right prefix checksum."""

    def __init__(self, peer: RawPeer | None, name: str = "primary", term: int = 1,
                 cluster: str | None = None) -> None:
        self.peer, self.name, self.term, self.cluster = peer, name, term, cluster
        self.log: list[Entry] = []
        self._seqs = itertools.count(1)

    def append(self, prev_length: int, *messages: str, commit: int = 0) -> Message:
        """Send ``messages`` (one entry each) as the entries from ``prev_length``
        on, and wait for the answer."""
        request = self.append_entries(prev_length, *messages, commit=commit)
        answer = self.peer.request(request)
        if getattr(answer, "success", False) and prev_length <= len(self.log):
            self.log = self.log[:prev_length] + list(request.entries)
        return answer

    def append_entries(self, prev_length: int, *messages: str, commit: int = 0) -> AppendEntries:
        """The AppendEntries of ``messages`` (one entry each) from ``prev_length`` on."""
        entries = tuple(Entry(self.term, encode_entry(m), 1) for m in messages)
        digest = 0
        for entry in self.log[:prev_length]:
            digest = digest_after(digest, entry)
        prev_term = self.log[prev_length - 1].term if 0 < prev_length <= len(self.log) else 0
        return AppendEntries(self.name, self.term, next(self._seqs), prev_length, prev_term, digest,
                             entries, commit, 0, self.cluster)
