"""One cluster's objects as a node sees them: its own, or a remote's as mirrored.

Keys are read relative to ``/podlab/v1/<local>/``: the local cluster's own
(``services/<ns>/<name>``, ``pods/…``, ``podstatus/…``, ``nodes/<name>``,
``serviceexports/…``) and, per remote cluster, the same keys under
``mesh/<remote>/`` plus the syncer's ``mesh/<remote>/status`` record (the
contract with the mesh syncer; values are in each cluster's own format,
docs/etcd-layout.md). Pure: callers hand in (relative key, object) pairs.

Liveness of remote nodes: the remote cluster's own controllers would mark pods
of a dead node NotReady, but only in their memory, so a mirrored status of a
pod whose node died still says Ready. Two things count instead: the node's
record is gone (its lease expired in the remote etcd: authoritative), or this
node's data-path probe cannot reach it (``reach``). A silent heartbeat does
not count — a remote control-plane outage freezes every mirrored heartbeat,
and must not remove anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import Any

MESH = "mesh"
#: the kinds a view keeps (everything else under a cluster's prefix is ignored)
VIEW_KINDS = ("services", "pods", "podstatus", "nodes", "serviceexports")

Obj = dict[str, Any]
Ref = tuple[str, str]  # (namespace, name)


@dataclass
class ClusterView:
    """The objects of one cluster that services need, keyed as Kubernetes keys them."""

    name: str
    services: dict[Ref, Obj] = field(default_factory=dict)
    pods: list[Obj] = field(default_factory=list)
    statuses: dict[Ref, Obj] = field(default_factory=dict)
    nodes: dict[str, Obj] = field(default_factory=dict)
    exports: dict[Ref, Obj] = field(default_factory=dict)
    status: Obj | None = None  # the syncer's record for a remote (connected, since, …)

    def add(self, kind: str, parts: list[str], obj: Obj) -> None:
        """Record one object of ``kind`` whose key tail is ``parts``."""
        if kind == "nodes" and len(parts) == 1:
            self.nodes[parts[0]] = obj
        elif len(parts) != 2:
            return
        elif kind == "services":
            self.services[(parts[0], parts[1])] = obj
        elif kind == "pods":
            self.pods.append(obj)
        elif kind == "podstatus":
            self.statuses[(parts[0], parts[1])] = obj
        elif kind == "serviceexports":
            self.exports[(parts[0], parts[1])] = obj

    def node_of(self, pod: Obj) -> str | None:
        node = pod.get("spec", {}).get("nodeName")
        return str(node) if node else None

    def gone_nodes(self) -> set[str]:
        """Nodes some pod is bound to that have no record, once records exist at all
        (the node's lease expired: its agent has been gone a lease TTL)."""
        if not self.nodes:
            return set()
        bound = {n for p in self.pods if (n := self.node_of(p))}
        return bound - set(self.nodes)

    def underlay(self, node: str) -> str | None:
        """A node's underlay address from its record (what the data-path probe pings)."""
        ip = self.nodes.get(node, {}).get("underlayIP")
        return str(ip) if ip else None


def split_key(rel: str) -> tuple[str | None, str, list[str]]:
    """``mesh/c2/pods/ns/web`` → ("c2", "pods", ["ns", "web"]); ``pods/ns/web`` →
    (None, "pods", ["ns", "web"]); ``mesh/c2/status`` → ("c2", "status", [])."""
    parts = rel.split("/")
    if parts[0] == MESH and len(parts) >= 3:
        return parts[1], parts[2], parts[3:]
    return None, parts[0], parts[1:]


def build_views(
    local: str, items: Iterable[tuple[str, Obj]]
) -> tuple[ClusterView, dict[str, ClusterView]]:
    """The local view and one view per remote cluster from (relative key, object) pairs."""
    mine = ClusterView(local)
    remotes: dict[str, ClusterView] = {}
    for rel, obj in items:
        cluster, kind, parts = split_key(rel)
        if cluster is None:
            mine.add(kind, parts, obj)
            continue
        if cluster == local:
            continue  # a syncer never mirrors us to ourselves; ignore if one did
        view = remotes.setdefault(cluster, ClusterView(cluster))
        if kind == "status" and not parts:
            view.status = obj
        else:
            view.add(kind, parts, obj)
    return mine, dict(sorted(remotes.items()))


def not_ready(status: Obj, reason: str) -> Obj:
    """A pod status as the node lifecycle controller leaves it when its node dies."""
    conds = [c for c in status.get("conditions", []) if c.get("type") != "Ready"]
    return {
        **status,
        "conditions": [*conds, {"type": "Ready", "status": "False", "reason": reason}],
    }


def served_statuses(view: ClusterView, unreachable: Set[str] = frozenset()) -> dict[Ref, Obj]:
    """The view's pod statuses with pods on gone or ``unreachable`` nodes NotReady."""
    down = view.gone_nodes() | set(unreachable)
    if not down:
        return view.statuses
    out = dict(view.statuses)
    for pod in view.pods:
        node = view.node_of(pod)
        ref = (pod["metadata"].get("namespace", "default"), pod["metadata"]["name"])
        if node in down and ref in out:
            why = "NodeUnreachable" if node in unreachable else "NodeGone"
            out[ref] = not_ready(out[ref], why)
    return out
