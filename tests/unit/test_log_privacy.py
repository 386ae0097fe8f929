"""Message bodies may be private: no log line above DEBUG carries one."""

from __future__ import annotations

import json
import logging

import zmq

from shared.runtime.config import DelayRange
from tests.support.waiting import wait_until

SECRET = "s3cr3t-payload-7f9a"


def test_no_log_line_above_debug_carries_a_message_body(ctx, make_inprocess_cluster, caplog):
    caplog.set_level(logging.DEBUG)
    cluster = make_inprocess_cluster(delays={"s2": DelayRange(0.05, 0.05)})
    cluster.post({"message": SECRET, "w": 3})
    cluster.post({"message": SECRET, "w": 3, "timeout": 0.01})  # 504 path
    cluster.post({"message": SECRET, "w": 2}, headers={"Idempotency-Key": "k"})
    cluster.post({"message": SECRET + "!", "w": 2}, headers={"Idempotency-Key": "k"})  # 409
    cluster.post({"message": SECRET, "w": SECRET})  # 400 echoes it to the client only
    cluster.post({"message": SECRET, SECRET: 1})
    cluster.post(json.dumps({"message": SECRET}).encode()[:-2])
    cluster.post({"message": SECRET}, content_type="text/plain")
    # malformed frames carrying the secret, straight at a secondary
    # (two peers: bad frames are logged once per peer per interval)
    dealers = [ctx.socket(zmq.DEALER) for _ in range(2)]
    for dealer in dealers:
        dealer.connect(cluster.secondaries["s1"].receiver.endpoint)
    leader = {"history": SECRET, "segments": [[1, SECRET, 0]]}
    dealers[0].send(b"APPEND c1 0 " + json.dumps(leader).encode() + b"\n" + SECRET.encode())
    dealers[1].send(SECRET.encode() + b" c1 {}")
    wait_until(
        lambda: sum("bad frame" in r.getMessage() for r in caplog.records) >= 2,
        what="both bad frames to be logged",
    )
    for dealer in dealers:
        dealer.close()
    cluster.stop()
    fragment = SECRET[:6]  # a part of a body is as bad as the whole
    leaks = [r for r in caplog.records if r.levelno > logging.DEBUG and fragment in r.getMessage()]
    assert leaks == []
    assert any(r.levelno == logging.INFO and "append id=" in r.getMessage() for r in caplog.records)
