"""Node readiness as ``podlab get nodes`` and the suites judge it.

Placement moved to the controller manager's scheduler (``harness/kube/
scheduling.py``, ``harness/controllers/scheduler.py``): ``podlab apply`` stores a
pod without ``spec.nodeName`` as Pending, and the scheduler binds it, as in
Kubernetes. What stays here is the node side of that decision, shared with the
tables and the suites: a node is Ready while its agent's heartbeat is younger
than 40 s (the kubelet's node-monitor-grace-period).
"""

from __future__ import annotations

from harness.api.objects import NodeRecord
from harness.kube import scheduling

NODE_READY_WINDOW_S = scheduling.NODE_READY_WINDOW_S


def heartbeat_age_s(node: NodeRecord, now: float) -> float | None:
    """Seconds since the node's last heartbeat, or None if it has none we can read."""
    return scheduling.heartbeat_age_s(node.heartbeat, now)


def is_ready(node: NodeRecord, now: float, window_s: float = NODE_READY_WINDOW_S) -> bool:
    """Ready means the agent has spoken within ``window_s`` seconds."""
    age = heartbeat_age_s(node, now)
    return age is not None and age <= window_s
