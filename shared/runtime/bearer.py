"""ApiToken: the bearer token configured by API_TOKEN or API_TOKEN_FILE.

It lives with the configuration that reads it; shared/web/api_token.py
checks requests against it. The comparison runs in constant time
(hmac.compare_digest), and the token never leaves this class: it has no
readable text.

Thread: any (immutable).
"""

from __future__ import annotations

import hmac


class ApiToken:
    """The configured token; it never shows in a repr, a str or a log line."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "ApiToken(<hidden>)"

    __str__ = __repr__

    def matches(self, offered: bytes) -> bool:
        """Constant-time comparison: how much of a guess is right never shows in timing."""
        return hmac.compare_digest(offered, self._value)
