"""A spreading scheduler: each new pod goes to the Ready node with the fewest pods.

This is kube-scheduler's "least allocated" idea reduced to pod counts, which is
all a network testbed needs: pods spread across nodes so that cross-node paths
get exercised. Ties go to the node whose name sorts first, so a test run is
reproducible (kube-scheduler breaks ties at random). Pure: the caller passes the
clock's reading and the current counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from harness.api.objects import NodeRecord

# A node is Ready while its agent's heartbeat is younger than this; kubelet's
# node-monitor-grace-period has the same default.
NODE_READY_WINDOW_S = 40.0


def heartbeat_age_s(node: NodeRecord, now: float) -> float | None:
    """Seconds since the node's last heartbeat, or None if it has none we can read."""
    beat = node.heartbeat
    if beat is None or isinstance(beat, bool):
        return None
    if isinstance(beat, int | float):
        return now - float(beat)
    try:
        return now - datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def is_ready(node: NodeRecord, now: float, window_s: float = NODE_READY_WINDOW_S) -> bool:
    """Ready means the agent has spoken within ``window_s`` seconds."""
    age = heartbeat_age_s(node, now)
    return age is not None and age <= window_s


def schedulable(nodes: Iterable[NodeRecord], now: float) -> list[str]:
    """Nodes new pods may go to: Ready, not cordoned, and workers before control planes.

    Like kubeadm's control-plane taint, a node whose record says
    ``role: control-plane`` gets pods only when no other node is Ready.
    """
    ready = [n for n in nodes if is_ready(n, now) and not _extra(n, "unschedulable")]
    workers = [n.name for n in ready if _extra(n, "role") != "control-plane"]
    return workers or [n.name for n in ready]


def _extra(node: NodeRecord, name: str) -> object:
    return (node.model_extra or {}).get(name)


def spread(
    pods: Iterable[str], ready_nodes: Iterable[str], counts: Mapping[str, int]
) -> dict[str, str]:
    """Assign each pod (in order) to the Ready node with the fewest pods so far.

    ``counts`` holds the pods already on each node; assignments made here count
    too, so a batch of new pods spreads evenly. Returns pod → node, empty when
    there is no Ready node (the caller reports that).
    """
    load = {n: counts.get(n, 0) for n in sorted(set(ready_nodes))}
    placed: dict[str, str] = {}
    if not load:
        return placed
    for pod in pods:
        node = min(load, key=lambda n: (load[n], n))
        placed[pod] = node
        load[node] += 1
    return placed
