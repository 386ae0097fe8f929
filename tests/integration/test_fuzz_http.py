"""Schemathesis fuzzes both roles against their own OpenAPI documents.

Every response must conform to the document, no undocumented 5xx may come
back (see schemathesis.toml for why 503 and 504 are documented answers), and
afterwards the nodes must still hold the same log. The primary has an API
token, so its document declares the bearer scheme and schemathesis's
ignored_auth check tries it without one; s1 has none.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.http import get_messages, request
from tests.support.waiting import wait_until

CONFIG = Path(__file__).with_name("schemathesis.toml")
TOKEN = "fuzzing-token"
AUTHORIZATION = {"Authorization": f"Bearer {TOKEN}"}


def fuzz(url: str, examples: int, workdir: Path, headers: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
            "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(examples),
            "--generation-database", "none", "--request-timeout", "20",
            *(arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")),
        ],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )


def test_fuzzing_finds_no_server_error_or_spec_violation(make_cluster, tmp_path):
    cluster = make_cluster({"s1": {}, "s2": {}}, primary_env={"API_TOKEN": TOKEN})
    for node, headers in ((cluster.primary, AUTHORIZATION), (cluster["s1"], {})):
        result = fuzz(node.url, examples=150, workdir=tmp_path, headers=headers)
        assert result.returncode == 0, f"schemathesis against {node.name}:\n{result.stdout[-6000:]}"
        assert "No issues found" in result.stdout
    primary = request("GET", f"{cluster.primary.url}/messages", headers=AUTHORIZATION).json["messages"]
    assert primary, "the fuzzer should have appended something"
    for name in ("s1", "s2"):
        wait_until(lambda: get_messages(cluster[name].url) == primary, 15, what=f"{name} to agree")
    cluster.shutdown()  # every line written
    for node in cluster.nodes:
        assert "Traceback" not in node.log()
