"""The OpenAPI documents cannot drift from the routes, the code, or docs/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from primary import openapi as primary_openapi
from shared.web.append_request import BadRequest, parse_append, parse_idempotency_key
from primary.config import PrimaryConfig
from secondary import openapi as secondary_openapi
from shared.web.openapi import render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
SPECS = {"primary": primary_openapi.spec, "secondary": secondary_openapi.spec}


def routes(app) -> set[tuple[str, str]]:
    return {(route.method.lower(), route.rule) for route in app.app.routes}


def documented(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


def test_served_documents_describe_exactly_the_routes(cluster):
    primary = cluster.app.get("/openapi.json").json
    assert primary == primary_openapi.spec(cluster_size=3, bearer=False)
    assert documented(primary) == routes(cluster.app)
    secondary_app = cluster.secondaries["s1"].app
    secondary = secondary_app.get("/openapi.json").json
    assert secondary == secondary_openapi.spec(bearer=False)
    assert documented(secondary) == routes(secondary_app)


def test_the_w_range_follows_the_configured_cluster(make_inprocess_cluster):
    cluster = make_inprocess_cluster(names=("a", "b", "c", "d"), running=())
    document = cluster.app.get("/openapi.json").json
    w = document["components"]["schemas"]["AppendRequest"]["properties"]["w"]
    assert w["oneOf"][0]["maximum"] == 5


def accepted(parse, *args) -> bool:
    try:
        parse(*args)
    except BadRequest:
        return False
    return True


def test_the_documented_limits_are_the_enforced_ones():
    append = primary_openapi.spec()["paths"]["/messages"]["post"]
    (key,) = append["parameters"]
    documented_key = re.compile(key["schema"]["pattern"])
    for candidate in ("k", "k" * 200, "k" * 201, "two words", "caf\u00e9", "\t"):
        assert bool(documented_key.match(candidate)) == accepted(parse_idempotency_key, candidate)
    remembered = PrimaryConfig.from_env({}).idempotency_keys
    assert f"the last {remembered:,} keys" in key["description"]
    timeout = primary_openapi.spec()["components"]["schemas"]["AppendRequest"]["properties"]["timeout"]
    longest = timeout["maximum"]
    assert accepted(parse_append, json.dumps({"message": "m", "timeout": longest}).encode(), 3)
    assert not accepted(parse_append, json.dumps({"message": "m", "timeout": longest + 0.5}).encode(), 3)


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_docs_copies_are_current(role):
    on_disk = (DOCS / f"{role}.json").read_text()
    assert on_disk == render(SPECS[role]()), (
        f"regenerate with: python -m {role}.openapi > docs/openapi/{role}.json"
    )


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_documents_are_valid_openapi(role):
    validate(json.loads(render(SPECS[role]())))
