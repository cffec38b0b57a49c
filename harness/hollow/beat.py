"""The hollow runner's heartbeat: one etcd lease, one transaction per tick (ADR 0013, 7).

A real agent heartbeats with two calls per period (refresh its lease, rewrite its
node record). A runner doing that for 1,000 nodes made 133 blocking calls a
second and, on a starved CPU, fell so far behind that every node was seen dead.
So a runner holds **one** etcd lease (the agents' TTL) for all its nodes' records
and subnets, refreshes it once per tick, and every tick rewrites the records of
the nodes whose heartbeat is due in transactions of up to ``MAX_TXN_OPS`` puts:
about one call a second for 1,000 nodes. Each node keeps its own period
(``heartbeat_s``, the agent's) on a fixed grid, so its heartbeat age in etcd
stays what a real node's is.

The **tick lag** of a beat is how long after the first tick at or after its due
time its write landed (a beat waiting up to one tick on time is not late). It is
counted in a cumulative histogram (``LagHistogram``), logged, and published as
``hollowrunners/<prefix>`` (bound to the runner's lease, every ``PUBLISH_S``)::

    {"le": [0.01, ...], "counts": [...], "sum_s": 1.2, "count": 20000, "max_s": 0.4,
     "late": 0, "nodes": 1000, "heartbeat_s": 15.0, "tick_s": 1.0, "ticks": 600,
     "lease_lost": 0}

``late`` counts beats more than one heartbeat period late (a node's heartbeat age
then exceeded two periods; the grace is 40 s against a 15 s period). ``podlab
load --hold`` reads it before and after the hold, as it reads the agents'
``netprog`` histograms.
"""

from __future__ import annotations

import bisect
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from harness.store.keys import kind_prefix

# seconds; the last bound catches anything (a runner stopped for an hour)
LE: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    60.0, 120.0, 3600.0,
)  # fmt: skip
PUBLISH_S = 10.0  # how often the runner rewrites its hollowrunners/ record
LOG_S = 60.0  # how often it logs a summary line
WINDOW = 100_000  # beats kept for the log line's exact quantiles


def runners_prefix(cluster: str) -> str:
    return kind_prefix(cluster, "hollowrunners")


def runner_key(cluster: str, prefix: str) -> str:
    """``/podlab/v1/<cluster>/hollowrunners/<prefix>``: one runner's heartbeat health."""
    return f"{runners_prefix(cluster)}{prefix}"


def tick_s(heartbeat_s: float) -> float:
    """The ticker's period: 1 s, finer for short test heartbeats (4 ticks per period)."""
    return min(1.0, heartbeat_s / 4)


@dataclass
class LagHistogram:
    """Cumulative counts of beat lags (Prometheus' buckets), with a window for the log."""

    counts: list[int] = field(default_factory=lambda: [0] * len(LE))
    sum_s: float = 0.0
    count: int = 0
    max_s: float = 0.0
    late: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def observe(self, lag_s: float, period_s: float) -> None:
        lag_s = max(0.0, lag_s)
        for i in range(bisect.bisect_left(LE, lag_s), len(LE)):
            self.counts[i] += 1
        self.sum_s += lag_s
        self.count += 1
        self.max_s = max(self.max_s, lag_s)
        if lag_s > period_s:
            self.late += 1
        self.recent.append(lag_s)

    def window(self) -> tuple[int, float, float, float]:
        """The recent beats: how many, and their lag p50, p99 and max (nearest rank)."""
        vals = sorted(self.recent)
        if not vals:
            return 0, 0.0, 0.0, 0.0
        rank = lambda q: vals[min(len(vals) - 1, int(q / 100 * len(vals)))]  # noqa: E731
        return len(vals), rank(50), rank(99), vals[-1]

    def record(self, **extra: Any) -> str:
        """The published JSON (``hollowrunners/<prefix>``), with ``extra`` fields."""
        body = {
            "le": list(LE),
            "counts": self.counts,
            "sum_s": round(self.sum_s, 6),
            "count": self.count,
            "max_s": round(self.max_s, 6),
            "late": self.late,
            **extra,
        }
        return json.dumps(body, sort_keys=True)


def next_due(due: float, done: float, period_s: float) -> float:
    """A node's next heartbeat: one period after the one just due, on its own grid, so a
    late write does not push every later beat back (the nodes stay spread over the
    period); a node a whole period behind starts a new grid one period after the write
    that just landed (its heartbeat is fresh: no burst of missed beats)."""
    nxt = due + period_s
    return nxt if nxt > done else done + period_s
