"""The primary's HTTP API in-process: every validation case, and the success shapes."""

from __future__ import annotations

import json

import pytest

from tests.support.waiting import wait_until


@pytest.fixture
def lonely(make_inprocess_cluster):
    """A primary configured with two secondaries that never come up (and no
    quorum rule), past its recovery: nobody answered, so the cluster is new."""
    cluster = make_inprocess_cluster(running=(), quorum=1)
    cluster.wait_recovered()
    return cluster


def test_append_w3_is_acked_by_everyone(cluster):
    resp = cluster.post({"message": "hi", "w": 3})
    assert resp.status_int == 201 and resp.content_type == "application/json"
    assert resp.json["id"] == 0 and resp.json["w"] == 3 and resp.json["acks"] == 3
    assert resp.json["acked_by"][0] == "primary"
    assert sorted(resp.json["acked_by"][1:]) == ["s1", "s2"]
    for secondary in cluster.secondaries.values():
        assert secondary.app.get("/messages").json == {"messages": ["hi"], "first_id": 0}


def test_ids_are_consecutive(cluster):
    ids = [cluster.post({"message": f"m{i}", "w": 1}).json["id"] for i in range(5)]
    assert ids == [0, 1, 2, 3, 4]
    assert cluster.app.get("/messages").json == {"messages": [f"m{i}" for i in range(5)], "first_id": 0}


@pytest.mark.parametrize(
    "message",
    ["", "emoji 😀🎉", "nul \x00 byte", "new\nline\r\n", 'quotes " and \\ backslash', "\ud800", "x" * 10000],
)
def test_awkward_messages_round_trip_exactly(cluster, message):
    assert cluster.post({"message": message, "w": 3}).status_int == 201
    assert cluster.app.get("/messages").json["messages"] == [message]
    assert cluster.secondaries["s2"].app.get("/messages").json["messages"] == [message]


def test_timeout_answers_504_and_keeps_the_message(lonely):
    resp = lonely.post({"message": "m", "w": 2, "timeout": 0.2})
    assert resp.status_int == 504
    assert resp.json["id"] == 0 and resp.json["w"] == 2
    assert resp.json["acks"] == 1 and resp.json["acked_by"] == ["primary"]
    assert "timed out" in resp.json["error"]
    assert lonely.app.get("/messages").json == {"messages": ["m"], "first_id": 0}


def test_a_timeout_that_runs_out_before_the_primary_takes_the_append_is_504_and_appends_nothing(
        cluster, monkeypatch):
    monkeypatch.setattr(cluster.node, "propose", lambda proposal, at_once=False: False)  # never taken
    resp = cluster.post({"message": "m", "w": 2, "timeout": 0.05})
    assert resp.status_int == 504 and "id" not in resp.json, resp.text
    assert "before the primary took the append; nothing was appended" in resp.json["error"]
    assert resp.headers["Retry-After"] == "1"
    assert cluster.message_count == 0


def test_the_smallest_timeout_gets_504_whether_or_not_the_primary_took_the_append(
        make_inprocess_cluster, tmp_path):
    """A durable primary: every append waits for node-io, which may or may not
    take it before its timeout of 5e-324 s runs out."""
    cluster = make_inprocess_cluster(data_dir=str(tmp_path))
    cluster.wait_recovered()
    answers = [cluster.post({"message": f"m{n}", "w": 1, "timeout": 5e-324}) for n in range(10)]
    assert {a.status_int for a in answers} == {504}, [a.text for a in answers]
    taken = [a.json["id"] for a in answers if "id" in a.json]
    assert taken == list(range(len(taken)))
    after = cluster.post({"message": "after", "w": 1})
    assert after.json["id"] == len(taken), "an append answered without an id was appended"


@pytest.mark.parametrize(
    "names, error",
    [
        (("a",), "write concern 'w' must be between 1 and 2 (1 + 1 secondary), got 3"),
        ((), "write concern 'w' must be between 1 and 1 (1 + 0 secondaries), got 3"),
    ],
)
def test_the_w_range_error_counts_the_configured_secondaries(make_inprocess_cluster, names, error):
    cluster = make_inprocess_cluster(names=names, running=())
    resp = cluster.post({"message": "m", "w": 3})
    assert resp.status_int == 400 and resp.json == {"error": error}
    assert cluster.message_count == 0


def test_w1_does_not_need_any_secondary(lonely):
    resp = lonely.post({"message": "m", "w": 1})
    assert resp.status_int == 201 and resp.json["acked_by"] == ["primary"]


W_TYPE = "write concern 'w' must be an integer, \"all\" or \"majority\""
BAD_BODIES = [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "not valid JSON"),
    (b"\xff\xfe\xfd", 400, "UTF-8"),
    (b"[" * 100000, 400, "JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'"just a string"', 400, "JSON object"),
    (b"null", 400, "JSON object"),
    (b"{}", 400, "'message' (or 'messages', for a batch) is required"),
    (b'{"message": null}', 400, "'message' must be a string, got null"),
    (b'{"message": 5}', 400, "'message' must be a string"),
    (b'{"message": ["a"]}', 400, "'message' must be a string"),
    (b'{"message": true}', 400, "'message' must be a string"),
    (b'{"message": "m", "w": 0}', 400, "write concern 'w' must be between 1 and 3 (1 + 2 secondaries), got 0"),
    (b'{"message": "m", "w": -1}', 400, "write concern 'w' must be between 1 and 3 (1 + 2 secondaries), got -1"),
    (b'{"message": "m", "w": 4}', 400, "write concern 'w' must be between 1 and 3 (1 + 2 secondaries), got 4"),
    (b'{"message": "m", "w": 2.0}', 400, W_TYPE),
    (b'{"message": "m", "w": 1.5}', 400, W_TYPE),
    (b'{"message": "m", "w": true}', 400, f"{W_TYPE}, got a boolean"),
    (b'{"message": "m", "w": false}', 400, f"{W_TYPE}, got a boolean"),
    (b'{"message": "m", "w": "most"}', 400, f"{W_TYPE}, got the string 'most'"),
    (b'{"message": "m", "w": "2"}', 400, W_TYPE),
    (b'{"message": "m", "w": null}', 400, W_TYPE),
    (b'{"message": "m", "timeout": -1}', 400, "'timeout'"),
    (b'{"message": "m", "timeout": 0}', 400, "'timeout'"),
    (b'{"message": "m", "timeout": "5"}', 400, "'timeout'"),
    (b'{"message": "m", "timeout": true}', 400, "'timeout'"),
    (b'{"message": "m", "timeout": 3601}', 400, "'timeout'"),
    (b'{"message": "m", "timeout": 1e400}', 400, "'timeout'"),
    (b'{"message": "m", "timeout": NaN}', 400, "'timeout'"),
    (b'{"message": "m", "timeout": 1' + b"0" * 400 + b"}", 400, "at most 3600 seconds"),
    (b'{"message": "m", "W": 1}', 400, "unknown field(s) 'W'"),
    (b'{"message": "m", "timout": 1}', 400, "unknown field(s) 'timout'"),
]


@pytest.mark.parametrize("body, status, error", BAD_BODIES)
def test_bad_bodies_get_a_clear_4xx_and_append_nothing(cluster, body, status, error):
    resp = cluster.post(body)
    assert resp.status_int == status
    assert resp.content_type == "application/json"
    assert error in resp.json["error"]
    assert cluster.message_count == 0


@pytest.mark.parametrize(
    "content_type", ["text/plain", "multipart/form-data; boundary=x", "application/xml", "text/json"]
)
def test_a_content_type_that_is_not_json_is_415(cluster, content_type):
    resp = cluster.post({"message": "m"}, content_type=content_type)
    assert resp.status_int == 415 and "application/json" in resp.json["error"]
    assert cluster.message_count == 0


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.api+json", ""])
def test_json_types_and_none_are_read_as_json(cluster, content_type):
    assert cluster.post({"message": "m", "w": 1}, content_type=content_type).status_int == 201
    assert cluster.app.get("/messages").json == {"messages": ["m"], "first_id": 0}


def test_curls_default_form_type_with_a_json_body_appends_as_json_would(cluster):
    """``curl -d '{"message": "hi", "w": 2}' .../messages``, as people type it."""
    resp = cluster.post(
        b'{"message": "hi", "w": 2}', content_type="application/x-www-form-urlencoded"
    )
    assert resp.status_int == 201 and resp.json["id"] == 0 and resp.json["w"] == 2
    assert cluster.app.get("/messages").json == {"messages": ["hi"], "first_id": 0}


@pytest.mark.parametrize("body", [b"message=hi&w=2", b"", b"\xff"])
def test_curls_default_form_type_without_json_is_400_naming_the_type(cluster, body):
    resp = cluster.post(body, content_type="application/x-www-form-urlencoded")
    assert resp.status_int == 400
    error = resp.json["error"]
    assert error.startswith("body is not valid ")
    assert "application/x-www-form-urlencoded" in error and "not form fields" in error
    assert cluster.message_count == 0


def test_the_form_type_hint_is_only_given_under_the_form_type(cluster):
    resp = cluster.post(b"message=hi")
    assert resp.status_int == 400 and "form" not in resp.json["error"]


def test_body_over_the_limit_is_413_and_the_server_goes_on(make_inprocess_cluster):
    cluster = make_inprocess_cluster(max_body_bytes=1000)
    resp = cluster.post({"message": "x" * 2000, "w": 1})
    assert resp.status_int == 413 and "1000-byte limit" in resp.json["error"]
    assert cluster.message_count == 0
    assert cluster.post({"message": "x" * 900, "w": 1}).status_int == 201


def test_unknown_path_and_wrong_method_answer_json(cluster):
    missing = cluster.app.get("/nope", expect_errors=True)
    assert missing.status_int == 404 and missing.json == {"error": "no such endpoint"}
    wrong = cluster.app.delete("/messages", expect_errors=True)
    assert wrong.status_int == 405 and "allowed" in wrong.json["error"]
    assert "GET" in wrong.headers["Allow"] and "POST" in wrong.headers["Allow"]


def test_health_lists_each_secondary(cluster):
    cluster.post({"message": "m", "w": 3})
    health = cluster.app.get("/health").json
    assert health["role"] == "primary" and health["length"] == 1
    assert [s["name"] for s in health["secondaries"]] == ["s1", "s2"]
    for secondary in health["secondaries"]:
        assert secondary["acked_length"] == 1 and secondary["lag"] == 0
        assert secondary["state"] == "healthy"


def test_health_names_the_history_and_the_run_on_both_roles(cluster):
    cluster.post({"message": "m", "w": 3})
    primary = cluster.app.get("/health").json
    assert primary["history"] is not None and primary["run"] == primary["term"] == 1
    assert (primary["committed"], primary["first_id"], primary["recovering"]) == (1, 0, False)
    s1_app = cluster.secondaries["s1"].app
    s1 = wait_until(lambda: (health := s1_app.get("/health").json)["committed"] == 1 and health,
                    what="s1 to learn the commit")
    assert (s1["history"], s1["run"], s1["term"], s1["primary"]) == (primary["history"], 1, 1, "primary")
    assert (s1["first_id"], s1["held_past_gap"], s1["waiting"]) == (0, 0, 0)


def test_secondary_api_reads_and_refuses_writes(cluster):
    cluster.post({"message": "m", "w": 3})
    s1 = cluster.secondaries["s1"].app
    assert s1.get("/messages").json == {"messages": ["m"], "first_id": 0}
    health = s1.get("/health").json
    assert health["role"] == "secondary" and health["length"] == 1 and health["node"] == "s1"
    refused = s1.post("/messages", json.dumps({"message": "x"}), expect_errors=True)
    assert refused.status_int == 405 and refused.content_type == "application/json"


def test_health_answers_503_once_replication_has_stopped(cluster):
    assert cluster.app.get("/health").json["status"] == "ok"
    cluster.node.stop()
    down = cluster.app.get("/health", expect_errors=True)
    assert down.status_int == 503 and down.json["status"] == "replication stopped"
    secondary = cluster.secondaries["s1"]
    secondary.node.stop()
    assert secondary.app.get("/health", expect_errors=True).status_int == 503


def test_an_idempotency_key_that_is_not_ascii_is_a_400_not_a_500(cluster):
    resp = cluster.post({"message": "m", "w": 1}, headers={"Idempotency-Key": "caf\xe9"})
    assert resp.status_int == 400 and "Idempotency-Key" in resp.json["error"]
    assert cluster.app.get("/messages").json == {"messages": [], "first_id": 0}
