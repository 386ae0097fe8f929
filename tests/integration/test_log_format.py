"""LOG_FORMAT=json with real processes: every line either role writes, from
start to shutdown, is one JSON object with the documented fields, and no
escape code appears even where FORCE_COLOR asks for colour."""

from __future__ import annotations

import json

from tests.support.http import post_message
from tests.support.processes import Node

JSON_LOGS = {"LOG_FORMAT": "json", "FORCE_COLOR": "1"}
FIELDS = {"time", "level", "logger", "thread", "message"}


def json_lines(node: Node) -> list[dict]:
    """Every line of ``node``'s log, parsed; fails on the first that is no JSON object."""
    raw = node.log_path.read_bytes()
    assert b"\033" not in raw, "an escape code in a JSON log"
    lines = raw.decode().splitlines()
    assert lines, f"{node.name} logged nothing"
    parsed = []
    for line in lines:
        fields = json.loads(line)
        assert isinstance(fields, dict) and FIELDS <= fields.keys(), line
        parsed.append(fields)
    return parsed


def test_both_roles_write_only_json_lines(make_cluster):
    cluster = make_cluster({"s1": JSON_LOGS}, primary_env={**JSON_LOGS, "HEARTBEAT_INTERVAL": "0.1"})
    assert post_message(cluster.primary.url, "hello", w=2).status == 201
    assert cluster["s1"].stop() == 0
    # Without s1 a w=2 append cannot succeed: a timeout, or read-only once s1
    # is unhealthy; either way the primary logs a WARNING.
    assert post_message(cluster.primary.url, "alone", w=2, timeout=0.5).status in (503, 504)
    assert cluster.primary.stop() == 0

    primary, secondary = json_lines(cluster.primary), json_lines(cluster["s1"])
    for lines in (primary, secondary):
        messages = [line["message"] for line in lines]
        assert any(" ready: " in m for m in messages) and messages[-1] == "stopped"
    assert {"INFO", "WARNING"} <= {line["level"] for line in primary}
    assert any(line["logger"].startswith("primary") for line in primary)
    assert len({line["thread"] for line in primary}) > 1  # the main thread's, and workers'


def test_text_lines_are_coloured_under_force_color(tmp_path):
    """The control: the FORCE_COLOR=1 above reaches the process, and would colour text."""
    node = Node("secondary", "s-text", tmp_path, {"FORCE_COLOR": "1"}).start()
    try:
        node.wait_ready()
    finally:
        assert node.stop() == 0
    assert "\033[" in node.log() and " ready: " in node.log()
