"""Stale conntrack after an endpoint leaves: a sweeper beside the programming worker.

For ``SWEEP_S`` after an endpoint's removal, DNATed TCP ``SYN_SENT`` entries
(older than 2 s) and UDP entries towards it are deleted (``conntrack.py``), so
a client retrying on a stale entry lands on a live backend — as kube-proxy
clears stale entries. Sweeps run in a thread of their own, each in a niced
child process: dumping a busy conntrack table takes seconds (measured 19-30 s
for a node whose client opened 50 connections/s on a loaded machine), and a
programming pass must never wait for tidying up, nor share the interpreter
with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable

from harness.agent.proxy import conntrack
from harness.agent.proxy.base import PortChanges, move_counts
from harness.agent.proxy.model import ServicePort

log = logging.getLogger("podlab.services")
SWEEP_S = 5.0  # how long after an endpoint's removal its stuck flows are swept
SLOW_S = 0.5  # a sweep longer than this is logged


class Sweeper:
    """Told the endpoints of every programming pass; sweeps those that left.

    A full sync tells it every port (``programmed``); any other pass only the ports
    that changed (``changed``): it keeps how many ports send to each endpoint, so
    a pass costs the changed ports' endpoints, not a set of every endpoint."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._users: Counter[conntrack.Target] = Counter()  # endpoint → ports using it
        self._gone: dict[conntrack.Target, float] = {}  # endpoints removed, and when
        self._lock = threading.Lock()
        self._due = threading.Event()

    def programmed(self, ports: Iterable[ServicePort]) -> None:
        """Every port now programmed (a full sync; called by the worker after it)."""
        old, self._users = self._users, Counter(t for p in ports for t in conntrack.targets([p]))
        self._moved(set(old) - set(self._users), set(self._users))

    def changed(self, changes: PortChanges) -> None:
        """One pass's changed ports (called by the worker after the proxy applied them)."""
        moves = (
            (
                conntrack.targets([p] if (p := changes.previous.get(k)) else []),
                conntrack.targets([p] if (p := changes.changed.get(k)) else []),
            )
            for k in changes.idents()
        )
        came, left = move_counts(self._users, moves)
        self._moved(left, came)

    def _moved(self, left: set[conntrack.Target], seen: set[conntrack.Target]) -> None:
        """``left``: endpoints no port uses any more; ``seen``: endpoints to look at again
        (one back in use is no longer swept; one still in use was never in ``_gone``)."""
        at = time.monotonic()
        with self._lock:
            for t in seen:
                if t in self._users:
                    self._gone.pop(t, None)
            self._gone.update(dict.fromkeys(left, at))
            if self._gone:
                self._due.set()

    def sweep(self) -> None:
        """Forget conntrack entries stuck on endpoints removed in the last SWEEP_S
        (conntrack.py: a SYN must go unanswered a while before its entry counts as
        stuck, so one sweep at removal time is not enough)."""
        cutoff = time.monotonic() - SWEEP_S
        with self._lock:
            self._gone = {t: since for t, since in self._gone.items() if since >= cutoff}
            gone = set(self._gone)
            if not gone:
                self._due.clear()
                return
        start = time.monotonic()
        try:
            forgotten = conntrack.forget_niced(gone, self.netns)
        except Exception as exc:  # best effort: the datapath is programmed either way
            log.warning("could not sweep conntrack for removed endpoints: %s", exc)
            return
        if (took := time.monotonic() - start) > SLOW_S:
            log.info("conntrack sweep took %.2f s (%d entries forgotten)", took, forgotten)

    def run(self, stop: threading.Event) -> None:
        """The sweeper thread's body."""
        while not stop.is_set():
            if self._due.wait(timeout=1.0):
                self.sweep()
                stop.wait(1.0)  # a SYN needs a while unanswered before it counts as stuck
