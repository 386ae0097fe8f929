"""GET /metrics on both roles, in-process: counts equal the workload, gauges equal /health."""

from __future__ import annotations

import threading

import pytest
import webtest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from shared.node.appends import Outcome
from secondary.api import make_app as make_secondary_app
from secondary.config import SecondaryConfig
from shared.consensus.health import Health
from shared.runtime.config import DelayRange
from tests.support.metrics import Scrape
from tests.support.waiting import wait_until


def scrape(app) -> Scrape:
    response = app.get("/metrics")
    assert response.content_type == "text/plain"
    return Scrape(response.text)


def appends(metrics: Scrape) -> dict[tuple[str, str], float]:
    """Every appends_total sample that is not 0, by (w, outcome)."""
    return {(sample.labels["w"], sample.labels["outcome"]): sample.value
            for sample in metrics.families["replog_appends"].samples if sample.value}


def test_the_primary_counts_each_append_by_w_and_outcome(cluster):
    for i in range(4):
        assert cluster.post({"message": f"one-{i}", "w": 1}).status_int == 201
    for i in range(2):
        assert cluster.post({"message": f"all-{i}", "w": 3}).status_int == 201
    key = {"Idempotency-Key": "order-1"}
    assert cluster.post({"message": "pay", "w": "majority"}, headers=key).status_int == 201
    assert cluster.post({"message": "pay", "w": 2}, headers=key).status_int == 200
    assert cluster.post({"message": "other", "w": 2}, headers=key).status_int == 409
    assert cluster.post(b"{").status_int == 400
    assert cluster.post({"message": 1}).status_int == 400

    metrics = scrape(cluster.app)
    assert appends(metrics) == {
        ("1", "ok"): 4, ("3", "ok"): 2, ("2", "ok"): 1, ("2", "duplicate"): 1,
        ("2", "bad_request"): 1, ("none", "bad_request"): 2,
    }
    # Every w of the cluster and every outcome is there from the start, at 0.
    assert len(metrics.families["replog_appends"].samples) == 3 * len(Outcome) + 1
    durations = {w: metrics("replog_append_duration_seconds_count", w=w) for w in "123"}
    assert durations == {"1": 4, "2": 3, "3": 2}
    assert metrics("replog_append_duration_seconds_bucket", w="3", le="+Inf") == 2
    assert metrics("replog_append_duration_seconds_sum", w="3") > 0

    messages = cluster.app.get("/messages").json["messages"]
    assert metrics("replog_log_length") == len(messages) == 7


def test_replication_gauges_agree_with_health(cluster):
    for i in range(5):
        cluster.post({"message": f"m{i}", "w": 1})

    def settled():
        metrics = scrape(cluster.app)
        lags = metrics.labelled("replog_secondary_lag", "secondary")
        return metrics if lags == {"s1": 0, "s2": 0} else None

    metrics = wait_until(settled, what="both secondaries to catch up")
    health = cluster.app.get("/health").json
    assert metrics("replog_log_length") == health["length"] == 5
    for secondary in health["secondaries"]:
        name = secondary["name"]
        assert metrics("replog_secondary_acked_length", secondary=name) == secondary["acked_length"]
        states = {state.value: metrics("replog_secondary_state", secondary=name, state=state.value)
                  for state in Health}
        assert states == {state.value: float(state.value == secondary["state"]) for state in Health}
        assert metrics("replog_resends_total", secondary=name) == 0
    assert metrics("replog_read_only") == 0
    assert metrics("replog_available_nodes") == health["available_nodes"] == 3
    assert metrics("replog_waiting_appends") == 0
    assert metrics("replog_recovering") == 0
    # The default process metrics of prometheus_client, on this app's own registry.
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= metrics.names()

    secondary = scrape(cluster.secondaries["s1"].app)
    assert secondary("replog_log_length") == len(cluster.secondaries["s1"].app.get("/messages").json["messages"])
    assert secondary("replog_received_total") == 5
    assert secondary("replog_duplicates_total") == 0
    assert secondary("replog_hidden_ahead") == 0
    assert "process_cpu_seconds_total" in secondary.names()


def test_a_slow_secondary_shows_waiting_appends_overload_timeouts_and_resends(make_inprocess_cluster):
    # s2 holds each message 2 s: longer than the first resend timeout (1 s).
    cluster = make_inprocess_cluster(delays={"s2": DelayRange(2.0, 2.0)}, max_waiting_appends=1)
    # Past its recovery, so that a refusal is "overloaded", not "recovering".
    wait_until(lambda: scrape(cluster.app)("replog_recovering") == 0, what="the recovery to end")
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(cluster.post({"message": "slow", "w": 3})),
                               name="test-waiting-append")
    waiting.start()
    try:
        wait_until(lambda: scrape(cluster.app)("replog_waiting_appends") == 1, what="the append to wait")
        assert cluster.post({"message": "turned away", "w": 3}).status_int == 503
    finally:
        waiting.join(10)
    assert answers[0].status_int == 201
    assert cluster.post({"message": "hurried", "w": 3, "timeout": 0.05}).status_int == 504

    metrics = scrape(cluster.app)
    assert appends(metrics) == {("3", "ok"): 1, ("3", "overloaded"): 1, ("3", "timeout"): 1}
    assert metrics("replog_waiting_appends") == 0
    assert metrics("replog_secondary_lag", secondary="s2") >= 1  # the hurried one, still on its way

    def resends_seen():
        resends = scrape(cluster.app).labelled("replog_resends_total", "secondary")
        duplicates = scrape(cluster.secondaries["s2"].app)("replog_duplicates_total")
        return resends if resends["s2"] >= 1 and duplicates >= resends["s2"] else None

    # Each resend to s2 is of one message that it holds or has scheduled: a
    # duplicate there. (On a starved machine s2 may also miss heartbeats and
    # be sent everything again on its return: more duplicates, no resends.)
    resends = wait_until(resends_seen, what="a resend to s2, counted on both ends")
    assert set(resends) == {"s1", "s2"}


def test_read_only_shows_in_the_gauges_and_the_refusals(make_inprocess_cluster):
    cluster = make_inprocess_cluster(names=("a", "b"), running=())

    def read_only():
        metrics = scrape(cluster.app)
        return metrics if metrics("replog_read_only") == 1 else None

    metrics = wait_until(read_only, what="the primary to go read-only")
    assert metrics("replog_available_nodes") == 1
    assert metrics("replog_secondary_state", secondary="a", state="unhealthy") == 1
    assert cluster.post({"message": "refused", "w": 1}).status_int == 503
    assert appends(scrape(cluster.app)) == {("1", "read_only"): 1}


def test_openmetrics_is_served_when_asked_for(cluster):
    cluster.post({"message": "m", "w": 1})
    response = cluster.app.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.content_type == "application/openmetrics-text"
    assert response.text.endswith("# EOF\n")
    families = {family.name: family for family in openmetrics_families(response.text)}
    ok = [s for s in families["replog_appends"].samples
          if s.name == "replog_appends_total" and s.labels == {"w": "1", "outcome": "ok"}]
    assert [s.value for s in ok] == [1]


@pytest.mark.parametrize("accept", [
    "application/openmetrics-text; version=x",  # versions prometheus_client cannot compare
    "text/plain; version=1..0",
    "\xff",  # a byte that is not UTF-8, as WSGI hands it over
])
def test_an_accept_header_that_cannot_be_read_gets_the_text_format(cluster, accept):
    cluster.post({"message": "m", "w": 1})
    for app in (cluster.app, cluster.secondaries["s1"].app):
        response = app.get("/metrics", headers={"Accept": accept})
        assert response.content_type == "text/plain"
        assert "replog_log_length" in Scrape(response.text).families


def test_each_app_counts_only_its_own_appends(make_inprocess_cluster):
    first, second = make_inprocess_cluster(), make_inprocess_cluster()
    first.post({"message": "m", "w": 1})
    assert appends(scrape(first.app)) == {("1", "ok"): 1}
    assert appends(scrape(second.app)) == {}


def test_the_pages_hold_no_data_and_load_nothing_from_elsewhere(cluster):
    page = cluster.app.get("/")
    assert page.content_type == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert 'id="append-form"' in page.text
    assert "http://" not in page.text and "https://" not in page.text


@pytest.mark.parametrize("primary_url, shown", [
    ("http://primary.example:8000", '<a id="primary" href="http://primary.example:8000/">'),
    ("", "This node is a secondary"),
])
def test_a_secondary_page_links_to_the_dashboard_when_it_knows_where(cluster, primary_url, shown):
    s1 = cluster.secondaries["s1"]
    config = SecondaryConfig(node_name="s1", primary_url=primary_url)
    page = webtest.TestApp(make_secondary_app(s1.node, config)).get("/")
    assert page.content_type == "text/html"
    assert shown in page.text
    assert 'id="primary"' in page.text if primary_url else 'id="primary"' not in page.text
