"""The fixed secondary's metrics: reads as they are served, the rest at scrape time.

``node-io`` counts what it receives in plain integers of its own; the
collector reads them, the log's length and what REPLICATION_DELAY holds
back when Prometheus scrapes. ``replog_reads_total{consistency}`` counts
GET /messages. Thread: the Waitress worker that serves the scrape, or the read.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from shared.node.node_io import NodeIo
from shared.web.metrics import PREFIX, gauge, new_registry
from shared.web.reads import LEVELS


def secondary_registry(node: NodeIo) -> tuple[CollectorRegistry, Callable[[str], None]]:
    """The registry, and what counts one read at a consistency level."""
    registry = new_registry()
    registry.register(ReceiverCollector(node))
    reads = Counter(PREFIX + "reads", "GET /messages, by consistency level", ["consistency"],
                    registry=registry)
    counters = {level: reads.labels(level) for level in LEVELS}
    return registry, lambda level: counters[level].inc()


class ReceiverCollector:
    def __init__(self, node: NodeIo) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node, state = self._node, self._node.state
        yield gauge("log_length", "the id after the last message in the log that readers see", state.length)
        yield gauge("first_id", "the first message id retention kept", state.first_id)
        yield gauge("committed_length", "the id after the last committed message", state.committed)
        yield CounterMetricFamily(PREFIX + "received", "entries received from the primary, "
                                  "resends included", value=node.received)
        yield CounterMetricFamily(PREFIX + "duplicates", "entries received that were held or "
                                  "held back already (resends)", value=node.duplicates)
        yield gauge("hidden_ahead", "entries held past a gap: always 0, the primary sends in order", 0)
        yield gauge("waiting", "entries received and held back by REPLICATION_DELAY", node.waiting_count)
