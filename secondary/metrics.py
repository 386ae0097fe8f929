"""The secondary's metrics, all read at scrape time: nothing is counted per request.

The receiver's I/O thread counts what it receives in plain integers of its
own; ``ReceiverCollector`` reads them, the log's length and what it holds
past a gap when Prometheus scrapes. Thread: ``collect`` on the Waitress
worker that serves the scrape.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from secondary.receiver import Receiver
from shared.log.ordered_log import OrderedLog
from shared.web.metrics import PREFIX, gauge, new_registry


def secondary_registry(store: OrderedLog, receiver: Receiver) -> CollectorRegistry:
    registry = new_registry()
    registry.register(ReceiverCollector(store, receiver))
    return registry


class ReceiverCollector:
    def __init__(self, store: OrderedLog, receiver: Receiver) -> None:
        self._store = store
        self._receiver = receiver

    def collect(self) -> Iterator[Metric]:
        yield gauge("log_length", "messages in the log that readers see, from id 0 without a gap",
                    len(self._store))
        yield CounterMetricFamily(PREFIX + "received", "entries received from the primary, "
                                  "resends included", value=self._receiver.received)
        yield CounterMetricFamily(PREFIX + "duplicates", "entries received that were held or "
                                  "scheduled already (resends)", value=self._receiver.duplicates)
        yield gauge("hidden_ahead", "entries held past a gap, hidden until it fills",
                    self._store.ahead_count)
        yield gauge("waiting", "entries received and held back by REPLICATION_DELAY",
                    self._receiver.waiting_count)
