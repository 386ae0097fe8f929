"""The OpenAPI documents cannot drift from the routes, the code, or docs/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from shared.openapi import render, spec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"


def routes(app) -> set[tuple[str, str]]:
    return {(route.method.lower(), route.rule) for route in app.app.routes}


def documented(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


def test_served_documents_describe_exactly_the_routes(cluster):
    primary = cluster.app.get("/openapi.json").json
    assert primary == spec("primary", cluster_size=3)
    assert documented(primary) == routes(cluster.app)
    secondary_app = cluster.secondaries["s1"].app
    secondary = secondary_app.get("/openapi.json").json
    assert secondary == spec("secondary")
    assert documented(secondary) == routes(secondary_app)


def test_the_w_range_follows_the_configured_cluster(make_inprocess_cluster):
    cluster = make_inprocess_cluster(names=("a", "b", "c", "d"), running=())
    document = cluster.app.get("/openapi.json").json
    w = document["components"]["schemas"]["AppendRequest"]["properties"]["w"]
    assert w["oneOf"][0]["maximum"] == 5


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_docs_copies_are_current(role):
    on_disk = (DOCS / f"{role}.json").read_text()
    assert on_disk == render(spec(role)), "regenerate with: python -m shared.openapi docs/openapi"


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_documents_are_valid_openapi(role):
    validate(json.loads(render(spec(role))))
