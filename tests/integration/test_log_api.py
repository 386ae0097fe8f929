"""Batches, pages and tails against real processes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.support.http import get_messages, post_batch, post_message, request
from tests.support.waiting import wait_until


def test_concurrent_appends_never_land_between_a_batchs_messages(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {"REPLICATION_DELAY": "0-0.05"}})
    url = cluster.primary.url
    batches = {f"b{n}": [f"b{n}-{i}" for i in range(50)] for n in range(10)}

    def send_batch(name):
        resp = post_batch(url, batches[name], w=2)
        assert resp.status == 201, resp.body
        return name, resp.json

    def send_singles(n):
        for i in range(20):
            assert post_message(url, f"s{n}-{i}", w=1).status == 201

    with ThreadPoolExecutor(14) as pool:
        singles = [pool.submit(send_singles, n) for n in range(4)]
        answers = dict(pool.map(send_batch, batches))
        for future in singles:
            future.result()
    final = get_messages(url)
    assert len(final) == 10 * 50 + 4 * 20
    for name, messages in batches.items():
        start = final.index(messages[0])
        assert final[start:start + 50] == messages, f"{name} was interleaved"
        assert answers[name]["first_id"] == start and answers[name]["last_id"] == start + 49
    for node in cluster.secondaries.values():
        wait_until(lambda: get_messages(node.url) == final, 20, what=f"{node.name} to converge")


def test_a_batch_waits_for_a_delayed_secondary_and_times_out_with_its_ids(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {"REPLICATION_DELAY": "1"}})
    url = cluster.primary.url
    started = time.monotonic()
    everyone = post_batch(url, ["a", "b"], w=3)
    assert everyone.status == 201 and everyone.json["acks"] == 3
    assert time.monotonic() - started >= 0.9
    hurried = post_batch(url, ["c", "d"], w=3, timeout=0.2)
    assert hurried.status == 504
    assert (hurried.json["first_id"], hurried.json["last_id"], hurried.json["acks"]) == (2, 3, 2)


def test_read_your_writes_on_a_delayed_secondary_with_a_tailing_read(make_cluster):
    cluster = make_cluster({"s1": {}, "s2": {"REPLICATION_DELAY": "1"}})
    written = post_message(cluster.primary.url, "mine", w=1)
    assert written.status == 201
    k = written.json["id"]
    assert get_messages(cluster["s2"].url) == []  # not there yet
    read = request("GET", f"{cluster['s2'].url}/messages?from={k}&wait=5", timeout=10)
    assert read.status == 200 and read.json["messages"] == ["mine"]
    assert 0.5 < read.elapsed < 3, "it returned once the write was visible, not at the deadline"

