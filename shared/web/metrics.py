"""Prometheus metrics, both roles: one registry per app, served at ``GET /metrics``.

Each app gets its own ``CollectorRegistry`` (``new_registry``), never
prometheus_client's global one: a test process builds many apps, and each
must count only its own requests. The registry carries the library's
default process, platform and garbage-collector metrics, and a role's own
(``primary.metrics``, ``secondary.metrics``).

What a scrape can read from state the node keeps anyway (lengths, lags,
health) is read at scrape time by a Collector of the role's, so it costs
nothing between scrapes; only what happens (appends, their durations) is
counted as it happens, through children bound to their labels once, up
front, so a request never looks a label up.

All names start with ``replog_``; ``text_string_to_metric_families`` of
prometheus_client parses what ``exposition`` returns. Thread: any (the
library's metrics have their own locks; collectors read snapshots).
"""

from __future__ import annotations

import bottle
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily

from shared.web.http import raw_header

PREFIX = "replog_"


def new_registry() -> CollectorRegistry:
    """A registry of this app's own, with the default process metrics."""
    # No ``*_created`` series: one per labelled child would more than double
    # the scrape, and Prometheus reads none of them from the text format.
    # (A setting of the library, for the whole process.)
    disable_created_metrics()
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bottle.HTTPResponse:
    """The registry's metrics in the format the request's Accept header asks
    for: OpenMetrics when it names it, else Prometheus' text format (as
    Prometheus negotiates), which is also the answer to a header the library
    cannot read (it raises on a version such as ``1..0``)."""
    try:
        encode, content_type = choose_encoder(raw_header("Accept") or "")
    except (TypeError, ValueError):
        encode, content_type = choose_encoder("")
    return bottle.HTTPResponse(body=encode(registry), headers={"Content-Type": content_type})


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """One unlabelled gauge, for a Collector's ``collect``."""
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def labelled_gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    """A labelled gauge to ``add_metric`` to, for a Collector's ``collect``."""
    return GaugeMetricFamily(PREFIX + name, documentation, labels=labels)
