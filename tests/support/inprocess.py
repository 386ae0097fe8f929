"""A whole cluster inside the test process: Replicator and Receivers over inproc.

The Bottle apps are driven through WebTest, so HTTP behaviour is tested
without sockets or servers; replication is real zmq, over inproc.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace

import webtest
import zmq

from primary.api import make_app as make_primary_app
from primary.appender import Appender
from primary.config import PrimaryConfig, ReplicationSettings, SecondarySpec
from primary.replicator import Replicator
from secondary.api import make_app as make_secondary_app
from secondary.config import SecondaryConfig
from secondary.receiver import Receiver
from shared.log.ordered_log import OrderedLog
from shared.runtime.config import DelayRange

#: Heartbeats every 50 ms: failure detection within a unit test's patience;
#: a primary that starts empty waits half a second for silent secondaries.
FAST_HEARTBEAT_SETTINGS = ReplicationSettings(
    heartbeat_interval=0.05, suspect_after=4, unhealthy_after=8, recovery_timeout=0.5
)


@dataclass
class InProcessSecondary:
    name: str
    store: OrderedLog
    receiver: Receiver
    app: webtest.TestApp


class InProcessCluster:
    """Secondaries named in ``running`` are started; the rest are configured
    in the primary but never come up."""

    def __init__(self, ctx: zmq.Context, names=("s1", "s2"), running=None,
                 delays: dict[str, DelayRange] | None = None, **config) -> None:
        running = names if running is None else running
        self.secondaries: dict[str, InProcessSecondary] = {}
        specs = []
        for name in names:
            endpoint = f"inproc://{name}-{uuid.uuid4().hex}"
            specs.append(SecondarySpec(name, endpoint))
            if name in running:
                store = OrderedLog()
                receiver = Receiver(ctx, endpoint, store, name, (delays or {}).get(name, DelayRange()))
                receiver.start()
                app = webtest.TestApp(make_secondary_app(store, receiver, SecondaryConfig(node_name=name)))
                self.secondaries[name] = InProcessSecondary(name, store, receiver, app)
        self.config = replace(
            PrimaryConfig(), secondaries=tuple(specs), replication=FAST_HEARTBEAT_SETTINGS, **config
        )
        self.store = OrderedLog()
        self.replicator = Replicator(ctx, self.store, self.config.secondaries, self.config.replication)
        self.replicator.start()
        self.appender = Appender(self.config, self.store, self.replicator)
        self.app = webtest.TestApp(
            make_primary_app(self.config, self.store, self.replicator, self.appender)
        )

    def post(self, body, status="*", headers=None, content_type="application/json"):
        """POST /messages; ``body`` is a dict (sent as JSON) or raw bytes."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.app.post(
            "/messages", raw, headers=headers or {}, content_type=content_type, status=status,
            expect_errors=True,
        )

    def stop(self) -> None:
        self.replicator.stop()  # idempotent
        for secondary in self.secondaries.values():
            secondary.receiver.stop()
