"""The secondary's OpenAPI document: reads and health; it takes no writes.

``python -m secondary.openapi`` prints the copy kept in ``docs/openapi/``.
Pure; thread: any.
"""

from __future__ import annotations

from shared.web.openapi import DOCUMENTED_BEARER, LOG_PROPERTIES, document, print_document

_HEALTH = {
    "type": "object",
    "required": ["status", "role", "node", "length"],
    "properties": {
        "status": {"type": "string"},
        "role": {"type": "string", "enum": ["secondary"]},
        "node": {"type": "string"},
        "incarnation": {"type": "string"},
        **LOG_PROPERTIES,
        "primary": {"type": "string", "nullable": True, "description": "the primary it follows"},
        "held_past_gap": {"type": "integer", "minimum": 0,
                          "description": "always 0: a secondary holds nothing past a gap (kept for clients)"},
        "replication_endpoint": {"type": "string", "nullable": True},
        "waiting": {"type": "integer", "minimum": 0, "description": "entries held back by REPLICATION_DELAY"},
    },
}


def spec(bearer: bool = DOCUMENTED_BEARER) -> dict:
    """The secondary's document; ``bearer``: with an API token."""
    return document("secondary", _HEALTH, bearer=bearer,
                    page="This node's length, and a link to the primary's dashboard (PRIMARY_URL)")


if __name__ == "__main__":
    print_document(spec())
