"""``python -m primary|secondary --help`` lists the settings the code reads,
as the README's configuration table does; any other argument is an error."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.processes import REPO

ROLES = ("primary", "secondary")
#: What a README row's role cell names, and what a failover node's --help is run with.
CELL_ROLES = {"all": ("primary", "secondary", "failover"), "both": ("primary", "secondary")}
FAILOVER_ENV = {"PEERS": "a=tcp://127.0.0.1:1"}
#: A help line naming a variable: "  HTTP_PORT   default: 8000".
_HELP_SETTING = re.compile(r"^  ([A-Z][A-Z0-9_]*) +default: (.*)$")
_TABLE_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| ([a-z, ]+) \| ([^|]*) \|")
#: A default cell that differs by role: "primary: `64`; secondary: `8`; failover: `64`".
_PER_ROLE = re.compile(r"^(primary|secondary|failover): ")


def run_role(role: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", role, *args], cwd=REPO, env=env or {}, capture_output=True,
        text=True, timeout=30,
    )


def help_settings(role: str) -> dict[str, str]:
    """Variable -> default, as ``--help`` states them (a failover node's: with PEERS set)."""
    result = (run_role("secondary", "--help", env=FAILOVER_ENV) if role == "failover"
              else run_role(role, "--help"))
    assert result.returncode == 0, result.stderr
    return dict(m.groups() for m in map(_HELP_SETTING.match, result.stdout.splitlines()) if m)


def readme_settings(role: str) -> dict[str, str]:
    """Variable -> default, as the README's configuration table states them for ``role``."""
    settings = {}
    for line in (REPO / "README.md").read_text().splitlines():
        row = _TABLE_ROW.match(line)
        if row is None:
            continue
        cell_roles = {r for cell in row[2].split(", ") for r in CELL_ROLES.get(cell, (cell,))}
        if role in cell_roles:
            default = row[3].strip()
            if _PER_ROLE.match(default):
                default = dict(part.split(": ", 1) for part in default.split("; "))[role]
            settings[row[1]] = default.replace("`", "")
    return settings


@pytest.mark.parametrize("role", ROLES + ("failover",))
def test_help_lists_the_same_settings_and_defaults_as_the_readme(role):
    in_help = help_settings(role)
    in_readme = readme_settings(role)
    assert len(in_help) >= 10, "the help should list every setting"
    assert sorted(in_help) == sorted(in_readme)
    assert in_help == in_readme


@pytest.mark.parametrize("role", ROLES)
def test_help_is_printed_even_with_a_bad_environment(role):
    result = run_role(role, "-h", env={"HTTP_PORT": "not a port"})
    assert result.returncode == 0 and "HTTP_PORT" in result.stdout


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("args", [("--port", "8000"), ("serve",), ("--hel",)])
def test_any_other_argument_exits_2_with_one_line_naming_it(role, args):
    result = run_role(role, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and args[0] in lines[0], result.stderr
    assert result.stdout == ""
