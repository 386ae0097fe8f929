"""CurveZMQ on the replication channel: the keys, the socket options, the ZAP gate.

With REPLICATION_KEYS_DIR set, each role loads at start exactly what it
needs from that directory (file names: shared.wire.keys), and nothing more:

- a secondary: its own NODE_NAME.key_secret, and the primary's
  PRIMARY_NAME.key, the one client key it admits;
- the primary: its own NODE_NAME.key_secret, and each secondary's NAME.key,
  so it knows that it talks to the real secondary.

``load_server`` / ``load_client`` return a small immutable channel object;
any fault in the files is a ConfigError, one line naming
REPLICATION_KEYS_DIR and the file. Without the directory they return PLAIN.
The role's I/O thread calls ``secure(sock)`` on the socket it creates,
before it binds or connects it; ``around`` gives ``main`` the start and stop
steps that bracket the sockets' life with ``start(ctx)`` and ``stop()``.

How a secondary refuses:

- Its ROUTER is a CURVE server. A peer without CURVE, or one that encrypts
  its HELLO for another server key, fails the handshake inside libzmq.
- A peer whose handshake succeeds is put to ZAP: zmq.auth's
  ThreadAuthenticator, on its own thread ``zap-auth``, admits exactly the
  primary's public key (compared in constant time). ZAP_ENFORCE_DOMAIN makes
  the ROUTER refuse everyone while no ZAP handler answers: it fails closed.
- A refused peer's frames never reach the receiver, so it gets no ACK or
  PONG and changes nothing.

Every refusal is logged as a WARNING on ``shared.curve.refused``, and on the
primary every failed handshake with a secondary on ``shared.curve.handshake``,
at most one line per REFUSAL_LOG_INTERVAL_S (the rest are counted). ZAP refusals carry the peer's
address. Handshakes that libzmq ends before ZAP are seen through a socket
monitor: libzmq allows one per socket, so a socket's owner that watches its
socket anyway (the primary's replicator, for its links) says so to
``secure`` and hands the handshake events to ``report``; every other
secured socket (a secondary's ROUTER) is watched here, on a thread of its
own, ``curve-watch``, started for the first such socket. libzmq's monitor
reports only the local endpoint for them, so those lines cannot name the
peer. No line ever holds a key: zmq.auth's own logger, which prints client
keys at DEBUG, is held at INFO whatever LOG_LEVEL says.

Threads: ``load_*`` any; ``secure`` and ``report`` only the thread that owns
the socket (``report`` only logs); ``start``/``stop`` the main thread. One
CurveServer per zmq Context: ZAP has one handler per Context.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import uuid
from pathlib import Path
from typing import Callable, Iterable

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from shared.runtime.config import ConfigError
from shared.runtime.logging_setup import RateLimitFilter
from shared.wire.io_thread import IoThread
from shared.wire.keys import public_file, secret_file

#: The name its lines carried before shared/ was grouped by concern: log
#: filters and alerts key on it, so it stays.
log = logging.getLogger("shared.curve")
#: A secondary's refused peers, and the primary's failed handshakes: each
#: rate-limited while its channel runs.
refused_log = logging.getLogger(f"{log.name}.refused")
handshake_log = logging.getLogger(f"{log.name}.handshake")
#: zmq.auth's logger. Its DEBUG lines print client keys, so they never show.
_zap_log = logging.getLogger(f"{log.name}.zap")
_zap_log.setLevel(logging.INFO)

ZAP_DOMAIN = b"replication"
#: A peer retrying every 100 ms (libzmq's reconnect interval) is one line per this.
REFUSAL_LOG_INTERVAL_S = 10.0
#: The monitor events ``report`` reads; an owner that monitors its socket asks for them.
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_MONITORED = HANDSHAKE_EVENTS | zmq.EVENT_MONITOR_STOPPED
_Z85_KEY = re.compile(rb"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class PlainChannel:
    """No REPLICATION_KEYS_DIR: sockets stay as they are; ``start`` says so once.

    Also the interface of the CURVE channels below."""

    def start(self, ctx: zmq.Context) -> None:
        """Main thread, before the I/O thread opens its sockets (``around``)."""
        log.warning("the replication channel is unauthenticated and unencrypted: anyone who can "
                    "reach a replication port can read the log, and can claim to be any node: make "
                    "nodes take on its terms, give it votes, and store the entries it sends as the "
                    "primary's; set REPLICATION_KEYS_DIR (README: Security)")

    def stop(self) -> None:
        """Main thread, after the I/O thread has closed its sockets."""

    def secure(self, sock: zmq.Socket, peer: str = "", owner_monitors: bool = False) -> None:
        """The socket's own thread, before it binds or connects; ``peer``:
        on the primary, the secondary's name. ``owner_monitors``: the caller
        reads the socket's monitor (HANDSHAKE_EVENTS among its events) and
        hands those events to ``report``; otherwise the channel watches it."""

    def report(self, peer: str, event: dict) -> None:
        """One handshake event of the socket secured for ``peer``, as
        zmq.utils.monitor parses it: logged, rate-limited, if it is a failure."""

    def authenticated_sender(self, frame: zmq.Frame) -> str | None:
        """The node whose key sent ``frame`` (received on a secured ROUTER,
        with ``copy=False``); None where the channel authenticates no one."""
        return None


PLAIN = PlainChannel()


class _CurveChannel(PlainChannel):
    """What both CURVE roles share: their own key pair, the watch, the log limit."""

    #: Where this role's handshake warnings go, rate-limited.
    _warnings: logging.Logger

    def __init__(self, directory: Path, node_name: str, public: bytes, secret: bytes,
                 peers: Iterable[str]) -> None:
        self._directory = directory
        self._node_name = node_name
        self._public = public
        self._secret = secret
        run = uuid.uuid4().hex
        #: Where each secured socket publishes its monitor events.
        self._monitor_endpoints = {peer: f"inproc://curve-watch-{run}-{n}" for n, peer in enumerate(peers)}
        self._ctx: zmq.Context | None = None
        self._watch: _HandshakeWatch | None = None
        self._watch_lock = threading.Lock()  # secure may run on more than one owner's thread
        self._limit: RateLimitFilter | None = None

    def __repr__(self) -> str:  # never the keys
        return f"{type(self).__name__}({self._directory}, {self._node_name})"

    def start(self, ctx: zmq.Context) -> None:
        self._ctx = ctx
        self._limit = RateLimitFilter(REFUSAL_LOG_INTERVAL_S)
        self._warnings.addFilter(self._limit)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        if self._limit is not None:
            self._warnings.removeFilter(self._limit)

    def _own_key(self, sock: zmq.Socket, peer: str, owner_monitors: bool) -> None:
        sock.curve_publickey = self._public
        sock.curve_secretkey = self._secret
        if not owner_monitors:
            self._start_watch()
            sock.monitor(self._monitor_endpoints[peer], _MONITORED)

    def _start_watch(self) -> None:
        """Start ``curve-watch`` once, listening before the first socket it watches connects."""
        with self._watch_lock:
            if self._watch is None:
                self._watch = _HandshakeWatch(self._ctx, self._monitor_endpoints, self.report)
                self._watch.start()


class CurveServer(_CurveChannel):
    """A secondary's ROUTER: a CURVE server that admits only the primary's key."""

    _warnings = refused_log

    def __init__(self, directory: Path, node_name: str, public: bytes, secret: bytes,
                 primary_name: str, primary_key: bytes) -> None:
        super().__init__(directory, node_name, public, secret, peers=[""])
        self._primary_name = primary_name
        self._primary_key = primary_key
        self._gate: _Admits | None = None

    def start(self, ctx: zmq.Context) -> None:
        super().start(ctx)
        self._gate = _Admits(ctx, {self._primary_name: self._primary_key},
                             f"the primary's ({public_file(self._directory, self._primary_name).name})")
        self._gate.start()
        log.info("replication channel: CURVE, this node's key %s; admitting only %s",
                 secret_file(self._directory, self._node_name),
                 public_file(self._directory, self._primary_name))

    def stop(self) -> None:
        if self._gate is not None:
            self._gate.stop()
        super().stop()

    def secure(self, sock: zmq.Socket, peer: str = "", owner_monitors: bool = False) -> None:
        self._own_key(sock, "", owner_monitors)
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def report(self, _peer: str, event: dict) -> None:
        kind, detail, where = event["event"], event["value"], event["endpoint"].decode()
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            if detail == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                why = "the peer does not use CURVE"
            elif detail == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
                why = (f"the peer's handshake is not for this node's key "
                       f"({public_file(self._directory, self._node_name).name})")
            else:
                why = f"handshake protocol error {detail:#x}"
            refused_log.warning("refused a replication peer on %s: %s (libzmq does not report "
                                "the address of a peer it refuses before ZAP)", where, why)
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            log.debug("a replication peer on %s left during the handshake", where)
        # EVENT_HANDSHAKE_FAILED_AUTH: ZAP refused it, and _Admits logged it with its address.


class CurveClient(_CurveChannel):
    """The primary's DEALERs: CURVE clients that expect each secondary's own key."""

    _warnings = handshake_log

    def __init__(self, directory: Path, node_name: str, public: bytes, secret: bytes,
                 server_keys: dict[str, bytes]) -> None:
        super().__init__(directory, node_name, public, secret, peers=server_keys)
        self._server_keys = server_keys

    def start(self, ctx: zmq.Context) -> None:
        super().start(ctx)
        log.info("replication channel: CURVE, this node's key %s; secondaries' keys %s",
                 secret_file(self._directory, self._node_name),
                 ", ".join(public_file(self._directory, name).name for name in self._server_keys) or "none")

    def secure(self, sock: zmq.Socket, peer: str = "", owner_monitors: bool = False) -> None:
        self._own_key(sock, peer, owner_monitors)
        sock.curve_serverkey = self._server_keys[peer]

    def report(self, peer: str, event: dict) -> None:
        kind, detail, where = event["event"], event["value"], event["endpoint"].decode()
        own_key = public_file(self._directory, self._node_name).name
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = f"it refused this node's key: {self._admission_hint(own_key)}"
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and detail == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            why = "it does not use CURVE: give it REPLICATION_KEYS_DIR too"
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            why = (f"it ended the handshake: its key is not the one in "
                   f"{public_file(self._directory, peer).name}, or it is not {peer}")
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            # No reason given: a wrong key ends a handshake so, and so does a
            # peer restarting, or anything in between closing the connection.
            why = (f"the connection ended during the handshake (if it happens again and again: "
                   f"{peer}'s key may not be the one in {public_file(self._directory, peer).name})")
        else:
            return
        handshake_log.warning("no CURVE handshake with %s at %s: %s", peer, where, why)


    def _admission_hint(self, own_key: str) -> str:
        return f"it admits only its PRIMARY_NAME's key, so give it {own_key} and PRIMARY_NAME={self._node_name}"


class _Admits(ThreadAuthenticator):
    """The ZAP handler, on its own thread ``zap-auth``: admits the given keys
    (``whose`` names them in refusals), logs every other peer's address, and
    gives each admitted connection its node's name as User-Id, which every
    frame from it then carries (``authenticated_sender``)."""

    def __init__(self, ctx: zmq.Context, keys: dict[str, bytes], whose: str) -> None:
        super().__init__(ctx, log=_zap_log)
        self._keys = keys
        self._whose = whose
        self._peer_address = ""
        self.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=self)

    def start(self) -> None:
        super().start()
        self.thread.name = "zap-auth"

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # A ZAP request (RFC 27): version, request id, domain, address, identity,
        # mechanism, credentials. zmq.auth hands ``callback`` only the key.
        self._peer_address = msg[3].decode("ascii", "replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    def callback(self, _domain: str, client_key: bytes) -> bool:
        """zmq.auth's credentials-provider hook, with the client key in Z85."""
        if self._name_of(client_key) is not None:
            return True
        refused_log.warning("refused a replication peer at %s: its CURVE key is not %s",
                            self._peer_address, self._whose)
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        """zmq.auth's hook for an admitted key (raw bytes): the name of its node."""
        return self._name_of(z85.encode(client_public_key)) or ""

    def _name_of(self, client_key: bytes) -> str | None:
        # Every key compared, in constant time each: which one matched leaks nothing.
        matches = [name for name, key in self._keys.items() if hmac.compare_digest(client_key, key)]
        return matches[0] if matches else None


class _HandshakeWatch(IoThread):
    """Reads the monitor events of the secured sockets and hands each to ``report``."""

    def __init__(self, ctx: zmq.Context, endpoints: dict[str, str],
                 report: Callable[[str, dict], None]) -> None:
        super().__init__("curve-watch")
        self._ctx = ctx
        self._endpoints = endpoints
        self._report = report
        self._poller: zmq.Poller | None = None
        self._monitors: dict[zmq.Socket, str] = {}

    def _open(self, poller: zmq.Poller) -> None:
        self._poller = poller
        for peer in self._endpoints:
            self._listen(peer)

    def _listen(self, peer: str) -> None:
        sock = self._ctx.socket(zmq.PAIR)
        sock.linger = 0
        sock.connect(self._endpoints[peer])  # inproc: before the monitored socket binds it is fine
        self._poller.register(sock, zmq.POLLIN)
        self._monitors[sock] = peer

    def _pass(self, events: dict) -> None:
        for sock, peer in list(self._monitors.items()):
            if sock in events:
                self._drain(sock, peer)

    def _drain(self, sock: zmq.Socket, peer: str) -> None:
        while True:
            try:
                event = parse_monitor_message(sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                # That socket closed; listen again in case its owner opens another.
                self._poller.unregister(sock)
                del self._monitors[sock]
                sock.close()
                self._listen(peer)
                return
            self._report(peer, event)

    def _close(self) -> None:
        for sock in self._monitors:
            sock.close()


class CurvePeers(_CurveChannel):
    """A failover node: its ROUTER is a CURVE server that admits the cluster's
    keys only; each DEALER a client that expects its peer's own key."""

    _warnings = refused_log

    def __init__(self, directory: Path, node_name: str, public: bytes, secret: bytes,
                 peer_keys: dict[str, bytes]) -> None:
        super().__init__(directory, node_name, public, secret, peers=["", *peer_keys])
        self._peer_keys = peer_keys
        self._gate: _Admits | None = None
        self._handshake_limit: RateLimitFilter | None = None

    def start(self, ctx: zmq.Context) -> None:
        super().start(ctx)
        self._handshake_limit = RateLimitFilter(REFUSAL_LOG_INTERVAL_S)
        handshake_log.addFilter(self._handshake_limit)
        files = ", ".join(public_file(self._directory, name).name for name in self._peer_keys)
        self._gate = _Admits(ctx, self._peer_keys, f"one of the cluster's ({files})")
        self._gate.start()
        log.info("replication channel: CURVE, this node's key %s; peers' keys %s",
                 secret_file(self._directory, self._node_name), files or "none")

    def stop(self) -> None:
        if self._gate is not None:
            self._gate.stop()
        if self._handshake_limit is not None:
            handshake_log.removeFilter(self._handshake_limit)
        super().stop()

    def secure(self, sock: zmq.Socket, peer: str = "", owner_monitors: bool = False) -> None:
        """``peer`` names the node a DEALER dials; none: the node's ROUTER."""
        if peer:
            self._own_key(sock, peer, owner_monitors)
            sock.curve_serverkey = self._peer_keys[peer]
        else:
            CurveServer.secure(self, sock)

    def report(self, peer: str, event: dict) -> None:
        # The two roles' explanations: a DEALER's handshake, or the ROUTER's refusal.
        (CurveClient.report if peer else CurveServer.report)(self, peer, event)

    def _admission_hint(self, own_key: str) -> str:
        return f"it admits only the keys of its PEERS, so give it {own_key}"

    def authenticated_sender(self, frame: zmq.Frame) -> str | None:
        return frame.get("User-Id")


def load_peers(directory: str | None, node_name: str, peers: Iterable[str]) -> PlainChannel:
    """A failover node's channel: PLAIN without ``directory``, else CurvePeers."""
    if not directory:
        return PLAIN
    keys = _keys_dir(directory)
    public, secret = _own_pair(keys, node_name)
    return CurvePeers(keys, node_name, public, secret, {name: _public_key(keys, name) for name in peers})


def load_server(directory: str | None, node_name: str, primary_name: str) -> PlainChannel:
    """A secondary's channel: PLAIN without ``directory``, else a CurveServer."""
    if not directory:
        return PLAIN
    keys = _keys_dir(directory)
    public, secret = _own_pair(keys, node_name)
    return CurveServer(keys, node_name, public, secret, primary_name, _public_key(keys, primary_name))


def load_client(directory: str | None, node_name: str, secondaries: Iterable[str]) -> PlainChannel:
    """The primary's channel: PLAIN without ``directory``, else a CurveClient."""
    if not directory:
        return PLAIN
    keys = _keys_dir(directory)
    public, secret = _own_pair(keys, node_name)
    return CurveClient(keys, node_name, public, secret, {name: _public_key(keys, name) for name in secondaries})


def _keys_dir(directory: str) -> Path:
    if not zmq.has("curve"):
        raise ConfigError(f"REPLICATION_KEYS_DIR is set, but this libzmq ({zmq.zmq_version()}) "
                          "was built without CURVE support")
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError(f"REPLICATION_KEYS_DIR: {path} is not a directory")
    return path


def _own_pair(directory: Path, name: str) -> tuple[bytes, bytes]:
    path = secret_file(directory, name)
    public, secret = _read_certificate(path)
    if secret is None or not _Z85_KEY.match(secret):
        raise ConfigError(f"REPLICATION_KEYS_DIR: {path} holds no valid secret key")
    if zmq.curve_public(secret) != public:
        raise ConfigError(f"REPLICATION_KEYS_DIR: {path}: its public and secret keys are no pair")
    return public, secret


def _public_key(directory: Path, name: str) -> bytes:
    return _read_certificate(public_file(directory, name))[0]


def _read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ConfigError(f"REPLICATION_KEYS_DIR: {path} is missing "
                          "(python -m shared.keys makes the pairs; README: Security)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise ConfigError(f"REPLICATION_KEYS_DIR: cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ConfigError(f"REPLICATION_KEYS_DIR: {path} is no zmq certificate: no public key") from None
    if not _Z85_KEY.match(public):
        raise ConfigError(f"REPLICATION_KEYS_DIR: {path} holds no valid public key")
    return public, secret
