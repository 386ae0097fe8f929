"""The OpenAPI 3 description of both roles' HTTP APIs, built from code.

Each process serves its own role's document at ``GET /openapi.json``; the
primary's states the ``w`` range of its configured cluster. ``docs/openapi/``
holds both roles' documents for a cluster with two secondaries; regenerate
them with ``python -m shared.openapi docs/openapi`` (a test fails when they
are stale, and another when a route and the document disagree).

Pure; thread: any.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: The longest wait a client may ask for. Past an hour a client should poll.
#: The primary's validation reads it from here, so document and code agree.
MAX_TIMEOUT_S = 3600
DOCUMENTED_CLUSTER_SIZE = 3

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What went wrong, for a human."}},
}
_APPEND_RESULT = {
    "type": "object",
    "required": ["id", "w", "acks", "acked_by"],
    "properties": {
        "id": {"type": "integer", "minimum": 0, "description": "0-based position in the total order"},
        "w": {"type": "integer", "minimum": 1, "description": "the write concern, resolved to a node count"},
        "acks": {"type": "integer", "minimum": 1, "description": "nodes holding it when answered, the primary included"},
        "acked_by": {"type": "array", "items": {"type": "string"}},
        "duplicate": {"type": "boolean", "description": "present on a replay of a known Idempotency-Key"},
    },
}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, headers: dict | None = None) -> dict:
    return _json({"$ref": "#/components/schemas/Error"}, description, headers)


def _append_request(cluster_size: int) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["message"],
        "properties": {
            "message": {"type": "string"},
            "w": {
                "description": "nodes, the primary included, that must hold the message before "
                "the answer; default \"all\"",
                "oneOf": [
                    {"type": "integer", "minimum": 1, "maximum": cluster_size},
                    {"type": "string", "enum": ["all", "majority"]},
                ],
            },
            "timeout": {
                "description": "seconds to wait for the write concern; absent or null: no limit",
                "type": "number",
                "nullable": True,
                "minimum": 0,
                "exclusiveMinimum": True,
                "maximum": MAX_TIMEOUT_S,
            },
        },
    }


def _append_operation(cluster_size: int) -> dict:
    return {
        "summary": "Append a message to the log",
        "operationId": "appendMessage",
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "a retry with the same key appends nothing and answers with the "
                "original id (the last 100,000 keys are remembered by default)",
                "schema": {"type": "string", "pattern": "^[!-~]{1,200}$"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AppendRequest"}}},
        },
        "responses": {
            "200": _json({"$ref": "#/components/schemas/AppendResult"},
                         "a replay of a known Idempotency-Key: nothing appended"),
            "201": _json({"$ref": "#/components/schemas/AppendResult"}, "appended; w nodes hold it"),
            "400": _error("the body or a header is invalid; nothing appended"),
            "409": _error("the Idempotency-Key was used for a different message"),
            "413": _error("the body is larger than MAX_MESSAGE_BYTES"),
            "415": _error("the Content-Type is not JSON"),
            "503": _error("overloaded, read-only without quorum, or shutting down", _RETRY_AFTER),
            "504": _json(
                {"allOf": [{"$ref": "#/components/schemas/AppendResult"}, {"$ref": "#/components/schemas/Error"}]},
                "the timeout ran out first; the message stays appended and still replicates",
            ),
        },
    }


_LIST_OPERATION = {
    "summary": "Read the messages this node holds, in order, without gaps",
    "operationId": "listMessages",
    "responses": {
        "200": _json(
            {
                "type": "object",
                "required": ["messages"],
                "properties": {"messages": {"type": "array", "items": {"type": "string"}}},
            },
            "the contiguous prefix of the log held by this node",
        )
    },
}

_PRIMARY_HEALTH = {
    "type": "object",
    "required": ["status", "role", "node", "length", "quorum", "available_nodes", "read_only", "secondaries"],
    "properties": {
        "status": {"type": "string"},
        "role": {"type": "string", "enum": ["primary"]},
        "node": {"type": "string"},
        "epoch": {"type": "string"},
        "length": {"type": "integer", "minimum": 0},
        "quorum": {"type": "integer", "minimum": 1},
        "available_nodes": {"type": "integer", "minimum": 1},
        "read_only": {"type": "boolean"},
        "secondaries": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "state", "last_heard_s_ago", "acked_length", "lag"],
                "properties": {
                    "name": {"type": "string"},
                    "endpoint": {"type": "string"},
                    "state": {"type": "string", "enum": ["unknown", "healthy", "suspected", "unhealthy"]},
                    "last_heard_s_ago": {"type": "number", "nullable": True},
                    "acked_length": {"type": "integer", "minimum": 0},
                    "lag": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}

_SECONDARY_HEALTH = {
    "type": "object",
    "required": ["status", "role", "node", "length"],
    "properties": {
        "status": {"type": "string"},
        "role": {"type": "string", "enum": ["secondary"]},
        "node": {"type": "string"},
        "incarnation": {"type": "string"},
        "primary_epoch": {"type": "string", "nullable": True},
        "replication_endpoint": {"type": "string", "nullable": True},
        "length": {"type": "integer", "minimum": 0},
        "waiting": {"type": "integer", "minimum": 0},
    },
}


def spec(role: str, cluster_size: int = DOCUMENTED_CLUSTER_SIZE) -> dict:
    """The document for ``role`` ("primary" or "secondary")."""
    messages: dict = {"get": _LIST_OPERATION}
    if role == "primary":
        messages["post"] = _append_operation(cluster_size)
    health = _PRIMARY_HEALTH if role == "primary" else _SECONDARY_HEALTH
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
                        "200": _json({"$ref": f"#/components/schemas/{role.title()}Health"}, "up"),
                        "503": _json(
                            {"$ref": f"#/components/schemas/{role.title()}Health"},
                            "replication has stopped (shutting down, or a crash): do not use this node",
                        ),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                **(
                    {"AppendRequest": _append_request(cluster_size), "AppendResult": _APPEND_RESULT}
                    if role == "primary"
                    else {}
                ),
                f"{role.title()}Health": health,
            }
        },
    }


def render(document: dict) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_docs(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for role in ("primary", "secondary"):
        (directory / f"{role}.json").write_text(render(spec(role)))


if __name__ == "__main__":
    write_docs(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi"))
