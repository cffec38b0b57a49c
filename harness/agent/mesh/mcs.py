"""Multi-Cluster Services (KEP-1645): ServiceExports of a mesh → one ServiceImport each.

A ``ServiceExport`` (``multicluster.x-k8s.io/v1alpha1``, same name and
namespace as the Service it exports) opts a Service in; every cluster of the
mesh — exporters too — then has a ``ServiceImport`` of that name whose
ClusterSetIP (allocated per cluster from its own service CIDR) balances over
the ready backends of every exporting cluster, and ``<svc>.<ns>.svc.
clusterset.local`` resolves to it (headless: to the backends).

Conflict resolution is the KEP's: properties that cannot be merged (port
definitions, headlessness, session affinity) are taken from the OLDEST export
(``creationTimestamp``; ties by cluster name), and every export of that
service gets ``Conflict=True`` naming what differs and whose value is in
force. Ports are merged by name, then by (protocol, port): the import carries
the union, and traffic to a port only reaches clusters that expose it exactly
so. An export whose Service does not exist is ``Valid=False/NoService``; an
ExternalName one ``Valid=False/InvalidServiceType``; neither contributes.

Pure: ``resolve`` turns every cluster's exports and services into imports and
conditions; the cluster's writer stores them (``mcswriter``) and every node
programs and answers from the same result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from harness.agent.mesh.globalsvc import GlobalPort
from harness.agent.mesh.views import ClusterView, served_statuses
from harness.agent.proxy.model import Endpoint, ServicePort, port_backends

API_VERSION = "multicluster.x-k8s.io/v1alpha1"
DOMAIN = "clusterset.local"

Obj = dict[str, Any]
Ref = tuple[str, str]


@dataclass(frozen=True)
class Export:
    """One cluster's ServiceExport and the Service it names (None: missing)."""

    cluster: str
    namespace: str
    name: str
    created: str  # the export's creationTimestamp (RFC 3339: sorts as time)
    service: Obj | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.created, self.cluster)


@dataclass(frozen=True)
class ImportPort:
    name: str
    protocol: str  # TCP | UDP | SCTP, as in the Service
    port: int
    clusters: tuple[str, ...]  # the exporters whose Service has exactly this port


@dataclass(frozen=True)
class Import:
    """A derived ServiceImport: what every cluster of the mesh imports."""

    namespace: str
    name: str
    type: str  # ClusterSetIP | Headless
    ports: tuple[ImportPort, ...]
    clusters: tuple[str, ...]  # valid exporters, oldest export first
    session_affinity: str = "None"
    affinity_timeout_s: int | None = None

    def to_object(self, ips: list[str]) -> Obj:
        """The stored ServiceImport (KEP-1645's fields) with this cluster's ``ips``."""
        spec: Obj = {
            "type": self.type,
            "ips": ips if self.type == "ClusterSetIP" else [],
            "ports": [{"name": p.name, "protocol": p.protocol, "port": p.port} for p in self.ports],
            "sessionAffinity": self.session_affinity,
        }
        if self.affinity_timeout_s is not None:
            spec["sessionAffinityConfig"] = {
                "clientIP": {"timeoutSeconds": self.affinity_timeout_s}
            }
        return {
            "apiVersion": API_VERSION,
            "kind": "ServiceImport",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
            "status": {"clusters": [{"cluster": c} for c in self.clusters]},
        }


@dataclass(frozen=True)
class Condition:
    type: str  # Valid | Conflict
    status: str  # True | False
    reason: str
    message: str

    def to_dict(self) -> Obj:
        return {"type": self.type, "status": self.status, "reason": self.reason,
                "message": self.message}  # fmt: skip


def exports_of(local: ClusterView, remotes: Iterable[ClusterView]) -> list[Export]:
    """Every ServiceExport of the mesh as this cluster's etcd shows it."""
    out = []
    for view in (local, *remotes):
        for (ns, name), obj in view.exports.items():
            created = str(obj.get("metadata", {}).get("creationTimestamp") or "")
            out.append(Export(view.name, ns, name, created, view.services.get((ns, name))))
    return out


def _headless(svc: Obj) -> bool:
    return svc.get("spec", {}).get("clusterIP") == "None"


def _affinity(svc: Obj) -> tuple[str, int | None]:
    spec = svc.get("spec", {})
    if spec.get("sessionAffinity") != "ClientIP":
        return "None", None
    cfg = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
    return "ClientIP", int(cfg.get("timeoutSeconds", 10800))


def _validity(e: Export) -> Condition:
    if e.service is None:
        return Condition(
            "Valid", "False", "NoService",
            f"no Service {e.namespace}/{e.name} in cluster {e.cluster} (fix: apply the "
            f"Service, or delete serviceexport/{e.name})",
        )  # fmt: skip
    if e.service.get("spec", {}).get("type") == "ExternalName":
        return Condition(
            "Valid", "False", "InvalidServiceType",
            f"service {e.namespace}/{e.name} in cluster {e.cluster} is an ExternalName "
            "service, which cannot be exported (fix: export a ClusterIP or headless service)",
        )  # fmt: skip
    return Condition("Valid", "True", "Valid", "the Service is exported")


def _merge_ports(valid: list[Export]) -> tuple[list[ImportPort], list[tuple[str, str]]]:
    """The union of ports (by name, then protocol+port) and the port conflicts."""
    by_name: dict[str, ImportPort] = {}
    by_pp: dict[tuple[str, int], str] = {}
    owner: dict[str, str] = {}
    conflicts: list[tuple[str, str]] = []
    for e in valid:
        for p in (e.service or {}).get("spec", {}).get("ports", []):
            name, pp = p.get("name", ""), (p.get("protocol", "TCP"), int(p["port"]))
            shown = f'"{name}"' if name else "(unnamed)"
            have = by_name.get(name)
            if have is not None:
                if (have.protocol, have.port) == pp:
                    by_name[name] = ImportPort(name, have.protocol, have.port,
                                               (*have.clusters, e.cluster))  # fmt: skip
                else:
                    conflicts.append(("PortConflict",
                        f"port {shown} is {have.port}/{have.protocol} in {owner[name]} but "
                        f"{pp[1]}/{pp[0]} in {e.cluster}"))  # fmt: skip
            elif pp in by_pp:
                conflicts.append(("PortConflict",
                    f"port {pp[1]}/{pp[0]} is named \"{by_pp[pp]}\" in {owner[by_pp[pp]]} "
                    f"but {shown} in {e.cluster}"))  # fmt: skip
            else:
                by_name[name] = ImportPort(name, pp[0], pp[1], (e.cluster,))
                by_pp[pp] = name
                owner[name] = e.cluster
    return list(by_name.values()), conflicts


def _resolve_one(valid: list[Export]) -> tuple[Import, list[tuple[str, str]]]:
    oldest = valid[0]
    svc = oldest.service or {}
    conflicts = []
    for e in valid[1:]:
        other = e.service or {}
        if _headless(other) != _headless(svc):
            kinds = {True: "headless", False: "ClusterSetIP"}
            conflicts.append(("TypeConflict",
                f"{e.cluster} exports a {kinds[_headless(other)]} service, "
                f"{oldest.cluster} a {kinds[_headless(svc)]} one"))  # fmt: skip
        if _affinity(other) != _affinity(svc):
            conflicts.append(("SessionAffinityConflict",
                f"sessionAffinity is {_affinity(svc)[0]} in {oldest.cluster} but "
                f"{_affinity(other)[0]} in {e.cluster}"))  # fmt: skip
    ports, port_conflicts = _merge_ports(valid)
    affinity, timeout = _affinity(svc)
    imp = Import(
        oldest.namespace,
        oldest.name,
        "Headless" if _headless(svc) else "ClusterSetIP",
        tuple(ports),
        tuple(e.cluster for e in valid),
        affinity,
        timeout,
    )
    return imp, [*conflicts, *port_conflicts]


def _groups(exports: Iterable[Export]) -> dict[Ref, list[Export]]:
    """Exports by (namespace, name), oldest first."""
    groups: dict[Ref, list[Export]] = {}
    for e in exports:
        groups.setdefault((e.namespace, e.name), []).append(e)
    for group in groups.values():
        group.sort(key=lambda e: e.key)
    return dict(sorted(groups.items()))


def conflicts(exports: Iterable[Export]) -> dict[Ref, tuple[list[tuple[str, str]], Export]]:
    """Per exported service with valid exports: its conflicts (reason, what differs)
    and its oldest valid export, whose values are in force."""
    out = {}
    for ref, group in _groups(exports).items():
        valid = [e for e in group if _validity(e).status == "True"]
        if valid:
            out[ref] = (_resolve_one(valid)[1], valid[0])
    return out


def resolve(
    exports: Iterable[Export],
) -> tuple[dict[Ref, Import], dict[tuple[str, str, str], tuple[Condition, ...]]]:
    """Imports by (namespace, name) and conditions by (cluster, namespace, name)."""
    imports: dict[Ref, Import] = {}
    conditions: dict[tuple[str, str, str], tuple[Condition, ...]] = {}
    for ref, group in _groups(exports).items():
        valid = []
        for e in group:
            cond = _validity(e)
            conditions[(e.cluster, *ref)] = (cond,)
            if cond.status == "True":
                valid.append(e)
        if not valid:
            continue
        imp, found = _resolve_one(valid)
        imports[ref] = imp
        oldest = valid[0]
        if found:
            text = "; ".join(m for _, m in found)
            message = (
                f"{text}: the oldest export (cluster {oldest.cluster}, exported "
                f"{oldest.created or 'at an unknown time'}) wins (fix: give "
                f"service {ref[0]}/{ref[1]} the same ports, type and session affinity "
                "in every exporting cluster)"
            )
            conflict = Condition("Conflict", "True", found[0][0], message)
        else:
            conflict = Condition("Conflict", "False", "NoConflicts", "no conflicts")
        for e in valid:
            conditions[(e.cluster, *ref)] = (*conditions[(e.cluster, *ref)], conflict)
    return imports, conditions


#: ServicePort.name of an import's ports: never equal to a Service's own name, so
#: the proxies' per-port identities (and chains) of the two never collide
IMPORT_SUFFIX = "@clusterset"


def import_backends(
    imp: Import,
    local: ClusterView,
    remotes: Sequence[ClusterView],
    unreachable: Set[tuple[str, str]] = frozenset(),
    local_statuses: Mapping[Ref, Any] | None = None,
) -> dict[tuple[str, str], list[tuple[Endpoint, str]]]:
    """Per import port (name, protocol): the ready endpoints of the clusters that
    expose it, each with its cluster."""
    views = {local.name: local, **{v.name: v for v in remotes}}
    out: dict[tuple[str, str], list[tuple[Endpoint, str]]] = {}
    for p in imp.ports:
        found: dict[Endpoint, str] = {}
        for cluster in p.clusters:
            view = views.get(cluster)
            svc = view.services.get((imp.namespace, imp.name)) if view else None
            if view is None or svc is None:
                continue
            if view is local:
                statuses = dict(local_statuses if local_statuses is not None else view.statuses)
            else:
                down = {n for c, n in unreachable if c == cluster}
                statuses = served_statuses(view, down)
            ports = [
                x
                for x in svc.get("spec", {}).get("ports", [])
                if (x.get("name", ""), x.get("protocol", "TCP")) == (p.name, p.protocol)
            ]
            for pb in port_backends(svc, view.pods, statuses, ports).values():
                found.update({ep: cluster for ep in pb.ready if ep not in found})
        out[(p.name, p.protocol)] = sorted(found.items())
    return out


def import_ports(
    imp: Import,
    ip: str,
    local: ClusterView,
    remotes: Sequence[ClusterView],
    unreachable: Set[tuple[str, str]] = frozenset(),
    local_statuses: Mapping[Ref, Any] | None = None,
) -> list[GlobalPort]:
    """What a node programs for a ClusterSetIP import at ``ip`` (TCP and UDP ports)."""
    if imp.type != "ClusterSetIP" or not ip:
        return []
    backends = import_backends(imp, local, remotes, unreachable, local_statuses)
    out = []
    for p in imp.ports:
        if p.protocol not in ("TCP", "UDP"):
            continue
        found = backends[(p.name, p.protocol)]
        port = ServicePort(
            imp.namespace,
            imp.name + IMPORT_SUFFIX,
            p.name,
            p.protocol.lower(),
            ip,
            p.port,
            None,
            imp.affinity_timeout_s,
            tuple(ep for ep, _ in found),
        )
        out.append(GlobalPort(port, tuple(found), "all"))
    return out
