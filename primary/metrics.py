"""The fixed primary's metrics: appends and reads as they end, the replication state at scrape time.

- ``replog_appends_total{w, outcome}`` and ``replog_append_duration_seconds{w}``
  are counted by ``record_append``, one call per POST /messages from the
  route, with children bound up front for every ``w`` of the cluster and
  every Outcome: no label lookup on the hot path. ``w`` is the resolved
  node count; a request refused before its ``w`` was read counts as
  ``w="none"``, ``outcome="bad_request"`` (``record_bad_request``), and
  no duration. ``replog_reads_total{consistency}`` counts GET /messages.
- Everything else is read when scraped (``ReplicationCollector``), from the
  state /health reads (shared.node.node_io.NodeState): the log's length,
  start and commit, each secondary's acknowledged length, lag, state and
  resends, read-only, recovering, waiting appends.

Thread: ``record_*`` from any Waitress worker; ``collect`` on the worker
that serves the scrape.
"""

from __future__ import annotations

import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from primary.config import PrimaryConfig
from shared.consensus.health import Health
from shared.node.appends import Appends, Outcome
from shared.node.node_io import NodeIo
from shared.web.metrics import PREFIX, gauge, labelled_gauge, new_registry
from shared.web.reads import LEVELS

#: The ``w`` label of a request whose write concern was never read.
UNREAD_W = "none"
#: Seconds. From a w=1 append in memory (well under a millisecond) to a long
#: wait for a slow secondary.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class PrimaryMetrics:
    def __init__(self, config: PrimaryConfig, node: NodeIo, appends: Appends) -> None:
        self.registry: CollectorRegistry = new_registry()
        answered = Counter(
            PREFIX + "appends", "POST /messages answered, by write concern and outcome",
            ["w", "outcome"], registry=self.registry,
        )
        durations = Histogram(
            PREFIX + "append_duration_seconds",
            "POST /messages, from the request's arrival to its answer, by write concern",
            ["w"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        reads = Counter(PREFIX + "reads", "GET /messages, by consistency level", ["consistency"],
                        registry=self.registry)
        concerns = range(1, config.cluster_size + 1)
        self._appends = {(w, outcome): answered.labels(str(w), outcome.value)
                         for w in concerns for outcome in Outcome}
        self._unread = answered.labels(UNREAD_W, Outcome.BAD_REQUEST.value)
        self._durations = {w: durations.labels(str(w)) for w in concerns}
        self._reads = {level: reads.labels(level) for level in LEVELS}
        self.registry.register(ReplicationCollector(config, node, appends))

    def record_append(self, w: int, outcome: Outcome, started: float) -> None:
        """Count one answered append; ``started`` is its arrival (time.monotonic)."""
        self._appends[w, outcome].inc()
        self._durations[w].observe(time.monotonic() - started)

    def record_bad_request(self) -> None:
        """Count one append refused before its write concern was read."""
        self._unread.inc()

    def record_read(self, level: str) -> None:
        self._reads[level].inc()


class ReplicationCollector:
    """The replication state, read at scrape time: nothing between scrapes."""

    def __init__(self, config: PrimaryConfig, node: NodeIo, appends: Appends) -> None:
        self._quorum = config.write_quorum
        self._node = node
        self._appends = appends

    def collect(self) -> Iterator[Metric]:
        state = self._node.showing_answers()
        yield gauge("log_length", "the id after the last message in the log that readers see", state.length)
        yield gauge("first_id", "the first message id retention kept", state.first_id)
        yield gauge("committed_length", "the id after the last committed message", state.committed)
        yield gauge("term", "the primary's current term: its run", state.term)
        acked = labelled_gauge("secondary_acked_length",
                               "messages the secondary is known to hold, from id 0", ["secondary"])
        lag = labelled_gauge("secondary_lag", "messages the secondary is not known to hold yet",
                             ["secondary"])
        health = labelled_gauge("secondary_state", "1 for the secondary's current state, 0 for the others",
                                ["secondary", "state"])
        resends = CounterMetricFamily(PREFIX + "resends",
                                      "frames resent to the secondary for want of an answer",
                                      labels=["secondary"])
        for name, view in state.peers.items():
            held = view.match_length or 0
            acked.add_metric([name], held)
            lag.add_metric([name], max(0, state.length - held))
            for each in Health:
                health.add_metric([name, each.value], 1 if each is view.health else 0)
            resends.add_metric([name], view.resends)
        yield from (acked, lag, health, resends)
        available = state.available_nodes()
        yield gauge("available_nodes", "nodes counting toward the write quorum, the primary included",
                    available)
        yield gauge("read_only", "1 while fewer than QUORUM nodes are up: appends are refused",
                    int(available < self._quorum))
        yield gauge("recovering", "1 while the primary takes over its log from the secondaries",
                    int(state.recovering))
        yield gauge("waiting_appends", "appends holding one of MAX_WAITING_APPENDS slots",
                    self._appends.waiting.taken)
