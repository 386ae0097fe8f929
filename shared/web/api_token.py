"""The optional bearer token of the HTTP API (API_TOKEN or API_TOKEN_FILE).

With a token configured, every route that reads or writes data answers only
a request that carries ``Authorization: Bearer <token>``; any other gets a
401 with ``WWW-Authenticate: Bearer`` and a JSON ``{"error": ...}``, before
the route runs, so nothing is appended. OPEN_PATHS hold no data and stay
open: ``/health`` for probes, ``/openapi.json`` for clients, ``/`` the HTML
page, which asks for the token itself when a data request answers 401.
``/metrics`` is a read like the others: it needs the token.

The token itself is an ApiToken (shared/runtime/bearer.py): compared in
constant time, with no readable text; no answer or log line here repeats
what a client sent.

Thread: ApiToken any; the plugin's wrapper runs on Waitress workers.
"""

from __future__ import annotations

from typing import Callable

import bottle

from shared.runtime.bearer import ApiToken
from shared.web.http import json_error, raw_header

#: Routes that answer without a token: they hold no data.
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/"})
REALM = "replicated-log"


class RequireToken:
    """A Bottle plugin: the routes outside OPEN_PATHS need the bearer token."""

    name = "api-token"
    api = 2

    def __init__(self, token: ApiToken) -> None:
        self._token = token

    def apply(self, callback: Callable, route: bottle.Route) -> Callable:
        if route.rule in OPEN_PATHS:
            return callback

        def checked(*args, **kwargs):
            refusal = self._refusal(raw_header("Authorization") or "")
            return refusal if refusal is not None else callback(*args, **kwargs)

        return checked

    def _refusal(self, authorization: str) -> bottle.HTTPResponse | None:
        scheme, _, offered = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not offered.strip():
            return json_error(
                401, "this node needs a bearer token: send Authorization: Bearer <API_TOKEN>",
                {"WWW-Authenticate": f'Bearer realm="{REALM}"'},
            )
        # The header as latin-1 text (raw_header): these are the bytes that came.
        if not self._token.matches(offered.strip().encode("latin-1")):
            return json_error(
                401, "wrong bearer token",
                {"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
            )
        return None


def protect(app: bottle.Bottle, token: ApiToken | None) -> bottle.Bottle:
    """``app``, with its data routes behind ``token`` when there is one."""
    if token is not None:
        app.install(RequireToken(token))
    return app
