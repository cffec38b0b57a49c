"""Node liveness for the services controller: which nodes' pods may still serve.

Kubernetes' node lifecycle controller, on one node's own clock: the agents'
node records (``nodes/<name>``, rewritten every heartbeat) are watched for
liveness only. A node whose record is deleted (its lease expired) or silent
for ``grace_s`` is dead, and its pods count as NotReady — they leave service
endpoints and headless DNS answers until the node is heard from again.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("podlab.services")


class NodeLiveness:
    """Which nodes are alive, judged by when their records were last written.

    Times are this process's monotonic clock at the moment an event arrived,
    never the heartbeat written inside the record: nodes' clocks differ, and
    ours only has to agree with itself. The watch is our only ear, so silence is
    measured against the newest write from *any* node: while nothing arrives at
    all (etcd down, or this node cut off from it) the clock stops ``grace_s / 2``
    after that write, and that deaf span counts against nobody once writes
    resume — an outage of our own must neither empty every service nor make the
    first heartbeat after it condemn all the nodes whose own have not arrived
    yet. Live agents write more often than every ``grace_s / 2`` (the agent
    config insists), so the pause never starts while we are listening.

    Not thread-safe: the controller calls it under its lock.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._last: dict[str, float] = {}  # node → last write, on the clock that judges
        self._wrote: dict[str, float] = {}  # node → last write, really (for the log)
        self._gone: set[str] = set()  # records deleted (lease expired, node removed)
        self._newest = 0.0  # the latest write from any node: proof we still hear etcd
        self._declared: set[str] = set()  # dead as of the last changed()
        self._unseen: dict[str, float] = {}  # back from the dead → how long it was silent

    def _clock(self, now: float) -> float:
        return min(now, self._newest + self.grace_s / 2)

    def _dead(self, name: str, now: float) -> bool:
        return name in self._gone or self._clock(now) - self._last[name] > self.grace_s

    def _hear(self, now: float) -> None:
        deaf = now - (self._newest + self.grace_s / 2)
        if self._last and deaf > 0:  # the clock stood still: shift everyone with it
            self._last = {name: t + deaf for name, t in self._last.items()}
        self._newest = max(self._newest, now)

    def seen(self, name: str, now: float) -> bool:
        """A write of ``name``'s record; True only when that changes its liveness
        (a new node, or one back from the dead) — a heartbeat is not news."""
        self._hear(now)
        prev = self._last.get(name)
        news = prev is None
        if prev is not None and self._dead(name, now):
            self._unseen[name] = now - self._wrote[name]  # back from the dead
            news = True
        self._last[name] = self._wrote[name] = now
        self._gone.discard(name)
        return news

    def gone(self, name: str) -> bool:
        """``name``'s record was deleted; True when that changes its liveness."""
        if name not in self._last or name in self._gone:
            return False
        self._gone.add(name)
        return True

    def reset(self, names: list[str], now: float) -> None:
        """A re-list: the records present count as written now, the others as deleted."""
        for name in set(self._last) - set(names):
            self._gone.add(name)
        for name in names:
            self.seen(name, now)

    def next_verdict(self, now: float) -> float:
        """Seconds until the next live node would cross the grace (at most 1 s): the
        controller wakes then, so a verdict is not late by a polling period."""
        due = [t + self.grace_s for n, t in self._last.items() if not self._dead(n, now)]
        return min([1.0, *(d - self._clock(now) + 0.005 for d in due)])

    def dead(self, now: float) -> set[str]:
        """The known nodes that are dead at ``now``."""
        return {name for name in self._last if self._dead(name, now)}

    def is_dead(self, name: str, now: float) -> bool:
        """Whether a pod bound to ``name`` sits on a dead node.

        A node without any record is dead once records exist at all (its agent
        never started, or its record is long gone); with none, nothing writes
        them (a controller without agents) and every node counts as alive.
        """
        if name in self._last:
            return self._dead(name, now)
        return bool(self._last)

    def verdicts(self, now: float) -> tuple[frozenset[str], bool]:
        """What decides ``is_dead`` for every node at ``now``: the known dead nodes, and
        whether any record exists (unknown nodes are dead then). The controller
        recomputes every service when this moves."""
        return frozenset(self.dead(now)), bool(self._last)

    def changed(self, now: float) -> bool:
        """Whether the dead set moved since the last call: a node crossed the grace
        with no event to say so, or came back. Logs each verdict once."""
        dead = self.dead(now)
        if dead == self._declared:
            return False
        for name in sorted(dead - self._declared):
            why = "record deleted" if name in self._gone else "no heartbeat"
            log.info(
                "node %s is dead (%s, last seen %.1f s ago): its pods leave endpoints",
                name,
                why,
                now - self._wrote[name],
            )
        for name in sorted(self._declared - dead):
            log.info(
                "node %s is alive again (unseen for %.1f s): its pods are endpoints again",
                name,
                self._unseen.pop(name, 0.0),
            )
        self._declared = dead
        return True


def not_ready(status: dict[str, Any]) -> dict[str, Any]:
    """A pod status as the node lifecycle controller leaves it when its node dies."""
    conds = [c for c in status.get("conditions", []) if c.get("type") != "Ready"]
    ready = {"type": "Ready", "status": "False", "reason": "NodeDead"}
    return {**status, "conditions": [*conds, ready]}
