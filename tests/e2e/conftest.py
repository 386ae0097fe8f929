"""Fixtures of the Docker end-to-end tests: an engine, and compose projects
that are always torn down."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.compose import BASE_FILE, ComposeProject, require_docker

#: Host ports are Docker's pick on the loopback, so the tests never collide
#: with whatever already listens on 8000-8003.
ANY_LOOPBACK_PORT = "127.0.0.1:0"


@pytest.fixture(scope="session")
def compose_command() -> list[str]:
    return require_docker()


@pytest.fixture
def start_project(compose_command, request):
    """Build and start deployment/docker-compose.yml (plus override files).

    ``start(*override_files, services=(), **settings)`` starts the named
    services only, or all, and takes compose variables such as
    SECONDARY_2_DELAY="2". Every project is removed with ``down -v`` after
    the test, passed or failed; on failure its logs are printed first."""
    projects: list[ComposeProject] = []

    def start(*override_files: Path, services: tuple[str, ...] = (), **settings: str) -> ComposeProject:
        env = {
            **os.environ,
            "PRIMARY_HTTP_PORT": ANY_LOOPBACK_PORT,
            "SECONDARY_1_HTTP_PORT": ANY_LOOPBACK_PORT,
            "SECONDARY_2_HTTP_PORT": ANY_LOOPBACK_PORT,
            "SECONDARY_3_HTTP_PORT": ANY_LOOPBACK_PORT,
            "SECONDARY_4_HTTP_PORT": ANY_LOOPBACK_PORT,
            # Pinned, so what a developer exported cannot change the test.
            "SECONDARY_1_DELAY": "0",
            "SECONDARY_2_DELAY": "0",
            "SECONDARY_3_DELAY": "0",
            "SECONDARY_4_DELAY": "0",
            "LOG_LEVEL": "INFO",
            "QUORUM": "",
            "API_TOKEN": "",
            **settings,
        }
        project = ComposeProject(compose_command, [BASE_FILE, *override_files], env)
        projects.append(project)  # before `up`, so a half-started project is removed too
        project.up(*services)
        return project

    try:
        yield start
    finally:
        test_failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
        for project in projects:
            try:
                if test_failed:
                    print(f"\n===== logs of compose project {project.name} =====\n{project.logs()[-20000:]}")
            finally:
                project.down()
