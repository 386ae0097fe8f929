"""Configuration parsing: defaults, valid values, one-line errors naming the variable; PORT_FILE."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
from dataclasses import replace

import pytest

from primary.config import PrimaryConfig, SecondarySpec
from secondary.config import SecondaryConfig
from shared.consensus.quorum import majority
from shared.runtime.config import ConfigError, DelayRange, delay
from shared.service import write_port_file
from tests.support.processes import REPO


def test_primary_defaults():
    config = PrimaryConfig.from_env({})
    assert (config.http_host, config.http_port, config.http_threads) == ("0.0.0.0", 8000, 64)
    assert config.secondaries == () and config.cluster_size == 1


def test_an_empty_environment_gives_the_declared_defaults():
    assert PrimaryConfig.from_env({}) == PrimaryConfig()
    assert SecondaryConfig.from_env({}) == replace(SecondaryConfig(), node_name=socket.gethostname())


def test_defaults_worked_out_from_other_settings():
    config = PrimaryConfig.from_env({"HTTP_THREADS": "8", "SECONDARIES": "tcp://a:1,tcp://b:1"})
    assert config.max_waiting_appends == 6
    assert config.quorum is None and config.write_quorum == 2


def test_secondaries_named_and_unnamed():
    config = PrimaryConfig.from_env(
        {"SECONDARIES": "a=tcp://host-a:5555, tcp://10.0.0.2:6000 ,"}
    )
    assert config.secondaries == (
        SecondarySpec("a", "tcp://host-a:5555"),
        SecondarySpec("10.0.0.2:6000", "tcp://10.0.0.2:6000"),
    )
    assert config.cluster_size == 3


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"HTTP_PORT": "http"}, "HTTP_PORT"),
        ({"HTTP_PORT": "70000"}, "HTTP_PORT"),
        ({"HTTP_THREADS": "0"}, "HTTP_THREADS"),
        ({"SECONDARIES": "udp://x:1"}, "SECONDARIES"),
        ({"SECONDARIES": "tcp://x"}, "SECONDARIES"),
        ({"SECONDARIES": "a=tcp://x:1,a=tcp://y:1"}, "SECONDARIES"),
        ({"SECONDARIES": "primary=tcp://x:1"}, "SECONDARIES"),
        ({"SECONDARIES": "bad name=tcp://x:1"}, "SECONDARIES"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"HEARTBEAT_INTERVAL": "0"}, "HEARTBEAT_INTERVAL"),
        ({"SUSPECT_AFTER": "5", "UNHEALTHY_AFTER": "2"}, "UNHEALTHY_AFTER"),
        ({"HTTP_THREADS": "8", "MAX_WAITING_APPENDS": "8"}, "MAX_WAITING_APPENDS"),
        ({"QUORUM": "2"}, "QUORUM"),
        ({"QUORUM": "0", "SECONDARIES": "tcp://a:1"}, "QUORUM"),
        ({"HTTP_HOST": "999.1.1.1"}, "HTTP_HOST"),
        ({"HTTP_HOST": "bad host"}, "HTTP_HOST"),
        ({"HTTP_IDLE_TIMEOUT": "0"}, "HTTP_IDLE_TIMEOUT"),
        ({"FSYNC": "sometimes"}, "FSYNC"),
        ({"RECOVERY_TIMEOUT": "soon"}, "RECOVERY_TIMEOUT"),
        ({"MAX_MESSAGE_BYTES": "0"}, "MAX_MESSAGE_BYTES"),
    ],
)
def test_primary_rejects_bad_values_naming_the_variable(env, variable):
    with pytest.raises(ConfigError, match=f"^{variable}:"):
        PrimaryConfig.from_env(env)


@pytest.mark.parametrize("raw, log_format", [("", "text"), ("text", "text"), ("json", "json"), ("JSON", "json")])
def test_log_format_is_text_unless_json_is_asked_for(raw, log_format):
    assert PrimaryConfig.from_env({"LOG_FORMAT": raw}).log_format == log_format
    assert SecondaryConfig.from_env({"LOG_FORMAT": raw}).log_format == log_format


def test_majority():
    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_secondary_config():
    config = SecondaryConfig.from_env(
        {"REPLICATION_BIND": "tcp://*:7000", "REPLICATION_DELAY": "0.5-2", "NODE_NAME": "s9",
         "PRIMARY_URL": "http://primary.example:8000/"}
    )
    assert config.replication_bind == "tcp://*:7000"
    assert config.replication_delay == DelayRange(0.5, 2.0)
    assert config.node_name == "s9"
    assert config.primary_url == "http://primary.example:8000"
    assert SecondaryConfig.from_env({}).primary_url == ""


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"REPLICATION_BIND": "0.0.0.0:5555"}, "REPLICATION_BIND"),
        ({"REPLICATION_DELAY": "-1"}, "REPLICATION_DELAY"),
        ({"REPLICATION_DELAY": "3-1"}, "REPLICATION_DELAY"),
        ({"REPLICATION_DELAY": "soon"}, "REPLICATION_DELAY"),
        ({"REPLICATION_DELAY": "nan"}, "REPLICATION_DELAY"),
        ({"FAULT_DROP_ACKS": "1.5"}, "FAULT_DROP_ACKS"),
        ({"NODE_NAME": "has space"}, "NODE_NAME"),
        ({"MAX_AHEAD": "0"}, "MAX_AHEAD"),
        ({"HTTP_HOST": "1.2.3.4.5"}, "HTTP_HOST"),
        ({"PRIMARY_URL": "localhost:8000"}, "PRIMARY_URL"),
        ({"PRIMARY_URL": "ftp://primary"}, "PRIMARY_URL"),
        ({"PRIMARY_URL": 'http://primary/"><script>'}, "PRIMARY_URL"),
    ],
)
def test_secondary_rejects_bad_values_naming_the_variable(env, variable):
    with pytest.raises(ConfigError, match=f"^{variable}:"):
        SecondaryConfig.from_env(env)


def test_delay_draws_per_message_within_the_range():
    rng = random.Random(7)
    fixed = delay("D", "1.5")
    assert fixed.draw(rng) == 1.5 and bool(fixed)
    ranged = delay("D", "0.1-0.2")
    draws = {ranged.draw(rng) for _ in range(200)}
    assert all(0.1 <= d <= 0.2 for d in draws) and len(draws) > 100
    assert not delay("D", "0")


def test_the_port_file_is_replaced_whole(tmp_path):
    path = tmp_path / "ports.json"
    path.write_text("stale")
    write_port_file(str(path), {"http": "http://127.0.0.1:1234"})
    assert json.loads(path.read_text()) == {"http": "http://127.0.0.1:1234"}
    assert [p.name for p in tmp_path.iterdir()] == ["ports.json"], "no temporary file is left"


def test_host_names_and_addresses_are_accepted():
    for host in ("127.0.0.1", "::1", "0.0.0.0", "localhost", "primary-1.example"):
        assert PrimaryConfig.from_env({"HTTP_HOST": host}).http_host == host


@pytest.mark.parametrize("variable, make", [
    ("DATA_DIR", lambda tmp: tmp / "a-file"),  # a file, not a directory
    ("DATA_DIR", lambda tmp: tmp / "a-file" / "below"),  # cannot be created
])
def test_an_unusable_data_dir_names_the_variable(tmp_path, variable, make):
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(ConfigError, match=f"^{variable}:"):
        SecondaryConfig.from_env({variable: str(make(tmp_path))})


def test_a_missing_data_dir_is_created(tmp_path):
    wanted = tmp_path / "new" / "data"
    assert PrimaryConfig.from_env({"DATA_DIR": str(wanted)}).data_dir == str(wanted)
    assert wanted.is_dir()


@pytest.mark.parametrize("role, env", [("primary", "HTTP_PORT=abc"), ("secondary", "REPLICATION_DELAY=x"),
                                       ("primary", "HTTP_HOST=999.1.1.1")])
def test_process_exits_non_zero_with_a_one_line_message(role, env):
    name, value = env.split("=")
    result = subprocess.run(
        [sys.executable, "-m", role], cwd=REPO, env={name: value}, capture_output=True,
        text=True, timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr
