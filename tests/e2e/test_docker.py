"""The Docker deployment end to end: deployment/ built and started by compose,
then driven through its published HTTP ports as a user would.

Needs a Docker engine; deselect with -m "not docker" where there is none.
"""

from __future__ import annotations

import pytest

from tests.e2e.compose import THREE_SECONDARIES_FILE, messages_once_up
from tests.support.http import get_messages, post_message, request
from tests.support.waiting import wait_until

NODES = ["primary", "secondary-1", "secondary-2"]
#: Shorter than the shipped 3 s to keep the test quick, long enough to observe.
SECONDARY_2_DELAY_S = 2.0
#: Slack for timings on a loaded machine.
TIMING_MARGIN_S = 0.5
API_TOKEN = "e2e-token-5b1d"
AUTHORIZATION = {"Authorization": f"Bearer {API_TOKEN}"}
#: Docker's default grace period is 10 s; a clean SIGTERM exit takes about 1.
STOP_LIMIT_S = 5.0


@pytest.mark.docker
def test_the_compose_cluster_replicates_recovers_a_restarted_secondary_and_stops_on_sigterm(
    start_project,
):
    project = start_project(SECONDARY_2_DELAY=f"{SECONDARY_2_DELAY_S:g}")
    project.wait_healthy(NODES)
    primary, secondary_1, secondary_2 = (project.url(node) for node in NODES)
    # Replication runs on the certificates the one-shot `keys` service made.
    assert project.exit_codes()["keys"] == 0
    for node in NODES:
        log = project.logs(node)
        assert "replication channel: CURVE" in log and "unauthenticated" not in log, node
    ids = []

    # w=1 answers at once; the delayed secondary-2 does not have it yet.
    quick = post_message(primary, "m0", w=1)
    assert quick.status == 201, quick.body
    assert quick.elapsed < 1.0
    ids.append(quick.json["id"])
    assert get_messages(primary) == ["m0"]
    assert get_messages(secondary_2) == []  # the inconsistency window
    wait_until(
        lambda: get_messages(secondary_1) == get_messages(secondary_2) == ["m0"],
        15, what="both secondaries to converge",
    )

    # w=3 waits for the delayed secondary too.
    everyone = post_message(primary, "m1", w=3)
    assert everyone.status == 201, everyone.body
    assert everyone.json["acks"] == 3 and sorted(everyone.json["acked_by"]) == NODES
    assert everyone.elapsed >= SECONDARY_2_DELAY_S - TIMING_MARGIN_S
    ids.append(everyone.json["id"])

    # With secondary-2 stopped, w=2 is still met by the primary and secondary-1.
    project.stop("secondary-2")
    assert project.exit_codes()["secondary-2"] == 0
    for n in range(2, 5):
        resp = post_message(primary, f"m{n}", w=2)
        assert resp.status == 201, resp.body
        assert resp.json["acked_by"] == ["primary", "secondary-1"]
        ids.append(resp.json["id"])

    # Restarted, secondary-2 reloads its log and is sent what it missed.
    expected = [f"m{n}" for n in range(5)]
    project.start("secondary-2")
    secondary_2 = project.url("secondary-2")
    wait_until(
        lambda: messages_once_up(secondary_2) == expected,
        30, interval=0.2, what="restarted secondary-2 to catch up with the primary",
    )
    assert ids == list(range(5))
    assert get_messages(primary) == get_messages(secondary_1) == get_messages(secondary_2) == expected

    # Every node exits 0 on `docker stop`'s SIGTERM, well within the grace
    # period; 137 would mean Docker gave up waiting and sent SIGKILL.
    took = project.stop()
    assert project.exit_codes() == {node: 0 for node in ["keys", *NODES]}
    assert took < STOP_LIMIT_S, f"`stop` took {took:.1f}s"


@pytest.mark.docker
def test_every_message_survives_restarts_kills_and_down_up_of_the_primary(start_project):
    project = start_project(SECONDARY_2_DELAY="0")
    project.wait_healthy(NODES)
    expected = []

    def append_and_check(message):
        resp = post_message(project.url("primary"), message, w=3, timeout=20)
        assert resp.status == 201, resp.body
        assert resp.json["id"] == len(expected), "ids continue where they were"
        expected.append(message)
        for node in NODES:
            assert get_messages(project.url(node)) == expected, node

    append_and_check("before")
    project.restart("primary")
    project.wait_healthy(["primary"])
    assert messages_once_up(project.url("primary")) == expected
    append_and_check("after a restart")

    project.kill("primary")
    project.start("primary")
    project.wait_healthy(["primary"])
    assert messages_once_up(project.url("primary")) == expected
    append_and_check("after a kill")

    project.down(keep_volumes=True)
    project.up()
    project.wait_healthy(NODES)
    # The keys survived in their volume, and the `keys` service kept them.
    assert "kept the existing pairs" in project.logs("keys")
    for node in NODES:
        url = project.url(node)
        wait_until(lambda: messages_once_up(url) == expected, 30, interval=0.2,
                   what=f"{node} to come back with its messages")
    append_and_check("after down and up")


@pytest.mark.docker
def test_the_override_file_adds_a_third_secondary_and_api_token_guards_every_node(start_project):
    nodes = [*NODES, "secondary-3"]
    project = start_project(THREE_SECONDARIES_FILE, API_TOKEN=API_TOKEN)
    project.wait_healthy(nodes)  # /health needs no token

    assert post_message(project.url("primary"), "no token", w=1).status == 401
    resp = post_message(project.url("primary"), "to all four", w="all", headers=AUTHORIZATION)
    assert resp.status == 201, resp.body
    assert resp.json["w"] == 4 and sorted(resp.json["acked_by"]) == nodes
    for node in nodes:
        url = f"{project.url(node)}/messages"
        assert request("GET", url).status == 401, node
        assert request("GET", url, headers=AUTHORIZATION).json == {"messages": ["to all four"]}, node
        assert API_TOKEN not in project.logs(node), node


@pytest.mark.docker
def test_the_primary_serves_before_any_secondary_exists(start_project):
    # With the default quorum (2 of 3) a primary that never hears from its
    # secondaries turns read-only after a few heartbeats; this test is about
    # start order, so it takes quorum out of the picture.
    project = start_project(services=("primary",), QUORUM="1")
    project.wait_healthy(["primary"])
    # Nothing may pull the secondaries in (a depends_on, say): the primary
    # must come up, and take writes, on its own. Only the one-shot `keys`
    # service runs before it.
    assert set(project.container_states()) == {"keys", "primary"}
    resp = post_message(project.url("primary"), "before the secondaries", w=1)
    assert resp.status == 201, resp.body

    project.up()
    for node in NODES[1:]:
        url = project.url(node)
        wait_until(
            lambda: messages_once_up(url) == ["before the secondaries"],
            30, interval=0.2, what=f"{node}, started later, to catch up",
        )
