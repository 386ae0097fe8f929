"""The Docker deployment end to end: deployment/ built and started by compose,
then driven through its published HTTP ports as a user would: the failover
cluster of the README's tour, the five-node override, and the fixed roles.

Needs a Docker engine; deselect with -m "not docker" where there is none.
"""

from __future__ import annotations

import http.client
import time

import pytest

from tests.e2e.compose import FIVE_NODES_FILE, FIXED_ROLE_FILE, messages_once_up
from tests.support.http import get_health, get_messages, post_message, request
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
#: From the primary's stop to a new one taking writes: the README says "within ~2 s";
#: this leaves room for a loaded machine.
FAILOVER_LIMIT_S = 10.0


def health_once_up(url: str) -> dict | None:
    try:
        return get_health(url)
    except (OSError, http.client.HTTPException, AssertionError):
        return None


def committed(url: str) -> list[str]:
    response = request("GET", f"{url}/messages?committed=true")
    assert response.status == 200, response.body
    return response.json["messages"]


def append_once_a_primary_takes_it(url: str, message: str, w, deadline_s: float = 20.0, **headers):
    """POST until it is not a 503 "no primary" (nothing appended): an election may be under way."""
    def answered():
        response = post_message(url, message, w=w, timeout=10, headers=headers or None)
        refused = response.status == 503 and "id" not in response.json
        return None if refused else response

    return wait_until(answered, deadline_s, interval=0.2, what=f"a primary to take {message!r}")


@pytest.mark.docker
def test_the_failover_tour_stop_the_primary_append_through_a_secondary_start_it_again(start_project):
    project = start_project(SECONDARY_2_DELAY=f"{SECONDARY_2_DELAY_S:g}")
    project.wait_healthy(NODES)
    urls = {node: project.url(node) for node in NODES}
    # Replication runs on the certificates the one-shot `keys` service made.
    assert project.exit_codes()["keys"] == 0
    for node in NODES:
        log = project.logs(node)
        assert "replication channel: CURVE" in log and "unauthenticated" not in log, node
        assert "\x1b[" not in log, f"{node}: `logs --no-color` shows escape codes"
    # A fresh cluster's first primary is `primary`, which stands at once.
    first = wait_until(lambda: (h := health_once_up(urls["primary"])) and h["role"] == "primary" and h,
                       15, what="primary to be elected")
    assert first["term"] >= 1 and first["mode"] == "failover"

    # w=1 answers at once; the delayed secondary-2 does not have it yet.
    quick = post_message(urls["primary"], "m0", w=1)
    assert quick.status == 201 and quick.json["id"] == 0, quick.body
    assert quick.elapsed < 1.0
    assert get_messages(urls["secondary-2"]) == []  # the inconsistency window
    wait_until(lambda: get_messages(urls["secondary-1"]) == get_messages(urls["secondary-2"]) == ["m0"],
               15, what="both secondaries to converge")
    # w=3 waits for the delayed secondary too; a secondary forwards it.
    everyone = post_message(urls["secondary-1"], "m1", w=3)
    assert everyone.status == 201 and everyone.headers["Served-By"] == "primary", everyone.body
    assert sorted(everyone.json["acked_by"]) == NODES
    assert everyone.elapsed >= SECONDARY_2_DELAY_S - TIMING_MARGIN_S

    # The primary's machine is gone: the other two elect one of themselves.
    project.stop("primary")
    stopped_at = time.monotonic()
    assert project.exit_codes()["primary"] == 0
    after = wait_until(
        lambda: (h := health_once_up(urls["secondary-1"])) and h["primary"] in ("secondary-1", "secondary-2")
        and h["term"] > first["term"] and h,
        FAILOVER_LIMIT_S, interval=0.1, what="a new primary among the secondaries")
    still = append_once_a_primary_takes_it(urls["secondary-1"], "still writable", w=2)
    took = time.monotonic() - stopped_at
    assert still.status == 201 and still.json["id"] == 2, still.body
    assert still.headers["Served-By"] == after["primary"]
    assert took < FAILOVER_LIMIT_S, f"writes resumed {took:.1f}s after the stop"

    # It comes back as a secondary of the new primary, and catches up.
    project.start("primary")
    urls["primary"] = project.url("primary")
    expected = ["m0", "m1", "still writable"]
    wait_until(lambda: (h := health_once_up(urls["primary"])) and h["role"] == "secondary"
               and h["primary"] == after["primary"] and h["committed"] == 3, 30, interval=0.2,
               what="primary to rejoin as a secondary and catch up")
    assert committed(urls["primary"]) == expected
    for node in NODES:
        wait_until(lambda: messages_once_up(urls[node]) == expected, 15, interval=0.2, what=node)
        assert committed(urls[node]) == expected, node

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
        # Through `primary`, whatever role it has now: a secondary forwards.
        resp = append_once_a_primary_takes_it(project.url("primary"), message, w=3)
        assert resp.status == 201, resp.body
        assert resp.json["id"] == len(expected), "ids continue where they were"
        expected.append(message)
        for node in NODES:
            wait_until(lambda: messages_once_up(project.url(node)) == expected, 10, interval=0.2, what=node)

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
def test_the_five_node_override_makes_a_cluster_of_five_and_api_token_guards_every_node(start_project):
    nodes = [*NODES, "secondary-3", "secondary-4"]
    project = start_project(FIVE_NODES_FILE, API_TOKEN=API_TOKEN)
    project.wait_healthy(nodes)  # /health needs no token

    assert post_message(project.url("secondary-4"), "no token", w=1).status == 401
    resp = append_once_a_primary_takes_it(project.url("secondary-4"), "to all five", w="all", **AUTHORIZATION)
    assert resp.status == 201, resp.body
    assert resp.json["w"] == 5 and sorted(resp.json["acked_by"]) == sorted(nodes)
    majority = post_message(project.url("secondary-3"), "to three", w="majority", headers=AUTHORIZATION)
    assert majority.status == 201 and majority.json["w"] == 3, majority.body
    for node in nodes:
        url = f"{project.url(node)}/messages"
        assert request("GET", url).status == 401, node
        wait_until(lambda: request("GET", url, headers=AUTHORIZATION).json
                   == {"messages": ["to all five", "to three"], "first_id": 0}, 10, what=node)
        assert API_TOKEN not in project.logs(node), node


@pytest.mark.docker
def test_the_fixed_role_override_replicates_from_a_fixed_primary_and_recovers_a_secondary(start_project):
    project = start_project(FIXED_ROLE_FILE, SECONDARY_2_DELAY=f"{SECONDARY_2_DELAY_S:g}")
    project.wait_healthy(NODES)
    primary, secondary_1, secondary_2 = (project.url(node) for node in NODES)
    assert get_health(primary)["role"] == "primary" and "mode" not in get_health(primary)
    ids = []

    # w=1 answers at once; the delayed secondary-2 does not have it yet.
    quick = post_message(primary, "m0", w=1)
    assert quick.status == 201, quick.body
    assert quick.elapsed < 1.0
    ids.append(quick.json["id"])
    assert get_messages(secondary_2) == []  # the inconsistency window
    wait_until(lambda: get_messages(secondary_1) == get_messages(secondary_2) == ["m0"],
               15, what="both secondaries to converge")

    # w=3 waits for the delayed secondary too; a secondary takes no writes.
    everyone = post_message(primary, "m1", w=3)
    assert everyone.status == 201, everyone.body
    assert everyone.json["acks"] == 3 and sorted(everyone.json["acked_by"]) == NODES
    assert everyone.elapsed >= SECONDARY_2_DELAY_S - TIMING_MARGIN_S
    ids.append(everyone.json["id"])
    assert post_message(secondary_1, "refused", w=1).status == 405

    # With secondary-2 stopped, w=2 is still met by the primary and secondary-1.
    project.stop("secondary-2")
    for n in range(2, 5):
        resp = post_message(primary, f"m{n}", w=2)
        assert resp.status == 201, resp.body
        assert resp.json["acked_by"] == ["primary", "secondary-1"]
        ids.append(resp.json["id"])

    # Restarted, secondary-2 reloads its log and is sent what it missed.
    expected = [f"m{n}" for n in range(5)]
    project.start("secondary-2")
    secondary_2 = project.url("secondary-2")
    wait_until(lambda: messages_once_up(secondary_2) == expected, 30, interval=0.2,
               what="restarted secondary-2 to catch up with the primary")
    assert ids == list(range(5))
    assert get_messages(primary) == get_messages(secondary_1) == get_messages(secondary_2) == expected
    took = project.stop()
    assert project.exit_codes() == {node: 0 for node in ["keys", *NODES]}
    assert took < STOP_LIMIT_S, f"`stop` took {took:.1f}s"


@pytest.mark.docker
def test_with_the_fixed_roles_the_primary_serves_before_any_secondary_exists(start_project):
    # With the default quorum (2 of 3) a primary that never hears from its
    # secondaries turns read-only after a few heartbeats; this test is about
    # start order, so it takes quorum out of the picture.
    project = start_project(FIXED_ROLE_FILE, services=("primary",), QUORUM="1")
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
        wait_until(lambda: messages_once_up(url) == ["before the secondaries"], 30, interval=0.2,
                   what=f"{node}, started later, to catch up")
