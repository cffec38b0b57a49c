"""Network programming latency, measured as kube-proxy measures it (issue 15).

kube-proxy observes ``now - trigger`` into
``kubeproxy_network_programming_duration_seconds`` after each successful rules
sync, for every endpoint change the sync applied; the trigger is the time of the
Pod change that caused it (the EndpointSlice's ``last-change-trigger-time``).
podlab's agents derive endpoints from pod statuses themselves, so the trigger is
the pod's own ``Ready`` condition ``lastTransitionTime`` (written by the agent
or hollow node that runs the pod). A batch keeps every trigger it gathered, as
kube-proxy does; changes seen in the first listing (agent start) are not
observed: they were not programmed by a change.

The agent publishes the cumulative histogram (kube-proxy's buckets) as
``netprog/<node>``, bound to its node lease, at most once a second::

    {"le": [0.25, 0.5, 1, ...], "counts": [3, 5, 5, ...], "sum_s": 0.9, "count": 5}

``counts[i]`` is the number of observations ≤ ``le[i]`` (Prometheus' cumulative
buckets); ``podlab load`` takes the difference between two readings and computes
quantiles the way ``histogram_quantile`` does.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from harness.store import Store, StoreError
from harness.store.keys import kind_prefix

log = logging.getLogger("podlab.netprog")

# kube-proxy's buckets (pkg/proxy/metrics): 0.25, 0.5, 1..59 by 1, 60..115 by 5, 120..300 by 30
BUCKETS: tuple[float, ...] = (
    0.25,
    0.5,
    *(float(s) for s in range(1, 60)),
    *(float(s) for s in range(60, 120, 5)),
    *(float(s) for s in range(120, 301, 30)),
)
# finer buckets below 1 s: podlab's own goal is p99 <= 1 s, which kube-proxy's cannot resolve
FINE: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2)
LE: tuple[float, ...] = FINE + BUCKETS
PUBLISH_S = 1.0


def netprog_key(cluster: str, node: str) -> str:
    """``/podlab/v1/<cluster>/netprog/<node>``: one agent's histogram."""
    return f"{kind_prefix(cluster, 'netprog')}{node}"


def ready_transition(status: dict[str, Any]) -> float | None:
    """The epoch seconds of a pod status' Ready ``lastTransitionTime``, if it has one."""
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            text = cond.get("lastTransitionTime")
            if not text:
                return None
            try:
                return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None
    return None


class Histogram:
    """Cumulative bucket counts with kube-proxy's bounds (plus finer ones below 1 s)."""

    def __init__(self) -> None:
        self.counts = [0] * len(LE)
        self.sum_s = 0.0
        self.count = 0

    def observe(self, value_s: float) -> None:
        value_s = max(0.0, value_s)
        for i in range(bisect.bisect_left(LE, value_s), len(LE)):
            self.counts[i] += 1
        self.sum_s += value_s
        self.count += 1

    def record(self) -> dict[str, Any]:
        return {"le": list(LE), "counts": list(self.counts), "sum_s": self.sum_s,
                "count": self.count}  # fmt: skip


class ProgrammingLatency:
    """Triggers gathered from pod status events, observed once a pass has programmed them.

    ``changed`` runs on the watch thread, ``begin``/``done`` on the programming
    worker: the triggers taken by ``begin`` are the ones that pass applies.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.hist = Histogram()
        self._seen: dict[str, float] = {}  # pod status key → last Ready transition seen
        self._pending: list[float] = []
        self._lock = threading.Lock()
        self.version = 0  # bumped by every observation: the publisher writes on change

    def listed(self, key: str, status: dict[str, Any] | None) -> None:
        """A pod status from a listing: remembered, not observed."""
        t = ready_transition(status) if status else None
        with self._lock:
            if t is not None:
                self._seen[key] = t

    def changed(self, key: str, status: dict[str, Any] | None) -> None:
        """A pod status event: a new Ready transition is a trigger."""
        with self._lock:
            if status is None:
                self._seen.pop(key, None)
                return
            t = ready_transition(status)
            if t is None or self._seen.get(key) == t:
                return
            self._seen[key] = t
            self._pending.append(t)

    def begin(self) -> list[float]:
        """The triggers a pass about to start will apply."""
        with self._lock:
            taken, self._pending = self._pending, []
        return taken

    def done(self, taken: list[float]) -> None:
        """The pass applied ``taken``: observe now − trigger for each."""
        if not taken:
            return
        now = self.clock()
        with self._lock:
            for t in taken:
                self.hist.observe(now - t)
            self.version += 1

    def retry(self, taken: list[float]) -> None:
        """The pass failed: its triggers wait for the next one (their age keeps growing)."""
        with self._lock:
            self._pending = taken + self._pending

    def run_publisher(
        self, store: Store, key: str, lease: Callable[[], int], stop: threading.Event
    ) -> None:
        """Write the histogram to ``key`` (bound to the node lease) whenever it changed."""
        written = -1
        while not stop.wait(PUBLISH_S):
            with self._lock:
                version, record = self.version, self.hist.record()
            if version == written:
                continue
            try:
                store.put(key, json.dumps(record), lease=lease())
                written = version
            except StoreError as exc:
                log.debug("netprog publish failed: %s", exc)
