"""A node's account of its peers: when each was last heard, and on the primary
the lines operators need to see of each secondary.

``PeerWatch`` notes each frame's arrival (``heard``), excuses the silence
of a stall of this node's own (``excuse_stall``), and on the primary,
after each pass (``watch``), logs what changed: a secondary stops
answering, answers again, restarted without its log, is diverged, has
caught up. ``health`` and ``match_id`` are what /health shows of a peer.

Thread: ``node-io`` only (shared.node.node_io).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.consensus.health import Health, health_at
from shared.consensus.raft import RaftNode, Role
from shared.consensus.raft_progress import Progress, State
from shared.log.node_log import NodeLog
from shared.node.settings import NodeSettings

#: The lines were node-io's before they moved here: log filters and alerts
#: key on the logger's name, so it stays.
log = logging.getLogger("shared.node.node_io")


@dataclass
class _Watch:
    """The primary's running account of one peer, for the lines it logs."""

    since: float  # when this node began to watch it (its silence counts from then)
    health: Health = Health.UNKNOWN
    replied: bool = False
    restarts: int = 0
    timeouts: int = 0
    diverged: str | None = None
    #: A catch-up being watched: (the id it holds from, since when, the id to reach);
    #: ("first answer", since) until its first answer in a term says what it holds.
    catch_up: tuple | None = None
    match: int = -1  # its match length in entries, and as the id after its last message
    match_id: int = 0


class PeerWatch:
    def __init__(self, settings: NodeSettings, node_log: NodeLog) -> None:
        self._settings = settings
        self._log = node_log
        #: When a frame last came from each peer (the silence a primary judges
        #: its secondaries' health by), stalls of this node excused.
        self._heard_at: dict[str, float] = {}
        #: Only these are noted as heard: a frame may claim any name (plain mode).
        self._members = frozenset(settings.peers) - {settings.name}
        self._watches: dict[str, _Watch] = {}

    def heard(self, peer: str, now: float) -> None:
        if peer in self._members:
            self._heard_at[peer] = now

    def heard_at(self, peer: str) -> float | None:
        return self._heard_at.get(peer)

    def excuse_stall(self, stalled: float, now: float) -> None:
        """This node stalled for ``stalled`` seconds: the peers' silence meanwhile
        proves nothing about them, so it does not count."""
        for peer, heard_at in self._heard_at.items():
            self._heard_at[peer] = min(now, heard_at + stalled)
        for watch in self._watches.values():
            watch.since = min(now, watch.since + stalled)

    def watching(self, peer: str) -> bool:
        """Whether this node is the primary that watches ``peer``."""
        return peer in self._watches

    def match_id(self, peer: str) -> int:
        """The id after the last message ``peer`` is known to hold (a watched peer)."""
        return self._watches[peer].match_id

    def health(self, node: RaftNode, peer: str, now: float) -> Health:
        """A watched peer's health, as /health shows it."""
        return self._health(node, peer, self._watches[peer], now)

    def watch(self, node: RaftNode, now: float) -> None:
        """Log what changed of each secondary since the last pass (the primary only)."""
        if node.role not in (Role.PRIMARY, Role.RECOVERING):
            self._watches = {}
            return
        length_id = self._log.next_id
        progress = node.progress()
        for peer in self._settings.peers:
            if peer == node.name:
                continue
            watch = self._watches.setdefault(peer, _Watch(now))
            self._watch_health(node, peer, watch, now)
            if peer in progress:
                self._match_id(progress[peer].match, watch)
                self._watch_life(peer, watch, progress[peer], length_id, now)

    def _watch_health(self, node: RaftNode, peer: str, watch: _Watch, now: float) -> None:
        health = self._health(node, peer, watch, now)
        if health is watch.health:
            return
        was, watch.health = watch.health, health
        if health is Health.DIVERGED:
            return  # the reason was logged, as an ERROR
        if health in (Health.SUSPECTED, Health.UNHEALTHY):
            log.warning("%s is %s: missed heartbeats", peer, health.value)
        elif was is not Health.UNKNOWN or health is not Health.HEALTHY:
            log.info("%s is %s", peer, health.value)
        if was is Health.UNHEALTHY and health is Health.HEALTHY:
            # From what it was known to hold while silent (this pass's answers,
            # which may already carry some of what it missed, are not counted yet).
            watch.catch_up = (watch.match_id, now, self._log.next_id)

    def _watch_life(self, peer: str, watch: _Watch, progress: Progress, length_id: int, now: float) -> None:
        if progress.diverged != watch.diverged:
            watch.diverged = progress.diverged
            if progress.diverged is None:
                log.info("%s follows this primary again", peer)
            else:
                log.error("%s is diverged: %s. It is kept as it is and not written to; to re-join "
                          "it, empty its DATA_DIR or restart it in memory", peer, progress.diverged)
        if progress.restarts > watch.restarts:
            watch.restarts = progress.restarts
            held = self._log.first_id_at(min(progress.next, self._log.length()))
            log.warning("%s restarted (it holds %d messages): resending from there", peer, held)
            watch.catch_up = (held, now, length_id)
        if progress.timeouts > watch.timeouts:
            watch.timeouts = progress.timeouts
            log.info("resending to %s from message %d: no answer within %.2fs", peer,
                     self._log.first_id_at(min(progress.next, self._log.length())), progress.rto())
        elif progress.replied and not watch.replied:
            watch.replied = True
            watch.catch_up = ("first answer", now)
        self._watch_catch_up(peer, watch, progress, length_id, now)

    def _watch_catch_up(self, peer: str, watch: _Watch, progress: Progress, length_id: int,
                        now: float) -> None:
        """Log the end of a catch-up: from a secondary's first answer in this term,
        its return from silence, or its restart, until it holds what the log
        held then."""
        catch_up = watch.catch_up
        if catch_up is None or progress.state is not State.REPLICATE and not progress.match:
            return
        match_id = self._match_id(progress.match, watch)
        if isinstance(catch_up[0], str):  # its first answer: it holds what it matched
            catch_up = watch.catch_up = (match_id, catch_up[1], length_id)
        held, since, target = catch_up
        if match_id < target:
            return
        watch.catch_up = None
        if target > held:
            log.info("%s caught up: %d messages in %.2fs", peer, target - held, now - since)

    def _match_id(self, match: int, watch: _Watch) -> int:
        if match != watch.match:
            watch.match = match
            watch.match_id = self._log.first_id_at(min(match, self._log.length()))
        return watch.match_id

    def _health(self, node: RaftNode, peer: str, watch: _Watch, now: float) -> Health:
        progress = node.progress().get(peer)
        if progress is not None and progress.diverged is not None:
            return Health.DIVERGED
        return health_at(now, self._heard_at.get(peer), watch.since, self._settings)
