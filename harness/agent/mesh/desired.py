"""Everything mesh-related one node programs, from one snapshot of its etcd. Pure.

The services controller hands in its cache (relative key, object) and the
statuses it serves (pods of dead local nodes already NotReady) and gets back
the service ports (every local Service, global ones merged with remote
backends, plus one set per ServiceImport at its ClusterSetIP), the
``clusterset.local`` records, the imports and export conditions (for the
cluster's writer) and the remote nodes to probe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from harness.agent.mesh import globalsvc, mcs
from harness.agent.mesh.globalsvc import GlobalPort
from harness.agent.mesh.views import ClusterView, build_views
from harness.agent.proxy.model import selected_pods

Ref = tuple[str, str]
ClustersetRecord = tuple[str, str, str | None, list[tuple[str, str, int, list[tuple[str, int]]]]]


@dataclass
class MeshDesired:
    ports: list[GlobalPort] = field(default_factory=list)
    clusterset: list[ClustersetRecord] = field(default_factory=list)
    imports: dict[Ref, mcs.Import] = field(default_factory=dict)
    conditions: dict[tuple[str, str, str], tuple[mcs.Condition, ...]] = field(default_factory=dict)
    targets: dict[tuple[str, str], str] = field(default_factory=dict)  # (cluster, node) → IP
    local: ClusterView | None = None
    remotes: list[ClusterView] = field(default_factory=list)


def stored_ip(obj: Mapping[str, Any] | None) -> str | None:
    """The ClusterSetIP of a stored ServiceImport (this cluster's writer allocated it)."""
    ips = ((obj or {}).get("spec") or {}).get("ips") or []
    return str(ips[0]) if ips else None


def probe_targets(
    refs: Iterable[Ref], remotes: Iterable[ClusterView]
) -> dict[tuple[str, str], str]:
    """Remote nodes hosting a pod selected by a remote service we may consume."""
    wanted = set(refs)
    out = {}
    for view in remotes:
        for ref in wanted:
            svc = view.services.get(ref)
            if svc is None:
                continue
            for pod in selected_pods(svc, view.pods):
                node = view.node_of(pod)
                ip = view.underlay(node) if node else None
                if node and ip:
                    out[(view.name, node)] = ip
    return out


def compute(
    cluster: str,
    items: Iterable[tuple[str, dict[str, Any]]],
    served: Mapping[Ref, Any],
    unreachable: Set[tuple[str, str]] = frozenset(),
) -> MeshDesired:
    """What this node programs for services, given (relative key, object) pairs."""
    items = list(items)
    local, by_name = build_views(cluster, items)
    remotes = list(by_name.values())
    out = MeshDesired(local=local, remotes=remotes)
    consumed: set[Ref] = set()
    for ref, svc in sorted(local.services.items()):
        out.ports += globalsvc.merge(svc, local, remotes, unreachable, served)
        if globalsvc.spec_of(svc).is_global:
            consumed.add(ref)
    out.imports, out.conditions = mcs.resolve(mcs.exports_of(local, remotes))
    stored = {
        tuple(rel.split("/")[1:3]): o for rel, o in items if rel.startswith("serviceimports/")
    }
    for ref, imp in out.imports.items():
        consumed.add(ref)
        ip = stored_ip(stored.get(ref))
        out.ports += mcs.import_ports(imp, ip or "", local, remotes, unreachable, served)
        backends = mcs.import_backends(imp, local, remotes, unreachable, served)
        if imp.type == "ClusterSetIP" and not ip:
            continue  # not allocated yet: nothing to answer with
        recs = [
            (
                p.name,
                p.protocol,
                p.port,
                [(ep.ip, ep.port) for ep, _ in backends[(p.name, p.protocol)]],
            )
            for p in imp.ports
        ]
        out.clusterset.append(
            (imp.namespace, imp.name, ip if imp.type == "ClusterSetIP" else None, recs)
        )
    out.targets = probe_targets(consumed, remotes) if remotes else {}
    return out
