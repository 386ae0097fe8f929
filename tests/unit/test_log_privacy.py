"""Message bodies may be private: no log line above DEBUG carries one."""

from __future__ import annotations

import json
import logging

from shared.consensus.raft_log import Entry
from shared.consensus.raft_messages import AppendEntries
from shared.runtime.config import DelayRange
from shared.wire.frames import encode, encode_entry
from tests.support.raw_peer import ENVELOPE, RawPeer
from tests.support.waiting import wait_until

SECRET = "s3cr3t-payload-7f9a"


def carrying_the_secret(sender: str) -> AppendEntries:
    return AppendEntries(sender, 1, 1, 0, 0, 0, (Entry(1, encode_entry(SECRET), 1),), 0)


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
    # Frames carrying the secret, straight at a secondary: one it cannot decode,
    # two its core refuses (each from another peer: one line per peer per interval).
    peer = RawPeer(ctx, cluster.secondaries["s1"].node.endpoint)
    try:
        undecodable = encode(carrying_the_secret("primary"), ENVELOPE).replace(
            encode_entry(SECRET), encode_entry(SECRET)[:-1])
        peer.send(undecodable)
        peer.send(carrying_the_secret("s1"))  # claims to come from s1 itself
        peer.send(carrying_the_secret("intruder"))  # contradicts an entry s1 holds committed
        wait_until(
            lambda: sum("dropped a bad frame" in r.getMessage() for r in caplog.records) >= 3,
            what="the three bad frames to be logged",
        )
    finally:
        peer.close()
    cluster.stop()
    fragment = SECRET[:6]  # a part of a body is as bad as the whole
    leaks = [r for r in caplog.records if r.levelno > logging.DEBUG and fragment in r.getMessage()]
    assert leaks == []
    assert any(r.levelno == logging.INFO and "append id=" in r.getMessage() for r in caplog.records)
