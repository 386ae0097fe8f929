"""Process entry point of a secondary: its parts, run by shared.service.run_role.

Thread: main. ``run_role`` starts ``receiver-io`` and then runs Waitress's loop.
"""

from __future__ import annotations

import zmq

from secondary.api import make_app
from secondary.config import SecondaryConfig
from secondary.receiver import Receiver
from shared.node import main as failover
from shared.log.durable_log import open_log
from shared.service import Service, run_role
from shared.wire import curve


SUMMARY = """\
A secondary of the replicated log: it stores what the primary replicates to it
and serves reads over HTTP. Configured by environment variables only, read
once at start."""


def main() -> int:
    if failover.wanted():  # PEERS: the same node either way; see shared.node.main
        return failover.main("secondary", stands_at_once=False)
    return run_role("secondary", SUMMARY, SecondaryConfig, build)


def build(config: SecondaryConfig, ctx: zmq.Context) -> Service:
    channel = curve.load_server(config.replication_keys_dir, config.node_name, config.primary_name)
    store = open_log(config.data_dir, "secondary", config.fsync)
    receiver = Receiver(
        ctx,
        config.replication_bind,
        store,
        config.node_name,
        config.replication_delay,
        config.drop_ack_fraction,
        keep_incarnation=store.durable and config.fsync,
        max_ahead=config.max_ahead,
        max_ahead_bytes=config.max_ahead_bytes,
        max_message_bytes=config.max_body_bytes,
        channel=channel,
    )
    return Service(
        app=make_app(store, receiver, config),
        io_thread=receiver,
        channel=channel,
        max_body_bytes=config.max_body_bytes,
        bound=lambda: {"replication": receiver.endpoint},
    )
