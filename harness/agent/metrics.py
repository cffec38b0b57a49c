"""Per-pod CPU and memory from the pods' cgroups, published for the autoscaler and ``top``.

What metrics-server does for Kubernetes, on the node itself: every
``metrics_interval_s`` the agent reads each running pod's cgroup (cumulative
CPU time and working-set memory, harness/agent/cgroups.py), turns CPU time
into a rate over the interval (millicores), and writes one record for the node,
``nodemetrics/<node>``, bound to the node's lease::

    {"timestamp": 1700000000.5, "window": 2.0,
     "node": {"cpu": "350m", "memory": "91Mi"},
     "pods": {"default/web-5d9c7-x2x7q": {"cpu": "120m", "memory": "30Mi"}}}

The node's figures are the sum over its pods (a netns node shares the host's
kernel with every other node, so there is no node-wide figure of its own).
A pod's first sample needs two readings: it appears one interval after it starts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.agent.cgroups import Cgroups
from harness.kube.quantity import BINARY, Quantity
from harness.store import Store, StoreError
from harness.store.keys import nodemetrics_key

log = logging.getLogger("podlab.metrics")
DEFAULT_MAX_PODS = "110"


def capacity(overrides: dict[str, str]) -> dict[str, str]:
    """The node's capacity (cpu count, memory, pods), overridable in agent.yaml."""
    out = {"cpu": str(os.cpu_count() or 1), "memory": _memtotal(), "pods": DEFAULT_MAX_PODS}
    out.update(overrides)
    return out


def _memtotal() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1])}Ki"
    except (OSError, ValueError, IndexError):
        pass
    return "0"


class Publisher:
    """A thread sampling the pods' cgroups and writing ``nodemetrics/<node>``."""

    def __init__(
        self,
        store: Store,
        cluster: str,
        node: str,
        cg: Cgroups,
        pods: Callable[[], list[tuple[str, str]]],
        lease: Callable[[], int],
        interval_s: float,
    ) -> None:
        self.store, self.cluster, self.node, self.cg = store, cluster, node, cg
        self.pods, self.lease, self.interval_s = pods, lease, interval_s
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def sample(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen = set()
        total_cpu, total_mem = 0, 0
        for ns, name in self.pods():
            usage = self.cg.usage(ns, name)
            if usage is None:
                continue
            key = (ns, name)
            seen.add(key)
            prev = self._last.get(key)
            self._last[key] = (now, usage.cpu_ns)
            if prev is None or now <= prev[0] or usage.cpu_ns < prev[1]:
                continue
            milli = round((usage.cpu_ns - prev[1]) / 1e6 / (now - prev[0]))
            total_cpu += milli
            total_mem += usage.memory_bytes
            out[f"{ns}/{name}"] = {
                "cpu": str(Quantity.milli(milli)),
                "memory": _bytes(usage.memory_bytes),
            }
        for gone in set(self._last) - seen:
            del self._last[gone]
        return {
            "timestamp": now,
            "window": self.interval_s,
            "node": {"cpu": str(Quantity.milli(total_cpu)), "memory": _bytes(total_mem)},
            "pods": out,
        }

    def run(self, stop: threading.Event) -> None:
        if self.cg.driver == "none":
            log.warning("no cgroup controllers for pods: no pod metrics (podlab top, HPA)")
            return
        while not stop.wait(self.interval_s):
            record = self.sample(time.time())
            try:
                self.store.put_json(nodemetrics_key(self.cluster, self.node), record, self.lease())
            except StoreError as exc:
                log.warning("publishing metrics: %s", exc)


def _bytes(n: int) -> str:
    """Memory in Ki (a readable canonical form; exact to the KiB)."""
    return str(Quantity.of(n // 1024 * 1024, BINARY))
