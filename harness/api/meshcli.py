"""The api verbs across clusters: federated ``apply`` and ``get services --all-clusters``.

Federation, the simple part (what Federation v1 did for services): ``podlab
apply -f FILE --clusters c1,c2`` (or ``--mesh NAME``: every cluster of that
mesh) puts the same objects into several clusters. It is refused whole when
any cluster refuses it: every cluster's apply is planned first (validation,
scheduling onto that cluster's nodes, ClusterIP allocation from its service
CIDR, the MCS checks — each guarded by the revisions it read), and only when
none has a problem is anything written, one transaction per cluster. If a
cluster's transaction then loses a race (someone wrote meanwhile), its apply is
planned again; if it now has a problem, the clusters already written are put
back as they were and the apply fails, naming the cluster.

``get services --all-clusters`` shows every cluster's Services (and
ServiceImports) with the backends a node of that cluster would use and the
cluster each one is in, computed from that cluster's etcd — its own objects and
the remote ones the mesh mirrored — by the agent's own rules
(harness/agent/mesh/). Data-path health is a node's own view and not shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from harness.agent.mesh import desired as mesh
from harness.agent.mesh import globalsvc
from harness.api import output
from harness.api.client import ApiClient, Applied
from harness.api.objects import API_PREFIX
from harness.api.target import Target, cluster_endpoints, labs_up, podlab_home, resolve_target
from harness.api.validate import Located
from harness.errors import LabError, Problem, UserError
from harness.store import Store, Write

ATTEMPTS = 3


def clusters_of(lab: str | None, names: str | None, mesh_name: str | None) -> list[str]:
    """The clusters ``--clusters a,b`` or ``--mesh NAME`` name, checked against the lab."""
    home = podlab_home()
    lab = _lab(lab)
    known = list(cluster_endpoints(home / "inventories" / f"{lab}.yml"))
    if mesh_name:
        members = [c for c, m in _meshes(lab).items() if m == mesh_name]
        if not members:
            have = ", ".join(f"{c} ({m or 'no mesh'})" for c, m in _meshes(lab).items())
            raise UserError(
                f"no cluster of lab {lab!r} is in mesh {mesh_name!r} (clusters: {have}; "
                "fix: label the clusters podlab.mesh: NAME, or name them with --clusters)"
            )
        return members
    wanted = [c.strip() for c in (names or "").split(",") if c.strip()]
    unknown = [c for c in wanted if c not in known]
    if unknown or not wanted:
        raise UserError(
            f"--clusters {names!r}: unknown cluster {', '.join(unknown) or '(none given)'} in lab "
            f"{lab!r} (fix: name clusters of {', '.join(known)}, separated by commas)"
        )
    return list(dict.fromkeys(wanted))


def _lab(lab: str | None) -> str:
    """The lab named, else the only lab that is up."""
    if lab:
        return lab
    up = labs_up(podlab_home())
    if len(up) != 1:
        found = ", ".join(up) or "none"
        raise UserError(f"labs up: {found}; fix: name the lab with --lab")
    return up[0]


def _meshes(lab: str) -> dict[str, str | None]:
    """Cluster → the mesh it joins (``podlab.mesh``), from the lab's plan."""
    from harness.lab.state import Ledger, find
    from harness.plan.build import load_plan

    plan = load_plan(Ledger.load(find(lab)).source)
    return {name: getattr(c, "mesh", None) for name, c in plan.clusters.items()}


@dataclass
class _Plan:
    target: Target
    client: ApiClient
    writes: list[Write]
    results: list[Applied]


def _client(lab: str | None, cluster: str) -> tuple[Target, ApiClient]:
    import ipaddress

    from harness.api.alloc import DEFAULT_SERVICE_CIDR

    target = resolve_target(lab, cluster, None)
    cidr = ipaddress.IPv4Network(target.service_cidr) if target.service_cidr else None
    return target, ApiClient(
        Store([target.etcd_url]), cluster, service_cidr=cidr or DEFAULT_SERVICE_CIDR
    )


def _plan(client: ApiClient, objects: list[Located], allow_conflict: bool) -> tuple[Any, Any]:
    return client.plan_apply(objects, client.nodes(), allow_conflict)


def _in_cluster(cluster: str, problems: list[Problem]) -> list[Problem]:
    return [replace(p, where=f"cluster {cluster}, {p.where}") for p in problems]


def apply_many(
    lab: str | None, clusters: list[str], objects: list[Located], allow_conflict: bool = False
) -> list[tuple[str, Applied]]:
    """Apply ``objects`` to every cluster, or to none (see the module docstring)."""
    plans: list[_Plan] = []
    problems: list[Problem] = []
    for cluster in clusters:
        target, client = _client(lab, cluster)
        try:
            writes, results = _plan(client, objects, allow_conflict)
        except UserError as exc:
            problems += _in_cluster(cluster, exc.problems)
            continue
        plans.append(_Plan(target, client, writes, results))
    if problems:
        raise UserError(problems)
    done: list[tuple[_Plan, list[Write]]] = []
    for p in plans:
        for attempt in range(ATTEMPTS):
            undo = _undo(p.client.store, p.writes)
            if p.client.store.commit(p.writes):
                done.append((p, undo))
                break
            try:
                p.writes, p.results = _plan(p.client, objects, allow_conflict)
            except UserError as exc:
                _roll_back(done)
                raise UserError(_in_cluster(p.target.cluster, exc.problems)) from exc
            if attempt == ATTEMPTS - 1:
                _roll_back(done)
                raise LabError(
                    f"objects in cluster {p.target.cluster} kept changing while applying; "
                    f"nothing was applied to any cluster ({', '.join(clusters)}); try again"
                )
    return [(p.target.cluster, r) for p in plans for r in p.results]


def _undo(kv: Store, writes: list[Write]) -> list[Write]:
    """The writes that put every key of ``writes`` back as it is now."""
    out = []
    for w in writes:
        entry = kv.get(w.key)
        out.append(Write(w.key, entry.value if entry else None))
    return out


def _roll_back(done: list[tuple[_Plan, list[Write]]]) -> None:
    for p, undo in reversed(done):
        p.client.store.commit(undo)


# -- get services --all-clusters ----------------------------------------------------------


def service_rows(cluster: str, kv: Store) -> list[dict[str, Any]]:
    """Every Service and ServiceImport of ``cluster`` with its backends and their clusters."""
    base = f"{API_PREFIX}/{cluster}/"
    items = []
    for e in kv.get_prefix(base)[0]:
        try:
            items.append((e.key[len(base) :], json.loads(e.value)))
        except ValueError:
            continue
    served = {}
    for rel, obj in items:
        parts = rel.split("/")
        if parts[0] == "podstatus" and len(parts) == 3:
            served[(parts[1], parts[2])] = obj
    got = mesh.compute(cluster, items, served)
    local = got.local
    assert local is not None
    by_ref: dict[tuple[str, str], list[globalsvc.GlobalPort]] = {}
    for g in got.ports:
        ns, name = g.port.namespace, g.port.name
        by_ref.setdefault((ns, name), []).append(g)
    rows = []
    for (ns, name), svc in sorted(local.services.items()):
        spec = globalsvc.spec_of(svc)
        mode = "-"
        if spec.is_global:
            mode = f"global,affinity={spec.affinity}" + ("" if spec.shared else ",shared=false")
        rows.append(_row(cluster, ns, name, svc.get("spec", {}), mode, by_ref.get((ns, name), [])))
    stored = {
        (r.split("/")[1], r.split("/")[2]): o
        for r, o in items
        if r.startswith("serviceimports/") and r.count("/") == 2
    }
    for ref, imp in sorted(got.imports.items()):
        ip = mesh.stored_ip(stored.get(ref)) or ("None" if imp.type == "Headless" else "<pending>")
        ports_spec = [{"port": p.port, "protocol": p.protocol} for p in imp.ports]
        shown = {"type": "ServiceImport", "clusterIP": ip, "ports": ports_spec}
        ports = by_ref.get((ref[0], ref[1] + "@clusterset"), [])
        rows.append(_row(cluster, *ref, shown, "mcs:" + ",".join(imp.clusters), ports))
    return rows


def _row(
    cluster: str, ns: str, name: str, spec: dict[str, Any], mode: str, ports: list[Any]
) -> dict[str, Any]:
    backends = {}
    for g in ports:
        for ep, where in g.clusters:
            backends[f"{ep.ip}:{ep.port}"] = where
    return {
        "cluster": cluster,
        "namespace": ns,
        "name": name,
        "type": spec.get("type", "ClusterIP"),
        "clusterIP": spec.get("clusterIP") or "<none>",
        "ports": spec.get("ports", []),
        "mesh": mode,
        "backends": [{"address": a, "cluster": c} for a, c in backends.items()],
    }


def services_table(rows: list[dict[str, Any]]) -> str:
    header = ["CLUSTER", "NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "MESH", "BACKENDS"]
    out = []
    for r in rows:
        ports = ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in r["ports"]) or "<none>"
        backends = ", ".join(f"{b['address']} ({b['cluster']})" for b in r["backends"])
        row = [r["cluster"], r["namespace"], r["name"], r["type"], r["clusterIP"], ports]
        out.append([*row, r["mesh"], backends or "<none>"])
    return output.table(header, out)


def all_clusters(lab: str | None) -> list[tuple[str, Store]]:
    """(cluster, its etcd) for every cluster of the lab."""
    endpoints = cluster_endpoints(podlab_home() / "inventories" / f"{_lab(lab)}.yml")
    return [(c, Store([url])) for c, url in endpoints.items() if url]
