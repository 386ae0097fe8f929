"""The primary's metrics: appends as they end, and the replication state at scrape time.

- ``replog_appends_total{w, outcome}`` and ``replog_append_duration_seconds{w}``
  are counted by ``record_append``, one call per POST /messages from the
  route, with children bound up front for every ``w`` of the cluster and
  every Outcome: no label lookup on the hot path. ``w`` is the resolved
  node count; a request refused before its ``w`` was read counts as
  ``w="none"``, ``outcome="bad_request"`` (``record_bad_request``), and
  no duration.
- Everything else is read when scraped (``ReplicationCollector``), from the
  same snapshots as /health: the log's length, each secondary's acked
  length, lag, state and resends, read-only, waiting appends.

Thread: ``record_append`` from any Waitress worker; ``collect`` on the
worker that serves the scrape.
"""

from __future__ import annotations

import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from primary.appender import Appender, Outcome
from primary.config import PrimaryConfig
from primary.replicator import Replicator
from shared.consensus.health import Health
from shared.log.ordered_log import OrderedLog
from shared.web.metrics import PREFIX, gauge, labelled_gauge, new_registry

#: The ``w`` label of a request whose write concern was never read.
UNREAD_W = "none"
#: Seconds. From a w=1 append in memory (well under a millisecond) to a long
#: wait for a slow secondary.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class PrimaryMetrics:
    def __init__(self, config: PrimaryConfig, store: OrderedLog, replicator: Replicator,
                 appender: Appender) -> None:
        self.registry: CollectorRegistry = new_registry()
        appends = Counter(
            PREFIX + "appends", "POST /messages answered, by write concern and outcome",
            ["w", "outcome"], registry=self.registry,
        )
        durations = Histogram(
            PREFIX + "append_duration_seconds",
            "POST /messages, from the request's arrival to its answer, by write concern",
            ["w"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        concerns = range(1, config.cluster_size + 1)
        self._appends = {(w, outcome): appends.labels(str(w), outcome.value)
                         for w in concerns for outcome in Outcome}
        self._unread = appends.labels(UNREAD_W, Outcome.BAD_REQUEST.value)
        self._durations = {w: durations.labels(str(w)) for w in concerns}
        self.registry.register(ReplicationCollector(config, store, replicator, appender))

    def record_append(self, w: int, outcome: Outcome, started: float) -> None:
        """Count one answered append; ``started`` is its arrival (time.monotonic)."""
        self._appends[w, outcome].inc()
        self._durations[w].observe(time.monotonic() - started)

    def record_bad_request(self) -> None:
        """Count one append refused before its write concern was read."""
        self._unread.inc()


class ReplicationCollector:
    """The replication state, read at scrape time: nothing between scrapes."""

    def __init__(self, config: PrimaryConfig, store: OrderedLog, replicator: Replicator,
                 appender: Appender) -> None:
        self._quorum = config.write_quorum
        self._store = store
        self._replicator = replicator
        self._appender = appender

    def collect(self) -> Iterator[Metric]:
        view = self._replicator.view()
        log_length = len(self._store)
        yield gauge("log_length", "messages in the log that readers see", log_length)
        acked = labelled_gauge("secondary_acked_length",
                               "messages the secondary has shown to hold, from id 0", ["secondary"])
        lag = labelled_gauge("secondary_lag", "messages the secondary has not shown to hold yet",
                             ["secondary"])
        state = labelled_gauge("secondary_state",
                               "1 for the secondary's current state, 0 for the others",
                               ["secondary", "state"])
        resends = CounterMetricFamily(PREFIX + "resends",
                                      "batches resent to the secondary for want of an ACK",
                                      labels=["secondary"])
        for status, health in view.secondaries:
            acked.add_metric([status.name], status.acked_length)
            lag.add_metric([status.name], status.lag(log_length))
            for each in Health:
                state.add_metric([status.name, each.value], 1 if each is health else 0)
            resends.add_metric([status.name], status.resends)
        yield from (acked, lag, state, resends)
        available = view.available_nodes
        yield gauge("available_nodes", "nodes counting toward the write quorum, the primary included",
                    available)
        yield gauge("read_only", "1 while fewer than QUORUM nodes are up: appends are refused",
                    int(available < self._quorum))
        yield gauge("recovering", "1 while the primary takes over its log from the secondaries",
                    int(self._replicator.recovering))
        yield gauge("waiting_appends", "appends holding one of MAX_WAITING_APPENDS slots",
                    self._appender.waiting_count)
