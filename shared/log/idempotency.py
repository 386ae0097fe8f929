"""What an Idempotency-Key may be.

A client that retries an append with the same ``Idempotency-Key`` header gets
the original message's id back and nothing is appended again, the way
Kafka's idempotent producer returns the original offset for a duplicate.
The key travels with its entry to every node (shared.consensus.raft_log.Entry),
and each node keeps the keys in force (shared.log.node_log). Here is only
what a key may look like, for the HTTP API and the wire alike.

Pure; thread: any.
"""

from __future__ import annotations

import re

#: The longest key accepted: room for a UUID, a hash, a client's own scheme.
KEY_MAX_LENGTH = 200
#: Visible ASCII (no spaces), 1 to KEY_MAX_LENGTH characters; use fullmatch (not even a final newline).
KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{KEY_MAX_LENGTH}}}")
