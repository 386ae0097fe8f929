"""A failover node's OpenAPI document: appends (here or forwarded), reads, health.

The append's description is shared.web.append_openapi's, with this mode's
answers: 503 "no primary", and the 502 and 504 of a forward whose fate is
unknown. ``python -m shared.node.openapi`` prints the copy kept in
``docs/openapi/failover.json`` (three nodes).

Pure; thread: any.
"""

from __future__ import annotations

import copy

from shared.consensus.raft import Role
from shared.node.config import FailoverConfig
from shared.web.append_openapi import APPEND_RESULT, append_operation, append_request_schema
from shared.web.openapi import DOCUMENTED_BEARER, LOG_PROPERTIES, document, error_response_object, print_document

#: The cluster ``docs/openapi/failover.json`` describes.
DOCUMENTED_CLUSTER_SIZE = 3

_PEER = {
    "type": "object",
    "properties": {
        "endpoint": {"type": "string"},
        "url": {"type": "string", "nullable": True, "description": "its PUBLIC_URL, once heard from"},
        "last_heard_s_ago": {"type": "number", "nullable": True},
        "match_length": {"type": "integer", "nullable": True,
                         "description": "on the primary: the Raft entries this peer is known to hold"},
        "state": {"type": "string", "nullable": True,
                  "enum": ["unknown", "healthy", "suspected", "unhealthy", "diverged", None],
                  "description": "on the primary: how this peer answers"},
    },
}
_HEALTH = {
    "type": "object",
    "required": ["status", "mode", "node", "role", "term", "primary", "committed", "length", "peers"],
    "properties": {
        "status": {"type": "string"},
        "mode": {"type": "string", "enum": ["failover"]},
        "node": {"type": "string"},
        "url": {"type": "string", "description": "this node's PUBLIC_URL"},
        "role": {"type": "string", "enum": [role.value for role in Role]},
        "term": {"type": "integer", "minimum": 0},
        "primary": {"type": "string", "nullable": True,
                    "description": "the primary this node follows, its own name on the primary, "
                                   "null during an election"},
        **{name: LOG_PROPERTIES[name] for name in ("committed", "length", "first_id", "bad_frames")},
        "caught_up": {"type": "boolean",
                      "description": "false for a node started with an empty DATA_DIR until a primary "
                                     "caught it up and it heard enough peers: until then it does not "
                                     "stand, and votes only as docs/architecture.md says"},
        "unheard": {"type": "array", "items": {"type": "string"},
                    "description": "while not caught up: the peers it has still to hear from"},
        "replication_endpoint": {"type": "string", "nullable": True},
        "peers": {"type": "object", "additionalProperties": _PEER},
        "elections": {
            "type": "array",
            "items": {"type": "object", "properties": {
                "term": {"type": "integer"}, "primary": {"type": "string"}, "at": {"type": "string"}}},
        },
    },
}
_FORWARD_FAILED = {
    "502": error_response_object("forwarded to the primary, which did not answer: the append's "
                                 "fate is unknown (retry with the same Idempotency-Key)"),
}


def spec(cluster_size: int = DOCUMENTED_CLUSTER_SIZE, bearer: bool = DOCUMENTED_BEARER) -> dict:
    """The document of a node in a failover cluster of ``cluster_size``; ``bearer``: with an API token."""
    assembled = copy.deepcopy(document(
        "failover",
        _HEALTH,
        page="The cluster's dashboard: every node's role, term, committed length and lag, the "
        "primary, the last elections, and a form to append; it follows failovers",
        post_messages=append_operation(
            FailoverConfig.idempotency_keys,
            "no primary (an election is under way, or the primary cannot be reached: nothing "
            "appended), overloaded, or with an id: the primary stepped down or stopped while the "
            "append waited (appended, fate unknown)",
            _FORWARD_FAILED),
        schemas={"AppendRequest": append_request_schema(cluster_size, FailoverConfig.max_batch_messages),
                 "AppendResult": APPEND_RESULT},
        bearer=bearer,
    ))
    del assembled["paths"]["/health"]["get"]["responses"]["503"]  # 200 in every role and state
    return assembled


if __name__ == "__main__":
    print_document(spec())
