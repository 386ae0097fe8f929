"""python -m shared.keys: zmq.auth's files, the right modes, and never an overwrite."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import zmq
import zmq.auth

from shared.wire.keys import main

REPO = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_makes_one_zmq_auth_pair_per_name_with_private_secret_files(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert main([str(keys), "primary", "secondary-1"]) == 0
    assert sorted(p.name for p in keys.iterdir()) == [
        "primary.key", "primary.key_secret", "secondary-1.key", "secondary-1.key_secret",
    ]
    for name in ("primary", "secondary-1"):
        public, none = zmq.auth.load_certificate(keys / f"{name}.key")
        same_public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
        assert none is None and public == same_public
        assert zmq.curve_public(secret) == public  # a real pair
        assert mode(keys / f"{name}.key_secret") == 0o600
        assert mode(keys / f"{name}.key") == 0o644
    assert "created" in capsys.readouterr().out
    # The staging folders are gone.
    assert not [p for p in keys.iterdir() if p.is_dir()]


def test_the_modes_do_not_depend_on_the_umask(tmp_path):
    keys = tmp_path / "keys"
    result = subprocess.run(
        ["sh", "-c", f"umask 000 && {sys.executable} -m shared.keys {keys} n1"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert mode(keys / "n1.key_secret") == 0o600


def test_refuses_to_overwrite_a_key_and_writes_nothing(tmp_path, capsys):
    main([str(tmp_path), "primary"])
    before = snapshot(tmp_path)
    assert main([str(tmp_path), "s1", "primary"]) == 1
    assert snapshot(tmp_path) == before  # not even s1, which was missing
    err = capsys.readouterr().err
    assert "primary.key" in err and "refusing to overwrite" in err


def test_if_missing_changes_nothing_when_every_pair_exists(tmp_path):
    main([str(tmp_path), "primary", "s1"])
    before = snapshot(tmp_path)
    assert main(["--if-missing", str(tmp_path), "primary", "s1"]) == 0
    assert snapshot(tmp_path) == before


def test_if_missing_adds_only_the_missing_pairs(tmp_path):
    main([str(tmp_path), "primary"])
    before = snapshot(tmp_path)
    assert main(["--if-missing", str(tmp_path), "primary", "s3"]) == 0
    after = snapshot(tmp_path)
    assert {k: after[k] for k in before} == before
    assert {"s3.key", "s3.key_secret"} <= set(after)


def test_half_a_pair_is_an_error_even_with_if_missing(tmp_path, capsys):
    main([str(tmp_path), "s1"])
    (tmp_path / "s1.key_secret").unlink()
    assert main(["--if-missing", str(tmp_path), "s1"]) == 1
    assert not (tmp_path / "s1.key_secret").exists()
    assert "without the other half" in capsys.readouterr().err


def test_a_name_that_is_no_node_name_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "shared.keys", str(tmp_path), "../escape"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "NAME: use 1-64 letters" in result.stderr and "'../escape'" in result.stderr
    assert list(tmp_path.iterdir()) == []
