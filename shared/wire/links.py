"""A node's links: one DEALER per peer it dials, its monitor, and reopening a lost one.

libzmq ends a connection whose peer sent a frame over the socket's
MAXMSGSIZE (or a frame it cannot parse, or a handshake of another
mechanism) as a protocol error, and a connecting socket then never dials
again: its monitor reports DISCONNECTED and no CONNECT_RETRIED, and with
IMMEDIATE every send fails with EAGAIN from then on. So each DEALER has a
socket monitor, a PAIR read here whenever it is readable. A link whose
DISCONNECTED stays without a reconnect attempt is lost; the replicator calls
``reopen_lost`` at each heartbeat, which closes a link lost for at least a
heartbeat interval and opens a new DEALER to the same endpoint. What the
node knows of the peer is kept (shared.consensus.raft_progress): what was
in flight is resent when its retransmission timeout comes, on the new DEALER.

Each DEALER queues at most ``send_queue`` frames to send (SNDHWM): flow
control keeps a primary's frames in flight to one peer below that; and at
most ``receive_queue`` frames received (RCVHWM): a peer that floods this
node is slowed down by TCP's back-pressure, and costs it no more memory.

A link lost after a successful handshake was most likely sent a frame over
this node's limit: one WARNING names both ends' limits and the cure. One
lost after a failed handshake was already explained by the channel, to
which the monitor hands every handshake event (libzmq allows one monitor
per socket, so the channel does not attach its own: shared.wire.curve).

Thread: the I/O thread that owns the links (``node-io``, or as a fixed
primary names it, ``replicator-io``) only. It creates, reads and closes every socket
here, DEALERs and monitors alike, and they share its poller.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Protocol

import zmq
from zmq.utils.monitor import parse_monitor_message

from shared.wire.curve import HANDSHAKE_EVENTS, PlainChannel
from shared.wire.io_thread import receive_batch

#: The name its lines carried when only the fixed-role primary had links:
#: log filters and alerts key on it, so it stays.
log = logging.getLogger("primary.links")

#: What a link's monitor reports: a connection made, ended, and tried again,
#: and the handshake failures the channel explains.
_WATCHED = (zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
            | zmq.EVENT_HANDSHAKE_SUCCEEDED | HANDSHAKE_EVENTS)


class Peer(Protocol):
    """A peer as the links see it: whom to dial, and the largest frame it said it takes."""

    name: str
    endpoint: str
    frame_limit: int | None


@dataclass(eq=False)
class _Link:
    peer: Peer
    dealer: zmq.Socket
    monitor: zmq.Socket
    #: When it reported DISCONNECTED with no reconnect attempt since; None while it is not lost.
    lost_at: float | None = None
    #: Whether its latest connection failed its handshake (then the channel said why).
    handshake_failed: bool = False


class Links:
    def __init__(self, ctx: zmq.Context, channel: PlainChannel, frame_limit: int,
                 poller: zmq.Poller, send_queue: int = 1000, receive_queue: int = 1000) -> None:
        self._ctx = ctx
        self._channel = channel
        self._frame_limit = frame_limit
        self._poller = poller
        self._send_queue, self._receive_queue = send_queue, receive_queue
        #: Each peer's DEALER, for the I/O thread to poll, read and send on.
        self.dealers: dict[zmq.Socket, Peer] = {}
        self._by_monitor: dict[zmq.Socket, _Link] = {}
        # Monitor endpoints of this replicator's own: a closed DEALER's may still be bound.
        self._endpoint_prefix = f"inproc://replicator-link-{uuid.uuid4().hex}"
        self._opened = 0
        self._connected: list[str] = []

    def open(self, peer: Peer) -> None:
        """A new DEALER to ``peer``'s endpoint, connecting lazily, and its monitor."""
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        dealer.setsockopt(zmq.MAXMSGSIZE, self._frame_limit)
        dealer.setsockopt(zmq.SNDHWM, self._send_queue)
        dealer.setsockopt(zmq.RCVHWM, self._receive_queue)
        self._channel.secure(dealer, peer.name, owner_monitors=True)
        self._opened += 1
        endpoint = f"{self._endpoint_prefix}-{self._opened}"
        dealer.monitor(endpoint, _WATCHED)
        monitor = self._ctx.socket(zmq.PAIR)
        monitor.linger = 0
        monitor.connect(endpoint)  # before the DEALER connects, so no event is missed
        dealer.connect(peer.endpoint)  # lazy: the peer may come up later
        self.dealers[dealer] = peer
        self._by_monitor[monitor] = _Link(peer, dealer, monitor)
        self._poller.register(dealer, zmq.POLLIN)
        self._poller.register(monitor, zmq.POLLIN)

    def watch(self, events: dict, now: float) -> list[str]:
        """Read the monitors that ``events`` (one poll's) shows readable; the names
        of the peers a connection was made to meanwhile (what waits for them can go)."""
        self._connected: list[str] = []
        for monitor, link in self._by_monitor.items():
            if monitor in events:
                self._read(link, now)
        return self._connected

    def reopen_lost(self, now: float, grace: float) -> list[zmq.Socket]:
        """Replace each link lost for ``grace`` seconds; return the DEALERs closed."""
        closed = []
        for link in list(self._by_monitor.values()):
            if link.lost_at is None:
                continue
            self._read(link, now)  # a reconnect attempt may have been reported since the poll
            if link.lost_at is not None and now - link.lost_at >= grace:
                self._explain(link)
                self._close(link)
                self.open(link.peer)
                closed.append(link.dealer)
        return closed

    def close_all(self) -> None:
        for link in list(self._by_monitor.values()):
            self._close(link)

    def _read(self, link: _Link, now: float) -> None:
        receive_batch(link.monitor,
                      lambda frames: self._on_event(link, parse_monitor_message(frames), now))

    def _on_event(self, link: _Link, event: dict, now: float) -> None:
        kind = event["event"]
        if kind == zmq.EVENT_DISCONNECTED:
            if link.lost_at is None:
                link.lost_at = now
        elif kind == zmq.EVENT_CONNECT_RETRIED:
            link.lost_at = None
        elif kind == zmq.EVENT_CONNECTED:
            link.lost_at = None
            link.handshake_failed = False
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            # The connection takes frames from now on (before, IMMEDIATE refuses them).
            self._connected.append(link.peer.name)
        else:  # one of HANDSHAKE_EVENTS
            link.handshake_failed = True
            self._channel.report(link.peer.name, event)

    def _explain(self, link: _Link) -> None:
        peer = link.peer
        if link.handshake_failed:
            # The channel said why (rate-limited); a new DEALER tries again.
            log.debug("reopening the link to %s after a failed handshake", peer.name)
            return
        log.warning(
            "reopening the link to %s at %s: libzmq ended it and will not reconnect it, most likely "
            "because %s sent a frame over this node's limit (frame limits: this node %d bytes, "
            "%s %s); set the same MAX_MESSAGE_BYTES on every node",
            peer.name, peer.endpoint, peer.name, self._frame_limit, peer.name,
            "unknown" if peer.frame_limit is None else f"{peer.frame_limit} bytes",
        )

    def _close(self, link: _Link) -> None:
        self._poller.unregister(link.dealer)
        self._poller.unregister(link.monitor)
        del self.dealers[link.dealer]
        del self._by_monitor[link.monitor]
        link.dealer.close(linger=0)
        link.monitor.close(linger=0)
