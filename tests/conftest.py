"""Fixtures shared by the whole suite."""

from __future__ import annotations

import threading

import pytest
import zmq

from tests.support.processes import Cluster


@pytest.fixture
def ctx():
    """A fresh zmq Context per test, linger 0, terminated with a deadline."""
    context = zmq.Context()
    context.linger = 0
    yield context
    terminator = threading.Thread(target=context.term, name="ctx-term", daemon=True)
    terminator.start()
    terminator.join(10)
    assert not terminator.is_alive(), "zmq Context.term() hung: a socket was left open"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def make_cluster(tmp_path, request, ctx):
    """Start clusters of real processes; stop them all after the test.

    When the test fails, every node's log is printed for the report."""
    clusters: list[Cluster] = []

    def make(secondaries, primary_env=None, down=(), relayed=()):
        cluster = Cluster(tmp_path, secondaries, primary_env, down, relayed, ctx)
        clusters.append(cluster)  # before starting, so a failed start is cleaned up too
        return cluster.start()

    yield make
    for cluster in clusters:
        cluster.shutdown()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for cluster in clusters:
            for node in cluster.nodes:
                print(f"\n===== {node.name} log =====\n{node.log()[-20000:]}")
