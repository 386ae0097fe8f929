"""API_TOKEN / API_TOKEN_FILE: both apps' data routes need the bearer token;
/health and /openapi.json stay open; the token never shows."""

from __future__ import annotations

import logging

import pytest
import webtest

from primary import openapi as primary_openapi
from primary.config import PrimaryConfig
from secondary import openapi as secondary_openapi
from secondary.api import make_app as make_secondary_app
from secondary.config import SecondaryConfig
from shared.runtime.bearer import ApiToken
from shared.runtime.config import ConfigError
from shared.web.api_token import OPEN_PATHS
from tests.support.documents import messages_of

TOKEN = "s3cr3t-token-value"
RIGHT = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def guarded(make_inprocess_cluster):
    """A primary with the token, and s1's app with it too."""
    cluster = make_inprocess_cluster(api_token=ApiToken(TOKEN.encode()))
    s1 = cluster.secondaries["s1"]
    secondary = webtest.TestApp(make_secondary_app(
        s1.node, SecondaryConfig(node_name="s1", api_token=ApiToken(TOKEN.encode()))
    ))
    return cluster, secondary


def refused(response, error_word: str) -> None:
    assert response.status_int == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert error_word in response.json["error"]
    assert TOKEN not in response.text


@pytest.mark.parametrize("headers, error_word", [
    ({}, "needs a bearer token"),
    ({"Authorization": "Bearer wrong"}, "wrong bearer token"),
    ({"Authorization": f"Bearer {TOKEN}x"}, "wrong bearer token"),
    ({"Authorization": f"Basic {TOKEN}"}, "needs a bearer token"),
    ({"Authorization": "Bearer "}, "needs a bearer token"),
    # Bytes that are not UTF-8, and UTF-8 beyond latin-1 (WSGI hands both over as latin-1 text).
    ({"Authorization": "Bearer \xff"}, "wrong bearer token"),
    ({"Authorization": "Bearer " + "€".encode().decode("latin-1")}, "wrong bearer token"),
])
def test_an_append_without_the_right_token_is_401_and_appends_nothing(guarded, headers, error_word):
    cluster, secondary = guarded
    refused(cluster.post({"message": "m", "w": 1}, headers=headers), error_word)
    refused(cluster.app.get("/messages", headers=headers, expect_errors=True), error_word)
    refused(cluster.app.get("/metrics", headers=headers, expect_errors=True), error_word)
    refused(secondary.get("/metrics", headers=headers, expect_errors=True), error_word)
    assert cluster.message_count == 0


def test_the_right_token_appends_and_reads(guarded):
    cluster, secondary = guarded
    response = cluster.post({"message": "m", "w": 3}, headers=RIGHT)
    assert response.status_int == 201, response.text
    assert cluster.app.get("/messages", headers=RIGHT).json == {"messages": ["m"], "first_id": 0}
    lower_case = {"Authorization": f"bearer {TOKEN}"}
    assert secondary.get("/messages", headers=lower_case).json == {"messages": ["m"], "first_id": 0}


def test_a_secondary_s_reads_need_the_token_too(guarded):
    cluster, secondary = guarded
    cluster.post({"message": "m", "w": 3}, headers=RIGHT)
    refused(secondary.get("/messages", expect_errors=True), "needs a bearer token")
    refused(secondary.get("/messages", headers={"Authorization": "Bearer nope"}, expect_errors=True),
            "wrong bearer token")
    assert messages_of(cluster.secondaries["s1"].log) == ["m"]


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_health_and_the_api_description_stay_open(guarded, path):
    cluster, secondary = guarded
    assert cluster.app.get(path).status_int == 200
    assert secondary.get(path).status_int == 200


def test_every_other_route_is_guarded(guarded):
    cluster, secondary = guarded
    for app in (cluster.app, secondary):
        for route in app.app.routes:
            if route.rule not in OPEN_PATHS:
                response = app.request(route.rule, method=route.method, expect_errors=True)
                assert response.status_int == 401, (route.method, route.rule)


def test_the_served_documents_declare_the_scheme_only_with_a_token(guarded, cluster):
    guarded_cluster, secondary = guarded
    assert guarded_cluster.app.get("/openapi.json").json == primary_openapi.spec(3, bearer=True)
    assert secondary.get("/openapi.json").json == secondary_openapi.spec(bearer=True)
    document = primary_openapi.spec(3, bearer=True)
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    append = document["paths"]["/messages"]["post"]
    assert append["security"] == [{"bearerAuth": []}] and "401" in append["responses"]
    assert "security" not in document["paths"]["/health"]["get"]
    assert "securitySchemes" not in cluster.app.get("/openapi.json").json["components"]


def test_the_token_never_reaches_a_log_line(guarded, caplog):
    caplog.set_level(logging.DEBUG)
    cluster, _ = guarded
    cluster.post({"message": "m", "w": 1}, headers={"Authorization": f"Bearer {TOKEN}-wrong"})
    cluster.post({"message": "m", "w": 1}, headers=RIGHT)
    assert TOKEN not in caplog.text


# -- configuration ---------------------------------------------------------------


def test_api_token_and_api_token_file_read_the_same_token(tmp_path):
    secret = tmp_path / "token"
    secret.write_text(f"{TOKEN}\n")  # as `echo` writes a Docker secret
    from_file = SecondaryConfig.from_env({"API_TOKEN_FILE": str(secret)}).bearer_token
    from_env = PrimaryConfig.from_env({"API_TOKEN": TOKEN}).bearer_token
    assert from_file.matches(TOKEN.encode()) and from_env.matches(TOKEN.encode())
    assert PrimaryConfig.from_env({}).bearer_token is None


def test_setting_both_is_an_error(tmp_path):
    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    with pytest.raises(ConfigError, match="API_TOKEN, API_TOKEN_FILE: set at most one"):
        PrimaryConfig.from_env({"API_TOKEN": TOKEN, "API_TOKEN_FILE": str(secret)})


@pytest.mark.parametrize("env, complaint", [
    ({"API_TOKEN": "has a space"}, "API_TOKEN: use visible ASCII"),
    ({"API_TOKEN": "naïve"}, "API_TOKEN: use visible ASCII"),
    ({"API_TOKEN_FILE": "/nonexistent/token"}, "API_TOKEN_FILE: cannot read"),
])
def test_a_bad_token_is_named_but_never_shown(env, complaint):
    with pytest.raises(ConfigError) as error:
        SecondaryConfig.from_env(env)
    assert complaint in str(error.value)
    assert "has a space" not in str(error.value) and "naïve" not in str(error.value)


def test_an_empty_token_file_is_an_error(tmp_path):
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        SecondaryConfig.from_env({"API_TOKEN_FILE": str(empty)})


def test_the_token_has_no_readable_text():
    config = PrimaryConfig.from_env({"API_TOKEN": TOKEN})
    assert TOKEN not in repr(config) and TOKEN not in str(config.bearer_token)
