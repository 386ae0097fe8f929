"""The OpenAPI description of ``POST /messages``: what the fixed primary and a
failover node share (shared.web.append_request enforces it).

The rules it states come from the code that enforces them: the accepted
media types and the ``timeout`` ceiling from the validator, the
Idempotency-Key pattern from the key table. Pure; thread: any.
"""

from __future__ import annotations

from shared.log.idempotency import KEY_PATTERN
from shared.web.append_request import CURL_FORM_MEDIA_TYPE, MAX_TIMEOUT_S
from shared.web.openapi import RETRY_AFTER, error_response_object, json_response_object

APPEND_RESULT = {
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


def append_request_schema(cluster_size: int, max_batch: int) -> dict:
    """The request body, for a cluster of ``cluster_size`` nodes."""
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "either 'message' (one) or 'messages' (a batch, appended at "
        "consecutive ids, all or nothing)",
        "oneOf": [{"required": ["message"]}, {"required": ["messages"]}],
        "properties": {
            "message": {"type": "string"},
            "messages": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                         "maxItems": max_batch},
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


def append_operation(keys_remembered: int, unavailable: str, extra: dict | None = None) -> dict:
    """The operation; ``unavailable`` says when it answers 503, ``extra`` adds responses."""
    return {
        "summary": "Append a message to the log",
        "operationId": "appendMessage",
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "a retry with the same key appends nothing and answers with the "
                f"original id (the last {keys_remembered:,} keys are remembered by default)",
                "schema": {"type": "string", "pattern": f"^{KEY_PATTERN.pattern}$"},
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
            "503": error_response_object(unavailable, RETRY_AFTER),
            "504": json_response_object(
                {"anyOf": [
                    {"allOf": [{"$ref": "#/components/schemas/AppendResult"}, {"$ref": "#/components/schemas/Error"}]},
                    {"$ref": "#/components/schemas/Error"},
                ]},
                "the timeout ran out first: with an id, the message stays appended and still replicates; "
                "without one (and with Retry-After), it ran out before the primary took the append, "
                "and nothing was appended",
                RETRY_AFTER,
            ),
            **(extra or {}),
        },
    }
