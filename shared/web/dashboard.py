"""The dashboard: one static page for both modes, and how it is served.

``dashboard.html`` beside this file, read once at import, is what ``GET /``
answers on a fixed primary (primary/api.py) and on every failover node
(shared/node/api.py). The page tells the modes apart itself, from what its
node's /health answers, so both serve the same bytes. Only the
Content-Security-Policy differs: a fixed primary's page reads its own node
alone, while a failover page polls every node's /health, at URLs it learns
as it runs, so it may connect to any http(s) origin (it still loads nothing
from one, and sends the API token only to its own node).

Thread: any Waitress worker.
"""

from __future__ import annotations

from pathlib import Path

import bottle

from shared.web.http import html_response

PAGE = Path(__file__).with_name("dashboard.html").read_bytes()


def dashboard_response(polls_every_node: bool) -> bottle.HTTPResponse:
    """``GET /``: the page, with the policy of its mode (``polls_every_node``: failover)."""
    return html_response(PAGE, connect_anywhere=polls_every_node)
