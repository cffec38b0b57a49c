"""kube-scheduler, reduced to what a network testbed needs: fit by requests, then spread.

Filter (as kube-scheduler's plugins do): the node is Ready (its agent's
heartbeat is younger than 40 s), not cordoned, not a control plane while a
worker is Ready (kubeadm's taint, which podlab relaxes for one-node clusters),
and has room: Σ requests of its pods + the pod's ≤ allocatable for cpu and
memory, and fewer pods than its ``pods`` capacity. Score: LeastAllocated over
cpu and memory, with kube-scheduler's non-zero defaults for pods that request
nothing (100m, 200Mi), plus the spread of a controller's pods over nodes (what
the default topology spreading does), so replicas land on different nodes.
Ties go to the node whose name sorts first, so runs are reproducible (the real
scheduler picks at random). A pod that fits nowhere gets kube-scheduler's
message: ``0/3 nodes are available: 1 node(s) had untolerated taint
{node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu.``
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from harness.kube import resources
from harness.kube.quantity import Quantity

Obj = dict[str, Any]
# A node is Ready while its agent's heartbeat is younger than this (the kubelet's
# node-monitor-grace-period has the same default).
NODE_READY_WINDOW_S = 40.0
DEFAULT_MILLI_CPU = 100  # kube-scheduler's non-zero request for scoring
DEFAULT_MEMORY = 200 * 1024 * 1024
DEFAULT_MAX_PODS = 110
SPREAD_WEIGHT = 2  # a controller's pods spread before free capacity decides
CP_TAINT = "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"
NOT_READY_TAINT = "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
CORDONED = "node(s) were unschedulable"


def heartbeat_age_s(beat: Any, now: float) -> float | None:
    """Seconds since a heartbeat (epoch seconds or RFC 3339), None if unreadable."""
    if beat is None or isinstance(beat, bool):
        return None
    if isinstance(beat, int | float):
        return now - float(beat)
    try:
        return now - datetime.fromisoformat(str(beat).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class NodeInfo:
    """A node as the scheduler sees it: capacity and what its pods request."""

    name: str
    ready: bool
    cordoned: bool = False
    control_plane: bool = False
    cpu_milli: int | None = None  # allocatable; None: not reported (no limit)
    memory: int | None = None
    max_pods: int = DEFAULT_MAX_PODS
    used_cpu: int = 0
    used_memory: int = 0
    score_cpu: int = 0  # with the non-zero defaults
    score_memory: int = 0
    pods: int = 0
    owners: Counter[str] = field(default_factory=Counter)

    @staticmethod
    def from_record(record: Obj, now: float) -> NodeInfo:
        age = heartbeat_age_s(record.get("heartbeat"), now)
        alloc = record.get("allocatable") or record.get("capacity") or {}
        cpu = _quantity(alloc.get("cpu"))
        mem = _quantity(alloc.get("memory"))
        pods = _quantity(alloc.get("pods"))
        return NodeInfo(
            name=str(record.get("name")),
            ready=age is not None and age <= NODE_READY_WINDOW_S,
            cordoned=bool(record.get("unschedulable")),
            control_plane=record.get("role") == "control-plane",
            cpu_milli=cpu.milli_value() if cpu else None,
            memory=mem.int_value() if mem else None,
            max_pods=pods.int_value() if pods else DEFAULT_MAX_PODS,
        )

    def add(self, pod: Obj) -> None:
        cpu, mem = pod_request(pod)
        self.used_cpu += cpu
        self.used_memory += mem
        self.score_cpu += cpu or DEFAULT_MILLI_CPU
        self.score_memory += mem or DEFAULT_MEMORY
        self.pods += 1
        owner = owner_uid(pod)
        if owner:
            self.owners[owner] += 1


def _quantity(text: Any) -> Quantity | None:
    try:
        return Quantity.parse(text) if text is not None else None
    except ValueError:
        return None


def pod_request(pod: Obj) -> tuple[int, int]:
    """(millicores, bytes) the pod requests."""
    req = resources.pod_requests(pod)
    cpu = req["cpu"].milli_value() if "cpu" in req else 0
    mem = req["memory"].int_value() if "memory" in req else 0
    return cpu, mem


def owner_uid(pod: Obj) -> str:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or ref.get("name") or "")
    return ""


def _fit(node: NodeInfo, cpu: int, mem: int) -> list[str]:
    why = []
    if node.pods + 1 > node.max_pods:
        why.append("Too many pods")
    if node.cpu_milli is not None and cpu and node.used_cpu + cpu > node.cpu_milli:
        why.append("Insufficient cpu")
    if node.memory is not None and mem and node.used_memory + mem > node.memory:
        why.append("Insufficient memory")
    return why


def _score(node: NodeInfo, pod: Obj, owner: str, spread_max: int) -> float:
    cpu, mem = pod_request(pod)
    parts = []
    for cap, used, want in (
        (node.cpu_milli, node.score_cpu, cpu or DEFAULT_MILLI_CPU),
        (node.memory, node.score_memory, mem or DEFAULT_MEMORY),
    ):
        if cap:
            parts.append(max(0.0, (cap - used - want) * 100 / cap))
        else:  # capacity unknown: fewer pods is better
            parts.append(100.0 / (1 + node.pods))
    score = sum(parts) / len(parts)
    if owner:
        score += SPREAD_WEIGHT * 100 * (1 - node.owners[owner] / (spread_max + 1))
    return score


def choose(pod: Obj, nodes: list[NodeInfo]) -> tuple[NodeInfo | None, str]:
    """The best node for ``pod`` (and account for it there), or None and why not."""
    cpu, mem = pod_request(pod)
    workers_ready = any(n.ready and not n.cordoned and not n.control_plane for n in nodes)
    reasons: Counter[str] = Counter()
    fits = []
    for node in nodes:
        if not node.ready:
            reasons[NOT_READY_TAINT] += 1
        elif node.cordoned:
            reasons[CORDONED] += 1
        elif node.control_plane and workers_ready:
            reasons[CP_TAINT] += 1
        elif why := _fit(node, cpu, mem):
            for w in why:
                reasons[w] += 1
        else:
            fits.append(node)
    if not fits:
        parts = sorted(f"{count} {why}" for why, count in reasons.items())
        return None, f"0/{len(nodes)} nodes are available: {', '.join(parts)}."
    owner = owner_uid(pod)
    spread_max = max((n.owners[owner] for n in fits), default=0) if owner else 0
    best = max(fits, key=lambda n: (_score(n, pod, owner, spread_max), _neg(n.name)))
    best.add(pod)
    return best, ""


def _neg(name: str) -> tuple[int, ...]:
    """Sort key that makes ``max`` prefer the name that sorts first."""
    return (*(-ord(c) for c in name), 0)
