"""A failover node's configuration: PEERS, DATA_DIR, the timeouts, and the URLs."""

from __future__ import annotations

import pytest

from shared.node.config import FailoverConfig, Peer
from shared.runtime.config import ConfigError

PEERS = "n1=tcp://10.0.0.1:5555, n2=tcp://10.0.0.2:5555,n3=tcp://10.0.0.3:5555"


def config(tmp_path, **env) -> FailoverConfig:
    return FailoverConfig.from_env({"PEERS": PEERS, "NODE_NAME": "n2", "DATA_DIR": str(tmp_path),
                                    "HTTP_PORT": "8002", **env})


def test_peers_name_every_node_itself_included_and_the_defaults_follow_from_them(tmp_path):
    loaded = config(tmp_path)
    assert loaded.peers == (Peer("n1", "tcp://10.0.0.1:5555"), Peer("n2", "tcp://10.0.0.2:5555"),
                            Peer("n3", "tcp://10.0.0.3:5555"))
    assert [peer.name for peer in loaded.others] == ["n1", "n3"]
    assert (loaded.cluster_size, loaded.majority) == (3, 2)
    assert (loaded.election_timeout, loaded.heartbeat_interval) == (1.0, 0.1)
    assert loaded.advertised_url == loaded.public_url == "http://n2:8002"
    assert config(tmp_path, ADVERTISED_URL="http://10.0.0.2:8002").public_url == "http://10.0.0.2:8002"


@pytest.mark.parametrize("env, named", [
    ({"DATA_DIR": ""}, "DATA_DIR: required with PEERS"),
    ({"NODE_NAME": "n4"}, "PEERS: must name this node"),
    ({"PEERS": "n1=tcp://a:1,n1=tcp://b:1,n2=tcp://c:1"}, "repeated: n1"),
    ({"PEERS": "n2 tcp://a:1"}, "must be NAME=tcp://HOST:PORT"),
    ({"ELECTION_TIMEOUT": "0.4"}, "ELECTION_TIMEOUT: must be at least 5 x HEARTBEAT_INTERVAL"),
    ({"ELECTION_TIMEOUT": "1", "HEARTBEAT_INTERVAL": "0.3"}, "ELECTION_TIMEOUT"),
    ({"MAX_WAITING_APPENDS": "64"}, "MAX_WAITING_APPENDS"),
])
def test_a_configuration_a_failover_node_cannot_run_is_refused_naming_the_setting(tmp_path, env, named):
    with pytest.raises(ConfigError, match=named):
        config(tmp_path, **env)
