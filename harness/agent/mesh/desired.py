"""Everything mesh-related one node programs, from one snapshot of its etcd. Pure.

The services controller hands in its cache (relative key, object) and the
statuses it serves (pods of dead local nodes already NotReady) and gets back
the service ports (every local Service, global ones merged with remote
backends, plus one set per ServiceImport at its ClusterSetIP), the
``clusterset.local`` records, the imports and export conditions (for the
cluster's writer) and the remote nodes to probe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
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


@dataclass
class RefResult:
    """Everything one service name (namespace, name) contributes to what a node programs."""

    ports: list[GlobalPort] = field(default_factory=list)  # the local Service's ports
    import_ports: list[GlobalPort] = field(default_factory=list)  # its ServiceImport's
    clusterset: ClustersetRecord | None = None
    targets: dict[tuple[str, str], str] = field(default_factory=dict)
    remote_ready: tuple[str, ...] = ()  # a headless global Service's remote Ready pods (DNS)


def derive_ref(
    ref: Ref,
    local: ClusterView,
    remotes: Sequence[ClusterView],
    imp: mcs.Import | None,
    ip: str | None,
    served: Mapping[Ref, Any],
    unreachable: Set[tuple[str, str]] = frozenset(),
) -> RefResult:
    """What the name ``ref`` contributes, from views that hold (at least) its Service in
    each cluster and the pods those select: the whole views, or narrow ones
    (``svcindex.ClusterIndex.narrow``, the services controller's incremental path)."""
    out = RefResult()
    consumed = False
    svc = local.services.get(ref)
    if svc is not None:
        out.ports = globalsvc.merge(svc, local, remotes, unreachable, served)
        consumed = globalsvc.spec_of(svc).is_global
        out.remote_ready = globalsvc.headless_remote(svc, remotes, unreachable)
    if imp is not None:
        consumed = True
        out.import_ports = mcs.import_ports(imp, ip or "", local, remotes, unreachable, served)
        if imp.type != "ClusterSetIP" or ip:  # else not allocated yet: nothing to answer with
            backends = mcs.import_backends(imp, local, remotes, unreachable, served)
            recs = [
                (
                    p.name,
                    p.protocol,
                    p.port,
                    [(ep.ip, ep.port) for ep, _ in backends[(p.name, p.protocol)]],
                )
                for p in imp.ports
            ]
            out.clusterset = (
                imp.namespace, imp.name, ip if imp.type == "ClusterSetIP" else None, recs
            )  # fmt: skip
    if consumed and remotes:
        out.targets = probe_targets([ref], remotes)
    return out


def assemble(
    out: MeshDesired, services: Iterable[Ref], results: Mapping[Ref, RefResult]
) -> MeshDesired:
    """Fill ``out``'s ports, ClusterSet records and probe targets from per-name results:
    every local Service's ports (by name), then every import's (by name)."""
    out.ports, out.clusterset, out.targets = [], [], {}
    for ref in sorted(services):
        out.ports += results[ref].ports
    for ref in sorted(out.imports):
        r = results[ref]
        out.ports += r.import_ports
        if r.clusterset is not None:
            out.clusterset.append(r.clusterset)
    for r in results.values():
        out.targets.update(r.targets)
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
    out.imports, out.conditions = mcs.resolve(mcs.exports_of(local, remotes))
    stored = {
        tuple(rel.split("/")[1:3]): o for rel, o in items if rel.startswith("serviceimports/")
    }
    results = {}
    for ref in set(local.services) | set(out.imports):
        ip = stored_ip(stored.get(ref))
        imp = out.imports.get(ref)
        results[ref] = derive_ref(ref, local, remotes, imp, ip, served, unreachable)
    return assemble(out, local.services, results)
