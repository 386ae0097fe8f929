"""GET /metrics of real processes: after a known workload, the counters equal
what was sent and each node's replog_log_length equals its GET /messages."""

from __future__ import annotations

from tests.support.http import get_messages, post_message, request
from tests.support.metrics import Scrape
from tests.support.waiting import wait_until


def scrape(url: str) -> Scrape:
    response = request("GET", f"{url}/metrics", timeout=10)
    assert response.status == 200, response.body
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.body.decode())


def test_counters_equal_the_workload_on_both_roles(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {}})
    sent = {1: 7, 2: 4, 3: 3}
    for w, count in sent.items():
        for i in range(count):
            assert post_message(cluster.primary.url, f"w{w}-{i}", w=w).status == 201
    bad = request("POST", f"{cluster.primary.url}/messages", b"not json",
                  {"Content-Type": "application/json"})
    assert bad.status == 400
    total = sum(sent.values())

    primary = scrape(cluster.primary.url)
    for w, count in sent.items():
        assert primary("replog_appends_total", w=str(w), outcome="ok") == count
        assert primary("replog_append_duration_seconds_count", w=str(w)) == count
    assert primary("replog_appends_total", w="none", outcome="bad_request") == 1
    assert sum(s.value for s in primary.families["replog_appends"].samples) == total + 1
    assert primary("replog_log_length") == len(get_messages(cluster.primary.url)) == total
    assert primary("process_resident_memory_bytes") > 0

    def caught_up(name):
        secondary = scrape(cluster[name].url)
        return secondary if secondary("replog_log_length") == total else None

    for name in ("s1", "s2"):
        secondary = wait_until(lambda: caught_up(name), what=f"{name} to hold every message")
        assert len(get_messages(cluster[name].url)) == total
        assert secondary("replog_received_total") == total
        assert secondary("replog_duplicates_total") == 0
        assert secondary("replog_hidden_ahead") == 0
        assert secondary("process_resident_memory_bytes") > 0

    def no_lag():
        primary = scrape(cluster.primary.url)
        lags = primary.labelled("replog_secondary_lag", "secondary")
        return primary if lags == {"s1": 0, "s2": 0} else None

    primary = wait_until(no_lag, what="the primary to see both caught up")
    acked = primary.labelled("replog_secondary_acked_length", "secondary")
    assert acked == {"s1": total, "s2": total}


def test_with_an_api_token_metrics_need_it_like_the_other_reads(make_cluster):
    token = "metrics-are-data-too"
    cluster = make_cluster({"s1": {"API_TOKEN": token}}, primary_env={"API_TOKEN": token})
    for node in cluster.nodes:
        assert request("GET", f"{node.url}/metrics").status == 401
        answered = request("GET", f"{node.url}/metrics", headers={"Authorization": f"Bearer {token}"})
        assert answered.status == 200
        assert Scrape(answered.body.decode())("replog_log_length") == 0
        assert request("GET", f"{node.url}/").status == 200  # the page holds no data
