"""A whole fixed-role cluster inside the test process: its nodes' ``node-io`` threads over inproc.

The Bottle apps are driven through WebTest, so HTTP behaviour is tested
without sockets or servers; replication is real zmq, over inproc, and
every node runs the engine as it does in production (shared.node.node_io).
A secondary that is configured but not running can be started later, at
the endpoint the primary dials (``start_secondary``).

Thread: the test's.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace

import webtest
import zmq

from primary.api import make_app as make_primary_app
from primary.config import PrimaryConfig, ReplicationSettings, SecondarySpec
from secondary.api import make_app as make_secondary_app
from secondary.config import SecondaryConfig, node_settings
from shared.log.node_log import NodeLog, open_log
from shared.node.appends import AppendPolicy, Appends
from shared.node.node_io import NodeIo
from shared.runtime.config import DelayRange
from shared.wire.curve import PLAIN
from shared.wire.frames import frame_limit
from tests.support.waiting import wait_until

#: Heartbeats every 50 ms: failure detection within a unit test's patience;
#: a primary that starts empty waits half a second for silent secondaries.
FAST_HEARTBEAT_SETTINGS = ReplicationSettings(
    heartbeat_interval=0.05, suspect_after=4, unhealthy_after=8, recovery_timeout=0.5
)


@dataclass
class InProcessSecondary:
    name: str
    node: NodeIo
    app: webtest.TestApp
    config: SecondaryConfig

    @property
    def log(self) -> NodeLog:
        return self.node.log


class InProcessCluster:
    """Secondaries named in ``running`` are started; the rest are configured
    in the primary but never come up, unless a test starts them."""

    def __init__(self, ctx: zmq.Context, names=("s1", "s2"), running=None,
                 delays: dict[str, DelayRange] | None = None, data_dir: str = "", **config) -> None:
        """``data_dir``: the primary keeps its log there (in memory when empty)."""
        running = names if running is None else running
        self._ctx = ctx
        self.secondaries: dict[str, InProcessSecondary] = {}
        specs = tuple(SecondarySpec(name, f"inproc://{name}-{uuid.uuid4().hex}") for name in names)
        self.config = replace(PrimaryConfig(), secondaries=specs, replication=FAST_HEARTBEAT_SETTINGS,
                              **config)
        for name in running:
            self.start_secondary(name, (delays or {}).get(name, DelayRange()))
        self.node = NodeIo(ctx, self.config.node_settings(frame_limit(self.config.max_body_bytes)),
                           open_log(data_dir, "primary", True, self.config.idempotency_keys), PLAIN)
        self.node.start()
        # Until its first pass, a fixed primary publishes the core's initial
        # role (secondary), and an append would be told there is no primary.
        wait_until(lambda: self.node.state.is_primary or self.node.state.recovering, 5,
                   what="the primary's first pass")
        self.appends = Appends(AppendPolicy(self.config.node_name, self.config.max_waiting_appends,
                                            quorum=self.config.write_quorum), self.node)
        self.app = webtest.TestApp(make_primary_app(self.config, self.node, self.appends))

    def start_secondary(self, name: str, delay: DelayRange = DelayRange(), **config) -> InProcessSecondary:
        """Start the configured secondary ``name``, with its log in memory."""
        [endpoint] = [spec.endpoint for spec in self.config.secondaries if spec.name == name]
        secondary_config = SecondaryConfig(node_name=name, replication_bind=endpoint,
                                           replication_delay=delay, **config)
        settings = node_settings(secondary_config, frame_limit(secondary_config.max_body_bytes))
        node = NodeIo(self._ctx, settings, open_log("", "secondary", True, 1000), PLAIN)
        node.start()
        app = webtest.TestApp(make_secondary_app(node, secondary_config))
        self.secondaries[name] = InProcessSecondary(name, node, app, secondary_config)
        return self.secondaries[name]

    @property
    def log(self) -> NodeLog:
        """The primary's log."""
        return self.node.log

    @property
    def message_count(self) -> int:
        """How many messages the primary's log shows (ids start at 0)."""
        return self.log.shown()

    def wait_recovered(self, timeout: float = 10.0) -> None:
        """Until the primary has taken over its log (or found the cluster new).
        Not ``node.recovered``: that is set before the recovery even begins."""
        wait_until(lambda: self.node.state.is_primary, timeout, what="the primary's recovery to end")

    def post(self, body, status="*", headers=None, content_type="application/json"):
        """POST /messages; ``body`` is a dict (sent as JSON) or raw bytes."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.app.post(
            "/messages", raw, headers=headers or {}, content_type=content_type, status=status,
            expect_errors=True,
        )

    def stop(self) -> None:
        self.node.stop()  # idempotent
        for secondary in self.secondaries.values():
            secondary.node.stop()
