"""What both roles' OpenAPI 3 documents share, and how one is assembled.

Each role builds its own document from these pieces, next to the code that
owns its rules: ``primary.openapi`` (appends, whose limits it imports from
the validator) and ``secondary.openapi``. Each process serves its own at
``GET /openapi.json``. A node with an API token declares the bearer scheme,
and the 401, on every operation outside shared.web.api_token.OPEN_PATHS.
``docs/openapi/`` holds copies for a cluster with two secondaries and a
token; regenerate them with::

    for role in primary secondary; do python -m $role.openapi > docs/openapi/$role.json; done
    python -m shared.node.openapi > docs/openapi/failover.json

(a test fails when they are stale, and another when a route and the
document disagree).

Pure; thread: any.
"""

from __future__ import annotations

import copy
import json

from shared.web.api_token import OPEN_PATHS
from shared.web.reads import LEVELS, LOCAL, MAX_WAIT_S
from shared.wire.frames import MAX_SEQ

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What went wrong, for a human."}},
}

ERROR_REF = {"$ref": "#/components/schemas/Error"}
#: The copies in docs/openapi/ describe nodes with an API token.
DOCUMENTED_BEARER = True


def json_response_object(schema: dict, description: str, headers: dict | None = None) -> dict:
    """An OpenAPI response object whose body is JSON matching ``schema``."""
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def error_response_object(description: str, headers: dict | None = None) -> dict:
    return json_response_object(ERROR_REF, description, headers)


#: What every node's /health says about the log and the term it follows.
LOG_PROPERTIES = {
    "history": {"type": "string", "nullable": True,
                "description": "the cluster's name: fixed roles only, null until its first run"},
    "run": {"type": "integer", "minimum": 0,
            "description": "the primary's run: fixed roles only, the same number as term"},
    "term": {"type": "integer", "minimum": 0, "description": "the term (a fixed primary's run) it follows"},
    "length": {"type": "integer", "minimum": 0, "description": "the id after the last message it holds"},
    "committed": {"type": "integer", "minimum": 0,
                  "description": "the id after the last message it knows committed (held by a majority)"},
    "first_id": {"type": "integer", "minimum": 0,
                 "description": "the first message retention kept (0 when it dropped none)"},
    "bad_frames": {"type": "integer", "minimum": 0,
                   "description": "replication frames dropped as malformed or foreign since start"},
}
RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
}
SERVED_BY = {
    "Served-By": {"description": "the node that served the request", "schema": {"type": "string"}}
}

def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_LIST_OPERATION = {
    "summary": "Read the messages, in order, without gaps: all that are kept, a page, or a tail",
    "description": "The level says what the answer reflects. local: what this node holds (on a "
    "secondary it may lag; it may include a dead primary's tail that the next one overwrites). "
    "committed: only what a majority holds, which no failover rolls back; it may lag. "
    "linearizable: every append acknowledged before the read began, on whichever node answers, "
    "never going back (Raft's read index: the primary confirms with a majority that it still "
    "is primary; a secondary asks it).",
    "operationId": "listMessages",
    "parameters": [
        _query("from", {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
               "the first id to read (default 0); with any of these, the answer is a page"),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_SEQ}, "at most this many messages"),
        _query("wait", {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": MAX_WAIT_S},
               "seconds to wait for a message at from or beyond, if none is there yet"),
        _query("consistency", {"type": "string", "enum": list(LEVELS), "default": LOCAL},
               "what the answer reflects (see the description)"),
        _query("committed", {"type": "string", "enum": ["true", "false"]},
               "true: at least consistency=committed (the older spelling; with consistency, the stronger "
               "of the two); false: as if absent"),
    ],
    "responses": {
        "200": json_response_object(
            {
                "type": "object",
                "required": ["messages"],
                "properties": {
                    "messages": {"type": "array", "items": {"type": "string"}},
                    "first_id": {"type": "integer", "minimum": 0,
                                 "description": "without from: the id of the first message kept"},
                    "from": {"type": "integer", "minimum": 0},
                    "next": {"type": "integer", "minimum": 0, "description": "the from of the next page"},
                    "length": {"type": "integer", "minimum": 0,
                               "description": "the id after the last message shown at this level, "
                                              "at the same moment"},
                },
            },
            "every message kept, or the page asked for",
            SERVED_BY,
        ),
        "400": error_response_object("a query parameter is invalid or unknown", SERVED_BY),
        "410": json_response_object(
            {"type": "object", "required": ["error", "first_id"],
             "properties": {"error": {"type": "string"},
                            "first_id": {"type": "integer", "minimum": 0,
                                         "description": "the first message retention kept: read from there"}}},
            "from is below what retention kept (or fell below it while the read waited)", SERVED_BY),
        "503": error_response_object(
            "busy: MAX_LOG_READS whole-log reads are being sent, or MAX_WAITING_READS readers wait; "
            "or a linearizable read that could not be confirmed in time (no primary, no majority, "
            "an election)", {**RETRY_AFTER, **SERVED_BY}),
    },
}


def _page_operation(summary: str) -> dict:
    return {
        "summary": summary,
        "description": "A self-contained HTML page: it holds no data of the log, and draws "
        "itself from this node's JSON endpoints.",
        "operationId": "page",
        "responses": {"200": {"description": "the page",
                              "content": {"text/html": {"schema": {"type": "string"}}}}},
    }


_METRICS_OPERATION = {
    "summary": "Prometheus metrics of this node: the replog_* ones, and the process's",
    "description": "Prometheus' text format, or OpenMetrics when the Accept header asks for "
    "application/openmetrics-text.",
    "operationId": "metrics",
    "responses": {
        "200": {
            "description": "the metrics",
            "content": {media_type: {"schema": {"type": "string"}}
                        for media_type in ("text/plain", "application/openmetrics-text")},
        }
    },
}


_BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "the node's API_TOKEN (or the content of API_TOKEN_FILE), sent as "
    "Authorization: Bearer <token>",
}


def document(
    role: str, health: dict, page: str, post_messages: dict | None = None,
    schemas: dict | None = None, bearer: bool = DOCUMENTED_BEARER,
) -> dict:
    """A role's document: every role lists messages, reports health, serves
    metrics and a page at ``/`` (``page`` sums it up); ``post_messages`` and
    the ``schemas`` it refers to are the role's own. ``bearer``: the node
    has an API token."""
    assembled = _document(role, health, page, post_messages, schemas)
    return _require_bearer(assembled) if bearer else assembled


def _require_bearer(document: dict) -> dict:
    document = copy.deepcopy(document)  # the operations are shared constants
    document["components"]["securitySchemes"] = {"bearerAuth": _BEARER_SCHEME}
    for path, operations in document["paths"].items():
        if path in OPEN_PATHS:
            continue
        for operation in operations.values():
            operation["security"] = [{"bearerAuth": []}]
            operation["responses"]["401"] = error_response_object(
                "no bearer token, or a wrong one: refused, and nothing changed",
                {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
            )
    return document


def _document(role: str, health: dict, page: str, post_messages: dict | None,
              schemas: dict | None) -> dict:
    messages: dict = {"get": _LIST_OPERATION}
    if post_messages is not None:
        messages["post"] = post_messages
    health_ref = {"$ref": f"#/components/schemas/{role.title()}Health"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"Replicated log: {role}",
            "version": "1.0.0",
            "description": "Every error answer is a JSON object with an 'error' string.",
        },
        "paths": {
            "/messages": messages,
            "/health": {
                "get": {
                    "summary": "Is this node up, and what does it know",
                    "operationId": "health",
                    "responses": {
                        "200": json_response_object(health_ref, "up"),
                        "503": json_response_object(
                            health_ref,
                            "replication has stopped (shutting down, or a crash): do not use this node",
                        ),
                    },
                }
            },
            "/metrics": {"get": _METRICS_OPERATION},
            "/": {"get": _page_operation(page)},
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": json_response_object({"type": "object"}, "the OpenAPI document")},
                }
            },
        },
        "components": {
            "schemas": {"Error": _ERROR, **(schemas or {}), f"{role.title()}Health": health}
        },
    }


def render(document: dict) -> str:
    """The text kept in ``docs/openapi/``."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def print_document(document: dict) -> None:
    """What ``python -m <role>.openapi`` does: the document on stdout."""
    print(render(document), end="")
