"""A linearizable read's confirmation: what GET /messages?consistency=linearizable waits for.

``confirm`` hands ``node-io`` a read index request (shared.node.requests.ReadIndexWait)
and waits until this node holds, committed, everything committed before the
read began (Raft's read index, thesis §6.4: shared.consensus.raft), or
until ``timeout``. Many reads that come at once share one confirmation.

Thread: any Waitress worker.
"""

from __future__ import annotations

from typing import Callable

from shared.node.node_io import NodeIo
from shared.node.requests import ReadIndexWait


def confirmer(node: NodeIo, timeout: float) -> Callable[[], bool]:
    """What shared.web.reads.Reads calls to make a read linearizable."""

    def confirm() -> bool:
        wait = ReadIndexWait()
        node.read_index(wait)
        return wait.wait(timeout) and wait.index is not None

    return confirm
