"""Global services: Cilium's annotations, turned into the endpoints one node programs.

Annotations, Cilium's own so a Cilium user's manifests work unchanged:

- ``service.cilium.io/global: "true"`` — a Service with the same name and
  namespace in several clusters of a mesh is one service over the backends of
  all of them. Each cluster keeps its own ClusterIP (service CIDRs may
  overlap); its proxies add the remote backends to it.
- ``service.cilium.io/shared: "false"`` — this cluster's backends are not
  offered to the others; it still uses theirs (default ``"true"`` once global).
- ``service.cilium.io/affinity: local|remote|none`` (default none) — which
  backends are preferred.

And one of podlab's own:

- ``service.podlab.io/flip-back: spread|immediate`` (default spread) — how
  traffic returns to the preferred backends (below). ``immediate`` is Cilium's
  behaviour, kept for comparison.

Which backends a node programs, per service port (Cilium's
``pkg/clustermesh/selectbackends.go``, with one change, ADR 0004):

- a remote cluster contributes when its own Service of that name is global and
  shared, for ports of the same name and protocol; only its Ready backends on
  nodes that are still registered and that this node can reach count;
- ``none``: every ready backend, local and remote, one share each;
- ``local``: the local ready backends; the remote ones only while no local
  backend is Ready (failover). ``remote`` is the mirror image;
- flip-back (``spread``, ours): while only some of the preferred backends are
  Ready, each of them carries exactly the share it would carry at full
  strength (1 / the number of preferred pods that exist), and the missing
  capacity spills over to the fallback set, split evenly. So the first local
  backend to come back takes 1/3 of the traffic of a 3-replica service, not
  all of it (Cilium's thundering herd, cilium/cilium#46633), and every backend
  is back to its share the moment the last one is Ready. Weights are carried by
  repeating endpoints in ``ServicePort.endpoints`` (every proxy mode balances
  over the entries as given).

Pure: the services controller and ``podlab get services --all-clusters`` both
call ``merge``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace
from typing import Any

from harness.agent.mesh.views import ClusterView, served_statuses
from harness.agent.proxy.model import (
    Endpoint,
    PortBackends,
    ServicePort,
    endpoints_for,
    is_ready,
    port_backends,
    proxied_ports,
    selected_pods,
)

ANN_GLOBAL = "service.cilium.io/global"
ANN_SHARED = "service.cilium.io/shared"
ANN_AFFINITY = "service.cilium.io/affinity"
ANN_FLIPBACK = "service.podlab.io/flip-back"
#: Cilium's: a headless global Service's remote endpoints are synced to this cluster
#: (its DNS answers with them); on by default for headless global services
ANN_SYNC = "service.cilium.io/global-sync-endpoint-slices"
AFFINITIES = ("none", "local", "remote")
FLIPBACKS = ("spread", "immediate")
BOOLEANS = ("true", "false")
#: the most entries a weighted endpoint list may have (more backends than this
#: keep one entry each: weights only ever round, never drop an endpoint)
MAX_SLOTS = 256


@dataclass(frozen=True)
class GlobalSpec:
    """What a Service's annotations ask of the mesh."""

    is_global: bool = False
    shared: bool = True
    affinity: str = "none"
    flipback: str = "spread"

    @property
    def exported(self) -> bool:
        """Whether this cluster offers its backends to the others."""
        return self.is_global and self.shared


def spec_of(service: Mapping[str, Any]) -> GlobalSpec:
    """The mesh settings of a stored Service; values the API would refuse read as
    their defaults (a mirrored object from an older podlab must not break us)."""
    ann = service.get("metadata", {}).get("annotations") or {}
    affinity = str(ann.get(ANN_AFFINITY, "none")).lower()
    flipback = str(ann.get(ANN_FLIPBACK, "spread")).lower()
    return GlobalSpec(
        is_global=str(ann.get(ANN_GLOBAL, "")).lower() == "true",
        shared=str(ann.get(ANN_SHARED, "true")).lower() != "false",
        affinity=affinity if affinity in AFFINITIES else "none",
        flipback=flipback if flipback in FLIPBACKS else "spread",
    )


def annotation_problems(annotations: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(annotation key, what is wrong, the fix) for each mesh annotation with a bad value."""
    allowed = {
        ANN_GLOBAL: BOOLEANS,
        ANN_SHARED: BOOLEANS,
        ANN_AFFINITY: AFFINITIES,
        ANN_FLIPBACK: FLIPBACKS,
        ANN_SYNC: BOOLEANS,
    }
    out = []
    for key, values in allowed.items():
        if key in annotations and str(annotations[key]).lower() not in values:
            quoted = ", ".join(f'"{v}"' for v in values)
            out.append((key, f"unknown value {annotations[key]!r} for {key}", f"use {quoted}"))
    return out


@dataclass(frozen=True)
class GlobalPort:
    """One service port as a node programs it, and where its endpoints come from."""

    port: ServicePort
    clusters: tuple[tuple[Endpoint, str], ...] = ()  # each unique endpoint → its cluster
    state: str = "local"  # local | all | preferred | failover | spill | none

    def cluster_of(self, ep: Endpoint) -> str | None:
        return dict(self.clusters).get(ep)


def _sum(parts: Sequence[PortBackends]) -> PortBackends:
    ready = sorted({ep for p in parts for ep in p.ready})
    return PortBackends(tuple(ready), sum(p.known for p in parts))


def spill(
    preferred: Sequence[Endpoint], known: int, fallback: Sequence[Endpoint]
) -> tuple[Endpoint, ...]:
    """Weighted endpoints: each preferred one at its full-strength share ``1/known``,
    the missing ``(known - ready)/known`` split evenly over ``fallback``."""
    p, f = len(preferred), len(fallback)
    missing = known - p
    if not p or not f or missing <= 0:
        return tuple(sorted(preferred or fallback))
    g = math.gcd(f, missing)
    wp, wf = f // g, missing // g  # shares p*wp : f*wf == p : missing
    total = p * wp + f * wf
    if total > MAX_SLOTS:  # keep the ratio approximately, within MAX_SLOTS entries
        scale = MAX_SLOTS / total
        wp, wf = max(1, round(wp * scale)), max(1, round(wf * scale))
    return tuple(sorted([*preferred] * wp + [*fallback] * wf))


def choose(
    spec: GlobalSpec, local: PortBackends, remote: PortBackends
) -> tuple[tuple[Endpoint, ...], str]:
    """The weighted endpoints of one port and the state that picked them."""
    if spec.affinity == "none":
        return tuple(sorted({*local.ready, *remote.ready})), "all"
    pref, fb = (local, remote) if spec.affinity == "local" else (remote, local)
    if not pref.ready:
        return fb.ready, ("failover" if fb.ready else "none")
    complete = len(pref.ready) >= pref.known
    if spec.flipback == "immediate" or not fb.ready or complete:
        return pref.ready, "preferred"
    return spill(pref.ready, pref.known, fb.ready), "spill"


def remote_backends(
    service: Mapping[str, Any],
    remotes: Sequence[ClusterView],
    unreachable: Set[tuple[str, str]] = frozenset(),
) -> dict[str, dict[tuple[str, str], PortBackends]]:
    """Per remote cluster exporting this service (its own copy global and shared):
    backends per (port name, protocol)."""
    meta = service["metadata"]
    ref = (meta.get("namespace", "default"), meta["name"])
    out = {}
    for view in remotes:
        theirs = view.services.get(ref)
        if theirs is None or not spec_of(theirs).exported:
            continue
        down = {node for cluster, node in unreachable if cluster == view.name}
        out[view.name] = port_backends(theirs, view.pods, served_statuses(view, down))
    return out


def headless_remote(
    service: Mapping[str, Any],
    remotes: Sequence[ClusterView],
    unreachable: Set[tuple[str, str]] = frozenset(),
) -> tuple[str, ...]:
    """The Ready remote pod addresses a headless global Service's DNS name answers with
    besides its local ones (Cilium's EndpointSlice sync, on by default for headless
    global services; ``service.cilium.io/global-sync-endpoint-slices: "false"`` turns
    it off). From every cluster whose own copy is global and shared; affinity does
    not apply (DNS has no failover: the client picks)."""
    spec = service.get("spec", {})
    ann = service.get("metadata", {}).get("annotations") or {}
    if spec.get("clusterIP") != "None" or not spec_of(service).is_global:
        return ()
    if str(ann.get(ANN_SYNC, "true")).lower() == "false":
        return ()
    meta = service["metadata"]
    ref = (meta.get("namespace", "default"), meta["name"])
    found: set[str] = set()
    for view in remotes:
        theirs = view.services.get(ref)
        if theirs is None or not spec_of(theirs).exported:
            continue
        down = {node for cluster, node in unreachable if cluster == view.name}
        statuses = served_statuses(view, down)
        for pod in selected_pods(dict(theirs), view.pods):
            status = statuses.get((ref[0], pod["metadata"]["name"])) or {}
            if is_ready(status):
                found.add(str(status["podIP"]))
    return tuple(sorted(found))


def merge(
    service: Mapping[str, Any],
    local: ClusterView,
    remotes: Sequence[ClusterView],
    unreachable: Set[tuple[str, str]] = frozenset(),
    local_statuses: Mapping[tuple[str, str], Any] | None = None,
) -> list[GlobalPort]:
    """The ports of a local Service as this node programs them.

    ``local_statuses`` overrides the local view's statuses (the controller
    marks pods of dead local nodes NotReady); ``unreachable`` holds the
    (cluster, node) pairs this node's data-path probe cannot reach.
    """
    svc = dict(service)
    statuses = dict(local_statuses if local_statuses is not None else local.statuses)
    base = endpoints_for(svc, local.pods, statuses)
    spec = spec_of(svc)
    if not spec.is_global or not base:
        return [GlobalPort(p, tuple((ep, local.name) for ep in p.unique)) for p in base]
    mine = port_backends(svc, local.pods, statuses, proxied_ports(svc))
    theirs = remote_backends(svc, remotes, unreachable)
    out = []
    for p in base:
        key = (p.port_name, p.protocol)
        parts = [by_port[key] for by_port in theirs.values() if key in by_port]
        eps, state = choose(spec, mine[key], _sum(parts))
        where = {ep: local.name for ep in mine[key].ready}
        for cluster, by_port in theirs.items():
            where.update({ep: cluster for ep in by_port.get(key, PortBackends()).ready})
        port = replace(p, endpoints=eps)
        out.append(GlobalPort(port, tuple((ep, where[ep]) for ep in port.unique), state))
    return out
