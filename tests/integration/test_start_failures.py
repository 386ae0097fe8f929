"""A node that cannot bind its ports exits 1 at once, saying which port.

Its I/O thread has started by then: it must be stopped before the zmq Context
is terminated, or term() breaks it off mid-poll and it logs a crash.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import zmq

from tests.support.processes import REPO


def run_node(role: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", role], cwd=REPO, capture_output=True, text=True, timeout=30,
        env={"NO_COLOR": "1", "HTTP_HOST": "127.0.0.1", **env},
    )


def assert_clean_exit(stderr: str) -> None:
    assert " ready: " not in stderr
    assert "crashed" not in stderr and "Traceback" not in stderr, stderr


@pytest.fixture
def taken_tcp_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_a_taken_http_port_exits_1_naming_it(role, taken_tcp_port):
    env = {"HTTP_PORT": str(taken_tcp_port), "REPLICATION_BIND": "tcp://127.0.0.1:0",
           "SECONDARIES": "s1=tcp://127.0.0.1:9"}
    result = run_node(role, env)
    assert result.returncode == 1, result.stderr
    assert f"cannot start: HTTP_PORT {taken_tcp_port}:" in result.stderr
    assert_clean_exit(result.stderr)


def test_a_taken_replication_port_exits_1_naming_it(ctx):
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        result = run_node("secondary", {"HTTP_PORT": "0", "REPLICATION_BIND": f"tcp://127.0.0.1:{port}"})
    finally:
        router.close()
    assert result.returncode == 1, result.stderr
    assert "cannot start: REPLICATION_BIND" in result.stderr
    assert_clean_exit(result.stderr)


def test_an_unwritable_port_file_exits_1_naming_it(tmp_path):
    port_file = tmp_path / "missing-dir" / "ports.json"
    result = run_node("primary", {"HTTP_PORT": "0", "PORT_FILE": str(port_file)})
    assert result.returncode == 1, result.stderr
    assert f"cannot start: PORT_FILE {port_file}:" in result.stderr
    assert_clean_exit(result.stderr)
