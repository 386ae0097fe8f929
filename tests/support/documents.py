"""Reading an OrderedLog's streamed document back, for tests."""

from __future__ import annotations

import json

from shared.log.ordered_log import OrderedLog


def document_bytes(log: OrderedLog) -> bytes:
    size, chunks = log.messages_document()
    document = b"".join(chunks)
    assert len(document) == size, "the announced size must match the bytes sent"
    return document


def messages_of(log: OrderedLog) -> list[str]:
    return json.loads(document_bytes(log))["messages"]
