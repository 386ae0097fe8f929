"""CurveZMQ certificates for the replication channel: their file names, and the tool that makes them.

    python -m shared.keys [--if-missing] DIR NAME...

creates one pair of zmq.auth certificate files per NAME (a node's NODE_NAME):

- ``DIR/NAME.key``: the public key, mode 0644, for the node's peers;
- ``DIR/NAME.key_secret``: the public and the secret key, mode 0600, for
  the node alone.

zmq.auth writes them; this module adds only the rules around it:

- It never overwrites. If a file of a named pair exists, it says which and
  exits 1 before it writes anything.
- With ``--if-missing``, a pair whose two files exist is kept as it is, and
  only the missing pairs are made; when every pair exists it changes
  nothing and exits 0 (what the compose ``keys`` service runs). Half a pair
  is still an error: the other half cannot be made again to match it.
- A secret key is never readable by others, not even for a moment: zmq.auth
  writes each pair into a private (0700) staging folder inside DIR, and
  this module copies it out with O_EXCL and the final mode.

Bad arguments exit 2. Thread: main; it opens no socket.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import zmq.auth

from shared.runtime.config import ConfigError, parse_node_name

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
PUBLIC_MODE = 0o644
SECRET_MODE = 0o600


def public_file(directory: Path, name: str) -> Path:
    """Where node ``name``'s public certificate lives."""
    return directory / f"{name}{PUBLIC_SUFFIX}"


def secret_file(directory: Path, name: str) -> Path:
    """Where node ``name``'s secret certificate lives."""
    return directory / f"{name}{SECRET_SUFFIX}"


class KeyExists(Exception):
    """A file of a pair to be made exists already. str(error) says which."""


def create_pairs(directory: Path, names: list[str], if_missing: bool = False) -> list[str]:
    """Make the missing pairs of ``names`` in ``directory``; the names made.

    Raises KeyExists, having written nothing, if a pair is in the way: any
    file of it without ``if_missing``, half of it with."""
    directory.mkdir(parents=True, exist_ok=True)
    missing = []
    for name in dict.fromkeys(names):  # each name once, in order
        present = [p for p in (public_file(directory, name), secret_file(directory, name)) if p.exists()]
        if not present:
            missing.append(name)
        elif not if_missing:
            raise KeyExists(f"{present[0]} exists; refusing to overwrite a key "
                            "(remove the pair to replace it)")
        elif len(present) == 1:
            raise KeyExists(f"{present[0]} exists without the other half of its pair; "
                            "remove it to make a new pair")
    for name in missing:
        _create_pair(directory, name)
    return missing


def _create_pair(directory: Path, name: str) -> None:
    with tempfile.TemporaryDirectory(dir=directory, prefix=".staging-") as staging:
        public, secret = zmq.auth.create_certificates(staging, name)
        written = []
        try:
            for staged, final, mode in (
                (public, public_file(directory, name), PUBLIC_MODE),
                (secret, secret_file(directory, name), SECRET_MODE),
            ):
                _copy_exclusive(Path(staged), final, mode)
                written.append(final)
        except FileExistsError as exc:  # another run got there first
            for path in written:
                path.unlink()
            raise KeyExists(f"{exc.filename} appeared while it was being made; nothing written") from None


def _copy_exclusive(source: Path, target: Path, mode: int) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)  # exactly this mode, whatever the umask
        out.write(source.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.keys",
        description="Create a CurveZMQ certificate pair (NAME.key, NAME.key_secret) per node name, "
        "for REPLICATION_KEYS_DIR. Never overwrites a key.",
    )
    parser.add_argument("--if-missing", action="store_true",
                        help="keep the pairs that exist, make only the missing ones, exit 0")
    parser.add_argument("directory", metavar="DIR", type=Path, help="the keys directory")
    parser.add_argument("names", metavar="NAME", nargs="+", help="a node's NODE_NAME")
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            parse_node_name("NAME", name)
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        made = create_pairs(args.directory, args.names, args.if_missing)
    except KeyExists as exc:
        print(f"shared.keys: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"shared.keys: {args.directory}: {exc}", file=sys.stderr)
        return 1
    for name in made:
        print(f"created {public_file(args.directory, name)} and {secret_file(args.directory, name)}")
    if len(made) < len(set(args.names)):
        print(f"kept the existing pairs in {args.directory}: "
              f"{', '.join(n for n in dict.fromkeys(args.names) if n not in made)}")
    return 0

