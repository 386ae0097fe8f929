"""The command line of both roles: ``--help``, and nothing else.

Every setting is an environment variable; ``--help`` lists them from the
declarations that parse them (shared.runtime.config), so it cannot drift from the
code. Any other argument is an error: one line naming it, exit code 2.
Thread: main, at start.
"""

from __future__ import annotations

import argparse

from shared.runtime.config import describe_settings


class _OneLineErrors(argparse.ArgumentParser):
    """argparse's errors are a usage line and a message; this keeps the message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def parse_command_line(
    role: str, summary: str, config_type: type, argv: list[str] | None = None
) -> None:
    """Return if there are no arguments; print help and exit 0 for ``-h`` or
    ``--help``; exit 2 for anything else."""
    parser = _OneLineErrors(
        prog=f"python -m {role}",
        description=summary,
        epilog=describe_settings(config_type),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.parse_args(argv)
