"""The secondary's configuration, read once from the environment at start."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping

from shared.config import (
    DelayRange,
    check_tcp_endpoint,
    env_delay,
    env_float,
    env_int,
    env_log_level,
    env_node_name,
    env_port,
    env_str,
)


@dataclass(frozen=True)
class SecondaryConfig:
    #: Interface and port of the HTTP API.
    http_host: str = "0.0.0.0"
    http_port: int = 8000
    #: Waitress worker threads; reads are quick, so a few suffice.
    http_threads: int = 8
    #: Open HTTP connections Waitress accepts before it stops accepting.
    http_connection_limit: int = 1000
    #: zmq endpoint the replication ROUTER binds; port 0 picks a free port.
    replication_bind: str = "tcp://0.0.0.0:5555"
    #: Hold each message back this long before storing and acknowledging it.
    replication_delay: DelayRange = DelayRange()
    #: Fault injection: the fraction of ACKs dropped after the message is stored.
    drop_ack_fraction: float = 0.0
    #: How this secondary names itself in ACKs and /health.
    node_name: str = "secondary"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "SecondaryConfig":
        return cls(
            http_host=env_str(env, "HTTP_HOST", cls.http_host),
            http_port=env_port(env, "HTTP_PORT", cls.http_port),
            http_threads=env_int(env, "HTTP_THREADS", cls.http_threads, 1, 1024),
            http_connection_limit=env_int(
                env, "HTTP_CONNECTION_LIMIT", cls.http_connection_limit, 1, 100_000
            ),
            replication_bind=check_tcp_endpoint(
                "REPLICATION_BIND", env_str(env, "REPLICATION_BIND", cls.replication_bind)
            ),
            replication_delay=env_delay(env, "REPLICATION_DELAY"),
            drop_ack_fraction=env_float(env, "FAULT_DROP_ACKS", 0.0, 0.0, 1.0),
            node_name=env_node_name(env, socket.gethostname()),
            log_level=env_log_level(env),
        )
