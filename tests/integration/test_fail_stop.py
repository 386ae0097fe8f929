"""Fail-stop: a node whose replication thread dies exits non-zero, promptly,
so that a supervisor restarts it, instead of serving half alive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from shared.consensus.raft_messages import Heartbeat
from tests.support.processes import REPO
from tests.support.raw_peer import RawPeer
from tests.support.waiting import wait_until

# A secondary whose node-io thread has a bug: the first frame it handles raises.
BUGGY_SECONDARY = """
import sys
import shared.node.node_io as node_io

def buggy_pass(self, events):
    if events:
        raise RuntimeError("an injected bug")

node_io.NodeIo._pass = buggy_pass
from secondary.main import main
sys.exit(main())
"""


def test_a_node_whose_replication_thread_dies_exits_non_zero_within_seconds(tmp_path, ctx):
    port_file = tmp_path / "ports.json"
    env = {"PATH": os.environ.get("PATH", ""), "NO_COLOR": "1", "HTTP_HOST": "127.0.0.1",
           "HTTP_PORT": "0", "REPLICATION_BIND": "tcp://127.0.0.1:0", "NODE_NAME": "s1",
           "PORT_FILE": str(port_file)}
    node = subprocess.Popen([sys.executable, "-c", BUGGY_SECONDARY], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(port_file.exists, 20, what="the node to be ready")
        endpoint = json.loads(port_file.read_text())["replication"]
        peer = RawPeer(ctx, endpoint)
        peer.send(Heartbeat("primary", 1, 1, 0))
        started = time.monotonic()
        code = node.wait(10)
        peer.close()
        assert code == 1
        assert time.monotonic() - started < 5
        output = node.stdout.read().decode()
        assert "the receiver-io thread crashed" in output
        assert "stopping the node: it cannot replicate any more" in output
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
