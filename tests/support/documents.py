"""Reading a node log's streamed document back, for tests.

Thread: the test's.
"""

from __future__ import annotations

import json

from shared.log.node_log import NodeLog


def document_bytes(log: NodeLog, committed: bool = False) -> bytes:
    size, chunks = log.messages_document(committed)
    document = b"".join(chunks)
    assert size is None or len(document) == size, "the announced size must match the bytes sent"
    return document


def messages_of(log: NodeLog, committed: bool = False) -> list[str]:
    return json.loads(document_bytes(log, committed))["messages"]
