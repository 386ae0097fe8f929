"""Run a role: configuration, logging, its I/O thread and its Bottle app under
Waitress, until SIGTERM or SIGINT.

Both ``main.py`` files call ``run_role`` with their own ``build`` step; this
module owns the outline around it, and the shutdown order:
  1. the signal arrives in the main thread, which runs Waitress's loop;
  2. ``stop_io`` runs first and stops the role's I/O thread, which wakes
     every request still waiting for ACKs, so no Waitress worker is left
     blocked (Waitress would wait 5 s for each before giving up);
  3. SystemExit ends Waitress's loop; Waitress joins its workers;
  4. the listening sockets close and ``run_http`` returns;
  5. the zmq Context is terminated, after every socket owner has gone;
  6. the log writer stops last: it writes out what is still queued.
With REPLICATION_KEYS_DIR, the replication channel (shared.wire.curve) starts
before the I/O thread and stops after it, before step 5. A start that fails
(a port taken, exit 1; a key file that ``build`` cannot use, exit 2) stops
the I/O thread and takes steps 5 and 6. On every path each step runs
exactly once.

Thread: main thread only (signal handlers can only be installed there).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, TypeVar

import waitress
import zmq

from shared.runtime.command_line import parse_command_line
from shared.runtime.config import ConfigError
from shared.runtime.logging_setup import setup_logging
from shared.runtime.memory import tune_malloc
from shared.web.http_channel import UncheckedWaitress, require_checked_waitress, use_worker_flushed_channels
from shared.wire.curve import PLAIN, PlainChannel
from shared.wire.io_thread import IoThread

log = logging.getLogger(__name__)

Config = TypeVar("Config")


@dataclass(frozen=True)
class Service:
    """What a role's ``build`` step hands to ``run_role``; nothing runs yet."""

    app: object
    #: The role's I/O thread: ``start`` raises OSError when it cannot bind;
    #: ``stop`` is safe after a ``start`` that raised.
    io_thread: IoThread
    #: What secures the I/O thread's sockets: CURVE from REPLICATION_KEYS_DIR, or plain.
    channel: PlainChannel = PLAIN
    #: Called after the I/O thread started: what it bound, by name, for
    #: the "ready" log line and PORT_FILE (beside "http").
    bound: Callable[[], dict[str, str]] = dict
    #: What else the "ready" log line says.
    detail: str = ""
    #: Called with the HTTP address once HTTP has bound, before it serves.
    http_bound: Callable[[str], None] = lambda _address: None
    max_body_bytes: int = 1 << 20


def run_role(
    role: str,
    summary: str,
    config_type: type[Config],
    build: Callable[[Config, zmq.Context], Service],
) -> int:
    """Run until a signal; the exit code: 0, 1 if it cannot start, 2 on bad
    configuration. ``summary`` opens the --help text."""
    parse_command_line(role, summary, config_type)
    try:
        require_checked_waitress()
    except UncheckedWaitress as exc:
        print(f"{role}: cannot start: {exc}", file=sys.stderr)
        return 1
    tune_malloc()
    try:
        config = config_type.from_env()
    except ConfigError as exc:
        print(f"{role}: invalid configuration: {exc}", file=sys.stderr)
        return 2
    role_log = logging.getLogger(role)
    crashed = threading.Event()
    with ExitStack() as cleanup:  # runs its callbacks last first
        cleanup.callback(setup_logging(config.log_level, config.log_format).stop)
        ctx = zmq.Context()
        ctx.linger = 0
        cleanup.callback(ctx.term)
        try:
            service = build(config, ctx)  # loads the keys; opens and loads the log
            cleanup.callback(service.channel.stop)  # once the I/O thread has stopped
            stop_io = _once(service.io_thread.stop)
            cleanup.callback(stop_io)
            service.io_thread.on_crash = lambda: _fail_stop(role_log, crashed)
            service.channel.start(ctx)
            server = _start(config, service)
        except ConfigError as exc:  # a file a setting names is unusable
            print(f"{role}: invalid configuration: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            role_log.critical("cannot start: %s", exc)
            return 1
        role_log.info("node %s ready: %s", config.node_name, _ready(server, service))
        run_http(server, before_exit=stop_io)
    return 1 if crashed.is_set() else 0


def _start(config, service: Service):
    """Start the I/O thread, bind HTTP and write PORT_FILE; the server, not
    serving yet. An OSError says which setting failed."""
    service.io_thread.start()
    try:
        server = create_http_server(
            service.app,
            config.http_host,
            config.http_port,
            config.http_threads,
            config.http_connection_limit,
            service.max_body_bytes,
            config.http_idle_timeout,
        )
    except OSError as exc:
        raise OSError(f"HTTP_PORT {config.http_port}: {exc}") from exc
    service.http_bound(http_address(server))
    if config.port_file:
        try:
            write_port_file(config.port_file, {"http": http_address(server), **service.bound()})
        except OSError as exc:
            server.close()
            raise OSError(f"PORT_FILE {config.port_file}: {exc}") from exc
    return server


def _fail_stop(role_log: logging.Logger, crashed: threading.Event) -> None:
    """The I/O thread died: stop the whole process, with a non-zero exit, so
    that a supervisor (Docker's restart policy) starts it afresh. A node
    half alive, serving without replicating, is the worse failure."""
    crashed.set()
    role_log.critical("stopping the node: it cannot replicate any more; exit code 1")
    os.kill(os.getpid(), signal.SIGTERM)  # handled on the main thread, as a shutdown


def _ready(server, service: Service) -> str:
    """The "ready" log line's account of the node: HTTP, what it bound, the detail."""
    bound = (f"{name} {address}" for name, address in service.bound().items())
    return ", ".join(filter(None, [f"HTTP {http_address(server)}", *bound, service.detail]))


def _once(step: Callable[[], None]) -> Callable[[], None]:
    """``step``, run by the first call only: the signal handler and the exit
    path both ask for the I/O thread to stop."""
    done = False

    def run_once() -> None:
        nonlocal done
        if not done:
            done = True
            step()

    return run_once


def write_port_file(path: str, addresses: dict[str, str]) -> None:
    """Write ``addresses`` to ``path`` as JSON, all at once: a temporary file
    renamed into place, so whoever waits for the file never reads half of it."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(addresses, file)
    os.replace(temporary, path)


def create_http_server(
    app, host: str, port: int, threads: int, connection_limit: int, max_body_bytes: int = 1 << 20,
    idle_timeout: float = 30.0,
):
    """A Waitress server, bound and listening, but not yet serving."""
    server = waitress.create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        connection_limit=connection_limit,
        # Closes connections silent this long: idle keep-alive ones, and
        # half-open ones that never complete a request. (A client that
        # trickles bytes keeps one open: a public node belongs behind a proxy.)
        channel_timeout=idle_timeout,
        cleanup_interval=max(1.0, idle_timeout / 4),
        # Waitress buffers a whole body before the app sees it. The app answers
        # an oversized body with a JSON 413; this ceiling, well above it, keeps
        # a huge upload from being buffered at all (Waitress's own 413).
        max_request_body_size=4 * max_body_bytes + (1 << 20),
        # select() cannot watch more than 1024 sockets; poll() has no such limit.
        asyncore_use_poll=True,
        ident="replicated-log",
        clear_untrusted_proxy_headers=True,
    )
    # Connections whose main loop does not spin while a worker writes (shared.web.http_channel).
    use_worker_flushed_channels(server)
    return server


def run_http(server, before_exit: Callable[[], None]) -> None:
    """Serve until SIGTERM/SIGINT, then take steps 2 to 4 above."""
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        log.info("%s received: shutting down", signal.Signals(signum).name)
        before_exit()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.run()
    finally:
        if not stopping:
            before_exit()
        server.close()
        log.info("stopped")


def http_address(server) -> str:
    return f"http://{server.effective_host}:{server.effective_port}"
