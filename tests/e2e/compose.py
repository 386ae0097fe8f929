"""Drive the deployment/ compose project from a test: engine check, lifecycle, ports.

Every project gets a unique name, so runs never touch a developer's own
`docker-compose up` or each other, and publishes its HTTP ports on
127.0.0.1 ports picked by Docker, so busy ports 8000-8003 do not matter.
Works with `docker-compose` (v1) or, when that is missing, `docker compose`.
"""

from __future__ import annotations

import http.client
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.http import get_messages
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO / "deployment"
BASE_FILE = DEPLOYMENT / "docker-compose.yml"
FIVE_NODES_FILE = DEPLOYMENT / "docker-compose.five-nodes.yml"
FIXED_ROLE_FILE = DEPLOYMENT / "docker-compose.fixed-role.yml"
#: Installs and starts an engine on the build machines; absent elsewhere.
ENSURE_ENGINE_SCRIPT = REPO.parent / "shared/docker/ensure-engine.sh"
#: Every node listens for HTTP on this port inside its container.
HTTP_PORT_IN_CONTAINER = 8000
#: A cold build downloads the dependencies; the time limit for the whole
#: Docker stage is 5 minutes.
UP_TIMEOUT_S = 300
COMPOSE_TIMEOUT_S = 60
#: The script may install packages and build a base image first.
ENSURE_ENGINE_TIMEOUT_S = 600


def require_docker() -> list[str]:
    """The compose command to use, once an engine answers; fails the test otherwise."""
    attempt = ""
    if not _engine_answers() and ENSURE_ENGINE_SCRIPT.exists():
        attempt = _run_ensure_engine()
    if not _engine_answers():
        pytest.fail(
            f"No usable Docker engine: `docker info` failed.{attempt} "
            "Start Docker, or deselect the Docker tests with -m \"not docker\".",
            pytrace=False,
        )
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if _succeeds(["docker", "compose", "version"]):
        return ["docker", "compose"]
    pytest.fail(
        "Docker answers but neither `docker-compose` nor `docker compose` exists. "
        "Install one, or deselect the Docker tests with -m \"not docker\".",
        pytrace=False,
    )


def _engine_answers() -> bool:
    return _succeeds(["docker", "info"])


def _run_ensure_engine() -> str:
    """Run ENSURE_ENGINE_SCRIPT; how it went, for the failure message."""
    try:
        result = subprocess.run(
            [str(ENSURE_ENGINE_SCRIPT)], capture_output=True, text=True, timeout=ENSURE_ENGINE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return f" {ENSURE_ENGINE_SCRIPT} did not finish within {ENSURE_ENGINE_TIMEOUT_S}s."
    return f" {ENSURE_ENGINE_SCRIPT} exited with {result.returncode}:\n{result.stderr[-2000:]}\n"


def _succeeds(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class ComposeProject:
    """One compose project under a unique name; ``down`` removes all of it."""

    def __init__(self, compose_command: list[str], files: list[Path], env: dict[str, str]) -> None:
        self.name = f"replog-e2e-{secrets.token_hex(4)}"
        self._command = [*compose_command, "-p", self.name]
        for file in files:
            self._command += ["-f", str(file)]
        self._env = env
        self._urls: dict[str, str] = {}

    def compose(self, *args: str, timeout: float = COMPOSE_TIMEOUT_S) -> str:
        """Run one compose subcommand on this project; its stdout."""
        command = [*self._command, *args]
        result = subprocess.run(
            command, cwd=DEPLOYMENT, env=self._env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(
                f"`{' '.join(command)}` exited with {result.returncode}:\n{result.stderr[-5000:]}"
            )
        return result.stdout

    def up(self, *services: str) -> None:
        """Build and start the services, all of them when none are named."""
        self.compose("up", "--build", "-d", *services, timeout=UP_TIMEOUT_S)

    def down(self, keep_volumes: bool = False) -> None:
        """Remove the containers, and the volumes too unless ``keep_volumes``."""
        self._urls.clear()
        self.compose("down", *([] if keep_volumes else ["-v"]), "--remove-orphans")

    def kill(self, *services: str) -> None:
        """SIGKILL the services' containers."""
        self.compose("kill", *services)

    def restart(self, *services: str) -> None:
        for service in services:
            self._urls.pop(service, None)
        self.compose("restart", *services)

    def stop(self, *services: str) -> float:
        """Stop the services (all when none are named); the seconds it took."""
        started = time.monotonic()
        self.compose("stop", *services)
        return time.monotonic() - started

    def start(self, *services: str) -> None:
        # A restarted container gets a new ephemeral host port.
        for service in services:
            self._urls.pop(service, None)
        self.compose("start", *services)

    def url(self, service: str) -> str:
        """Base URL of a service's published HTTP port on the loopback."""
        if service not in self._urls:
            published = self.compose("port", service, str(HTTP_PORT_IN_CONTAINER)).strip()
            host_port = published.rsplit(":", 1)[-1]
            assert host_port.isdigit() and host_port != "0", f"{service}: published as {published!r}"
            self._urls[service] = f"http://127.0.0.1:{host_port}"
        return self._urls[service]

    def container_states(self) -> dict[str, dict]:
        """``docker inspect``'s State of each service's container, by service."""
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}"],
            capture_output=True, text=True, check=True, timeout=COMPOSE_TIMEOUT_S,
        ).stdout.split()
        if not ids:
            return {}
        containers = json.loads(subprocess.run(
            ["docker", "inspect", *ids],
            capture_output=True, text=True, check=True, timeout=COMPOSE_TIMEOUT_S,
        ).stdout)
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c["State"] for c in containers}

    def wait_healthy(self, services: list[str], timeout: float = 60.0) -> None:
        """Wait for Docker's own health checks to pass, failing fast on an exit."""

        def all_healthy() -> bool:
            states = self.container_states()
            for service in services:
                state = states.get(service, {})
                if state.get("Status") in ("exited", "dead"):
                    raise AssertionError(
                        f"{service} exited with {state['ExitCode']}:\n{self.logs(service)}"
                    )
            return all(
                states.get(service, {}).get("Health", {}).get("Status") == "healthy"
                for service in services
            )

        wait_until(all_healthy, timeout, interval=0.5, what=f"{', '.join(services)} to be healthy")

    def exit_codes(self) -> dict[str, int]:
        return {service: state["ExitCode"] for service, state in self.container_states().items()}

    def logs(self, *services: str) -> str:
        return self.compose("logs", "--no-color", *services)


def messages_once_up(url: str) -> list[str] | None:
    """GET /messages, or None while the node is (re)starting and cannot answer."""
    try:
        return get_messages(url)
    except (OSError, http.client.HTTPException):
        return None
