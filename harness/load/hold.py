"""Hold a loaded cluster for a while and watch that it stays steady (issue 15's 10 minutes).

Issue 15's goal is a cluster that *holds* its size: no subnet lease lost and no
node marked dead while every pod runs. ``hold`` samples etcd every
``every_s`` for ``seconds``: each node record's heartbeat age (a node is dead,
for every agent's services controller, once its heartbeat is older than the
node grace, ``node_grace_s``, 40 s by default) and the subnet leases held at
the start (a lease is lost when its key is gone, names another node, or was
created again: expired and re-claimed between two samples). It also reads each
hollow runner's published heartbeat health (``hollowrunners/<prefix>``,
harness/hollow/beat.py) at the start and the end: the tick lag of the beats
written during the hold (quantiles of the histogram's growth), the beats more
than a period late and the runner's own lease losses. It judges nothing
itself; the report turns the counts into records with a threshold of 0.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.hollow.beat import runners_prefix
from harness.kube.scheduling import heartbeat_age_s
from harness.load.sli import diff_histograms, histogram_quantile
from harness.store import KV, Store
from harness.store.keys import nodes_prefix, subnets_prefix

NODE_GRACE_S = 40.0  # the agents' default node_grace_s (the host side imports no agent code)


@dataclass
class HoldResult:
    """What a hold saw: how long, over how many nodes and leases, and what went wrong."""

    seconds: float = 0.0
    nodes: int = 0
    leases: int = 0
    samples: int = 0
    dead: set[str] = field(default_factory=set)  # nodes whose heartbeat aged past the grace
    leases_lost: set[str] = field(default_factory=set)  # subnet keys gone or re-owned
    max_heartbeat_age_s: float = 0.0
    runners: int = 0  # hollow runners that published their heartbeat health
    beats: int = 0  # hollow heartbeats written during the hold
    tick_lag_s: dict[int, float] = field(default_factory=dict)  # p50/p90/p99 of those beats
    beats_late: int = 0  # of them, more than a heartbeat period late
    runner_leases_lost: int = 0  # runners' own etcd lease expiries during the hold


def runner_health(store: Store, cluster: str) -> dict[str, dict[str, object]]:
    """Each hollow runner's published record (``hollowrunners/<prefix>``) by prefix."""
    return {kv.key.rsplit("/", 1)[-1]: v for kv, v in _records(store, runners_prefix(cluster))}


def tick_lag(
    res: HoldResult, before: dict[str, dict[str, object]], after: dict[str, dict[str, object]]
) -> None:
    """Fill ``res``' runner fields from two readings of the runners' records."""
    res.runners = len(after)
    le, pooled = diff_histograms(before, after)  # type: ignore[arg-type]
    res.beats = int(pooled[-1]) if pooled else 0
    if res.beats:
        res.tick_lag_s = {q: histogram_quantile(q, le, pooled) for q in (50, 90, 99)}
    for name, rec in after.items():
        old = before.get(name, {})
        for attr, field_name in (("beats_late", "late"), ("runner_leases_lost", "lease_lost")):
            grown = _int(rec.get(field_name)) - _int(old.get(field_name))
            setattr(res, attr, getattr(res, attr) + max(0, grown))


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def heartbeat_epoch(value: object) -> float | None:
    """A node record's heartbeat (epoch seconds or RFC 3339) as epoch seconds."""
    age = heartbeat_age_s(value, 0.0)  # the scheduler's reading of a heartbeat
    return None if age is None else -age


def _records(store: Store, prefix: str) -> list[tuple[KV, dict[str, object]]]:
    """The JSON objects under ``prefix`` with their keys (anything else is skipped)."""
    out = []
    for kv in store.get_prefix(prefix)[0]:
        try:
            value = json.loads(kv.value)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append((kv, value))
    return out


def _leases(store: Store, cluster: str) -> dict[str, tuple[str, int]]:
    """Subnet lease key → (the node holding it, the key's create revision). A lease that
    expired and was claimed again between two samples has a new create revision."""
    return {
        kv.key: (str(value.get("node", "")), kv.create_revision)
        for kv, value in _records(store, subnets_prefix(cluster))
    }


def hold(
    store: Store,
    cluster: str,
    nodes: list[str],
    seconds: float,
    grace_s: float = NODE_GRACE_S,
    every_s: float = 5.0,
    progress: Callable[[int, int], None] = lambda *_: None,
    clock: Callable[[], float] = time.time,
) -> HoldResult:
    """Sample ``nodes``' heartbeats and their subnet leases for ``seconds``; see the module."""
    watched = set(nodes)
    start_leases = {k: v for k, v in _leases(store, cluster).items() if v[0] in watched}
    res = HoldResult(nodes=len(watched), leases=len(start_leases))
    runners_before = runner_health(store, cluster)
    t0 = time.monotonic()
    while True:
        now = clock()
        seen = set()
        for _kv, rec in _records(store, nodes_prefix(cluster)):
            name = str(rec.get("name", ""))
            if name not in watched:
                continue
            seen.add(name)
            beat = heartbeat_epoch(rec.get("heartbeat"))
            age = now - beat if beat is not None else float("inf")
            res.max_heartbeat_age_s = max(res.max_heartbeat_age_s, age)
            if age > grace_s:
                res.dead.add(name)
        res.dead |= watched - seen  # a record that vanished: its lease expired
        leases = _leases(store, cluster)
        res.leases_lost |= {k for k, n in start_leases.items() if leases.get(k) != n}
        res.samples += 1
        elapsed = time.monotonic() - t0
        progress(min(int(elapsed), int(seconds)), int(seconds))
        if elapsed >= seconds:
            break
        time.sleep(min(every_s, max(0.0, seconds - elapsed)))
    res.seconds = time.monotonic() - t0
    tick_lag(res, runners_before, runner_health(store, cluster))
    return res
