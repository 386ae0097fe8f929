"""How many nodes make a quorum.

Pure; thread: any.
"""

from __future__ import annotations


def majority(nodes: int) -> int:
    """The least number of ``nodes`` that any two such sets share one of."""
    return nodes // 2 + 1
