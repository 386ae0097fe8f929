"""Fixtures of the unit tests: whole clusters inside the test process."""

from __future__ import annotations

import pytest

from tests.support.inprocess import InProcessCluster


@pytest.fixture
def make_inprocess_cluster(ctx):
    """Build InProcessClusters (keyword arguments as InProcessCluster takes);
    all are stopped after the test."""
    made: list[InProcessCluster] = []

    def make(**kwargs) -> InProcessCluster:
        made.append(InProcessCluster(ctx, **kwargs))
        return made[-1]

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def cluster(make_inprocess_cluster):
    """A primary and two running secondaries, s1 and s2, no delays."""
    return make_inprocess_cluster()
