"""Fixtures of the integration tests that start failover clusters."""

from __future__ import annotations

import pytest

from tests.support.failover import FailoverCluster


@pytest.fixture
def make_failover(tmp_path, request):
    """Make failover clusters (started unless ``start=False``); all shut
    down after the test, and every node's log printed if it failed."""
    clusters: list[FailoverCluster] = []

    def make(start: bool = True, **kwargs) -> FailoverCluster:
        cluster = FailoverCluster(tmp_path / f"cluster{len(clusters)}", **kwargs)
        clusters.append(cluster)  # before starting, so a failed start is cleaned up too
        return cluster.start() if start else cluster

    yield make
    for cluster in clusters:
        cluster.shutdown()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for cluster in clusters:
            for node in cluster.nodes.values():
                print(f"\n===== {node.name} log =====\n{node.log()[-20000:]}")
