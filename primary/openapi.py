"""The primary's OpenAPI document: appends, reads, health.

The append's description is shared.web.append_openapi's, with the limits
of this role's configuration (the number of keys remembered, the largest
batch). The ``w``
range is the configured cluster's. ``python -m primary.openapi`` prints the
copy kept in ``docs/openapi/`` (two secondaries).

Pure; thread: any.
"""

from __future__ import annotations

from primary.config import PrimaryConfig
from shared.web.append_openapi import APPEND_RESULT, append_operation, append_request_schema
from shared.web.openapi import DOCUMENTED_BEARER, LOG_PROPERTIES, document, print_document

#: The cluster ``docs/openapi/primary.json`` describes: the primary and two secondaries.
DOCUMENTED_CLUSTER_SIZE = 3

_HEALTH = {
    "type": "object",
    "required": ["status", "role", "node", "length", "quorum", "available_nodes", "read_only", "secondaries"],
    "properties": {
        "status": {"type": "string"},
        "role": {"type": "string", "enum": ["primary"]},
        "node": {"type": "string"},
        **LOG_PROPERTIES,
        "recovering": {"type": "boolean",
                       "description": "taking over its log from the secondaries; appends wait"},
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
        post_messages=append_operation(
            PrimaryConfig.idempotency_keys,
            "overloaded, read-only without quorum, recovering its log, storage unavailable, "
            "replication stopped, or shutting down"),
        schemas={"AppendRequest": append_request_schema(cluster_size, PrimaryConfig.max_batch_messages),
                 "AppendResult": APPEND_RESULT},
        bearer=bearer,
    )


if __name__ == "__main__":
    print_document(spec())
