"""Idempotency keys: which log position each recent key appended.

A client that retries an append with the same ``Idempotency-Key`` header gets
the original message's id back and nothing is appended again, the way
Kafka's idempotent producer returns the original offset for a duplicate.

The table remembers the most recent ``capacity`` keys (FIFO); a key older
than that is forgotten and would append again. With DATA_DIR the log
commits each key with the entries it appended, so a restarted primary
builds the same table again (``DurableLog.keyed_appends``): which keys are
remembered depends only on the log. Thread: callers hold the Appender's
lock, which makes look-up and append one atomic step.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Sequence

#: The longest key accepted: room for a UUID, a hash, a client's own scheme.
KEY_MAX_LENGTH = 200
#: Visible ASCII (no spaces), 1 to KEY_MAX_LENGTH characters.
KEY_PATTERN = re.compile(rf"^[\x21-\x7e]{{1,{KEY_MAX_LENGTH}}}$")


class IdempotencyTable:
    def __init__(self, capacity: int, keyed_appends: Sequence[tuple[int, str, int]] = ()) -> None:
        """``keyed_appends``: the log's (first seq, key, count), by seq ascending."""
        self._capacity = capacity
        self._appended_by_key: OrderedDict[str, tuple[int, int]] = OrderedDict()
        for first, key, count in keyed_appends[-capacity:]:
            self.remember(key, first, count)

    def get(self, key: str) -> tuple[int, int] | None:
        """The first id and the count of messages the key appended, if remembered."""
        return self._appended_by_key.get(key)

    def remember(self, key: str, first: int, count: int) -> None:
        self._appended_by_key[key] = (first, count)
        while len(self._appended_by_key) > self._capacity:
            self._appended_by_key.popitem(last=False)
