"""The primary's OpenAPI document: appends, reads, health.

The rules it states come from the code that enforces them: the accepted
media types and the ``timeout`` ceiling from the validator, the Idempotency-Key pattern from the key table,
the number of keys remembered from the configuration's default. The ``w``
range is the configured cluster's. ``python -m primary.openapi`` prints the
copy kept in ``docs/openapi/`` (two secondaries).

Pure; thread: any.
"""

from __future__ import annotations

from shared.web.append_request import CURL_FORM_MEDIA_TYPE, MAX_TIMEOUT_S
from primary.config import PrimaryConfig
from shared.log.idempotency import KEY_PATTERN
from shared.web.openapi import (
    DOCUMENTED_BEARER,
    HISTORY_PROPERTIES,
    RETRY_AFTER,
    document,
    error_response_object,
    json_response_object,
    print_document,
)

#: The cluster ``docs/openapi/primary.json`` describes: the primary and two secondaries.
DOCUMENTED_CLUSTER_SIZE = 3

_APPEND_RESULT = {
    "type": "object",
    "required": ["w", "acks", "acked_by"],
    "properties": {
        "id": {"type": "integer", "minimum": 0,
               "description": "0-based position in the total order (one message)"},
        "first_id": {"type": "integer", "minimum": 0, "description": "a batch's first id"},
        "last_id": {"type": "integer", "minimum": 0, "description": "a batch's last id"},
        "count": {"type": "integer", "minimum": 1, "description": "messages in the batch"},
        "w": {"type": "integer", "minimum": 1, "description": "the write concern, resolved to a node count"},
        "acks": {"type": "integer", "minimum": 1, "description": "nodes holding it when answered, the primary included"},
        "acked_by": {"type": "array", "items": {"type": "string"}},
        "duplicate": {"type": "boolean", "description": "present on a replay of a known Idempotency-Key"},
    },
}


def _append_request(cluster_size: int) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "either 'message' (one) or 'messages' (a batch, appended at "
        "consecutive ids, all or nothing)",
        "oneOf": [{"required": ["message"]}, {"required": ["messages"]}],
        "properties": {
            "message": {"type": "string"},
            "messages": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                         "maxItems": PrimaryConfig.max_batch_messages},
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


_APPEND_OPERATION = {
    "summary": "Append a message to the log",
    "operationId": "appendMessage",
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "a retry with the same key appends nothing and answers with the "
            f"original id (the last {PrimaryConfig.idempotency_keys:,} keys are remembered by default)",
            "schema": {"type": "string", "pattern": KEY_PATTERN.pattern},
        }
    ],
    "requestBody": {
        "description": "the JSON object below; sent as application/json (or any +json type), "
        f"or as {CURL_FORM_MEDIA_TYPE}, curl's default for -d, under which the body is read "
        "as JSON all the same (form fields are not read: 400)",
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AppendRequest"}}},
    },
    "responses": {
        "200": json_response_object({"$ref": "#/components/schemas/AppendResult"},
                                    "a replay of a known Idempotency-Key: nothing appended"),
        "201": json_response_object({"$ref": "#/components/schemas/AppendResult"}, "appended; w nodes hold it"),
        "400": error_response_object("the body or a header is invalid; nothing appended"),
        "409": error_response_object("the Idempotency-Key was used for a different message"),
        "413": error_response_object(
            "the body is larger than MAX_MESSAGE_BYTES, or a batch holds more than MAX_BATCH_MESSAGES"),
        "415": error_response_object(f"the Content-Type is neither JSON nor {CURL_FORM_MEDIA_TYPE}"),
        "503": error_response_object(
            "overloaded, read-only without quorum, recovering its log, storage unavailable, "
            "replication stopped, or shutting down", RETRY_AFTER),
        "504": json_response_object(
            {"allOf": [{"$ref": "#/components/schemas/AppendResult"}, {"$ref": "#/components/schemas/Error"}]},
            "the timeout ran out first; the message stays appended and still replicates",
        ),
    },
}

_HEALTH = {
    "type": "object",
    "required": ["status", "role", "node", "length", "quorum", "available_nodes", "read_only", "secondaries"],
    "properties": {
        "status": {"type": "string"},
        "role": {"type": "string", "enum": ["primary"]},
        "node": {"type": "string"},
        **HISTORY_PROPERTIES,
        "recovering": {"type": "boolean",
                       "description": "taking over its log from the secondaries; appends wait"},
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
                    "state": {"type": "string", "enum": ["unknown", "healthy", "suspected", "unhealthy", "diverged"]},
                    "last_heard_s_ago": {"type": "number", "nullable": True},
                    "acked_length": {"type": "integer", "minimum": 0},
                    "lag": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}


def spec(cluster_size: int = DOCUMENTED_CLUSTER_SIZE, bearer: bool = DOCUMENTED_BEARER) -> dict:
    """The primary's document, for a cluster of ``cluster_size`` nodes;
    ``bearer``: with an API token."""
    return document(
        "primary",
        _HEALTH,
        page="The dashboard: every node with its state, length and lag, the append rate, "
        "and a form to append",
        post_messages=_APPEND_OPERATION,
        schemas={"AppendRequest": _append_request(cluster_size), "AppendResult": _APPEND_RESULT},
        bearer=bearer,
    )


if __name__ == "__main__":
    print_document(spec())
