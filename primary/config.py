"""The primary's configuration, read once from the environment at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from shared.config import (
    ConfigError,
    check_name,
    check_tcp_endpoint,
    env_float,
    env_int,
    env_log_level,
    env_node_name,
    env_port,
    env_str,
)


@dataclass(frozen=True)
class SecondarySpec:
    name: str
    endpoint: str


@dataclass(frozen=True)
class ReplicationSettings:
    """How the replicator talks to secondaries; shared by all of them."""

    #: Seconds between PINGs to each secondary.
    heartbeat_interval: float = 1.0
    #: Missed heartbeats after which a secondary is Suspected, then Unhealthy.
    suspect_after: int = 2
    unhealthy_after: int = 4
    #: Ceiling of the exponential backoff between resends to one secondary.
    retry_backoff_max: float = 10.0
    #: One APPEND frame carries at most this many entries and bytes of them.
    batch_max_entries: int = 1000
    batch_max_bytes: int = 1 << 20
    #: APPEND frames a secondary may have unacknowledged; then entries queue
    #: on the primary and leave together in the next, larger batch.
    max_flights: int = 64


def majority(nodes: int) -> int:
    return nodes // 2 + 1


@dataclass(frozen=True)
class PrimaryConfig:
    http_host: str = "0.0.0.0"
    http_port: int = 8000
    #: Waitress worker threads. Each append waiting for ACKs holds one.
    http_threads: int = 64
    #: Open HTTP connections (idle keep-alive ones included) accepted at once.
    http_connection_limit: int = 1000
    #: Largest request body accepted by POST /messages (413 beyond).
    max_body_bytes: int = 1 << 20
    #: Appends with w > 1 allowed to wait for ACKs at once (503 beyond);
    #: below http_threads, so reads and w=1 appends always find a thread.
    max_waiting_appends: int = 48
    #: Idempotency keys remembered (the most recent ones).
    idempotency_keys: int = 100_000
    #: Nodes, the primary included, that must be up to accept appends;
    #: None means a majority of the configured cluster.
    quorum: int | None = None
    secondaries: tuple[SecondarySpec, ...] = ()
    node_name: str = "primary"
    log_level: str = "INFO"
    replication: ReplicationSettings = field(default_factory=ReplicationSettings)

    @property
    def cluster_size(self) -> int:
        return 1 + len(self.secondaries)

    @property
    def write_quorum(self) -> int:
        return majority(self.cluster_size) if self.quorum is None else self.quorum

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "PrimaryConfig":
        replication = ReplicationSettings(
            heartbeat_interval=env_float(env, "HEARTBEAT_INTERVAL", 1.0, 0.01, 60.0),
            suspect_after=env_int(env, "SUSPECT_AFTER", 2, 1, 1000),
            unhealthy_after=env_int(env, "UNHEALTHY_AFTER", 4, 1, 1000),
            retry_backoff_max=env_float(env, "RETRY_BACKOFF_MAX", 10.0, 0.01, 3600.0),
        )
        if replication.unhealthy_after < replication.suspect_after:
            raise ConfigError("UNHEALTHY_AFTER: must be at least SUSPECT_AFTER")
        secondaries = parse_secondaries(env.get("SECONDARIES", ""))
        node_name = env_node_name(env, cls.node_name)
        if node_name in {s.name for s in secondaries}:
            raise ConfigError(f"SECONDARIES: {node_name!r} is the primary's own NODE_NAME")
        http_threads = env_int(env, "HTTP_THREADS", cls.http_threads, 2, 4096)
        max_waiting = env_int(
            env, "MAX_WAITING_APPENDS", http_threads * 3 // 4, 1, http_threads - 1
        )
        quorum = env_int(env, "QUORUM", majority(1 + len(secondaries)), 1, 1 + len(secondaries))
        return cls(
            http_host=env_str(env, "HTTP_HOST", cls.http_host),
            http_port=env_port(env, "HTTP_PORT", cls.http_port),
            http_threads=http_threads,
            max_waiting_appends=max_waiting,
            idempotency_keys=env_int(env, "IDEMPOTENCY_KEYS", cls.idempotency_keys, 1, 10_000_000),
            quorum=quorum,
            http_connection_limit=env_int(
                env, "HTTP_CONNECTION_LIMIT", cls.http_connection_limit, 1, 100_000
            ),
            max_body_bytes=env_int(env, "MAX_MESSAGE_BYTES", cls.max_body_bytes, 1, 1 << 30),
            secondaries=secondaries,
            node_name=node_name,
            log_level=env_log_level(env),
            replication=replication,
        )


def parse_secondaries(raw: str) -> tuple[SecondarySpec, ...]:
    """Parse ``[NAME=]tcp://HOST:PORT,...``; an unnamed one is called HOST:PORT."""
    specs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, endpoint = item.rpartition("=")
        endpoint = check_tcp_endpoint("SECONDARIES", endpoint)
        name = check_name("SECONDARIES", name) if sep else endpoint.removeprefix("tcp://")
        specs.append(SecondarySpec(name, endpoint))
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"SECONDARIES: names must be unique, repeated: {', '.join(duplicates)}")
    return tuple(specs)
