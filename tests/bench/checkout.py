"""Which code the node processes run: this checkout, or another one (``--code DIR``).

The benchmark itself (wrk, the checks, the clock, the baseline app) always
runs from this checkout; with ``--code DIR`` every ``python -m primary`` /
``python -m secondary`` is launched with its working directory and
PYTHONPATH in DIR, with the same Python, so one load generator measures
two versions of the product in one sitting (tests.bench.nodes launches
them).

Some scenarios need what only this engine has: ``FEATURES`` names each
such need, and how a checkout is seen to have it (a file and a text in
it). A scenario that writes stores directly, in this checkout's format,
needs the same store layout; one that sets RETENTION_* or reads at
``consistency=linearizable`` needs those settings.

Thread: the benchmark's main thread (``use`` once, before any scenario).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import REPO

#: A need, and (a file of the checkout, a text that file holds when it is met).
FEATURES = {
    "store": ("shared/log/sqlite_log.py", "SCHEMA = 2"),
    "retention": ("shared/runtime/config.py", "RETENTION_MESSAGES"),
    "linearizable": ("shared/web/reads.py", "linearizable"),
}
#: What each need means, for the message that refuses or skips a scenario.
MEANING = {
    "store": "writes stores directly in this checkout's format (schema 2)",
    "retention": "sets RETENTION_MESSAGES",
    "linearizable": "reads at consistency=linearizable",
}


@dataclass(frozen=True)
class Checkout:
    path: Path

    @property
    def is_this(self) -> bool:
        return self.path == REPO

    def has(self, feature: str) -> bool:
        relative, text = FEATURES[feature]
        try:
            return text in (self.path / relative).read_text()
        except OSError:
            return False

    def missing(self, needs: tuple[str, ...]) -> list[str]:
        """What of ``needs`` this checkout lacks, each said in words."""
        return [MEANING[need] for need in needs if not self.has(need)]


_current = Checkout(REPO)


def use(path: Path) -> Checkout:
    """Launch the nodes from ``path`` from now on. Raises ValueError if it is no checkout."""
    path = path.resolve()
    if not (path / "primary" / "__main__.py").is_file() or not (path / "secondary" / "__main__.py").is_file():
        raise ValueError(f"{path} holds no primary/ and secondary/ packages: not a checkout of this project")
    global _current
    _current = Checkout(path)
    return _current


def current() -> Checkout:
    return _current
