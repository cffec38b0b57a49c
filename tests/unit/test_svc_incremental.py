"""The services controller's incremental path equals a recomputation from scratch.

Random event sequences (Services global or not, headless or not, pods moving
labels, nodes and addresses, statuses flipping, remote nodes coming and going,
exports, stored imports, policies, namespaces; local nodes dying; remote nodes
unreachable) are recorded into one ``ServicesIndex`` and derived pass after
pass by one ``Derived`` — only what each pass's ``Dirt`` names is recomputed.
After every pass the outcome must equal what a fresh index of the same objects
gives with everything recomputed, and the mesh part must equal the pure
``desired.compute`` over the whole snapshot (what ``podlab get services
--all-clusters`` uses). A missed dependency shows as a difference here.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from harness.agent.liveness import not_ready
from harness.agent.mesh import desired, globalsvc
from harness.agent.proxy.base import PortChanges
from harness.agent.proxy.model import ServicePort
from harness.agent.svcderive import Derived, Outcome
from harness.agent.svcindex import ServicesIndex

C = "c1"
NS = ("a", "b")
NODES = {"c1": ("n1", "n2"), "c2": ("m1", "m2"), "c3": ("k1",)}
APPS = ("web", "db", "api")


def service(rng: random.Random, ns: str, name: str) -> dict[str, Any]:
    ann = {}
    if rng.random() < 0.7:
        ann[globalsvc.ANN_GLOBAL] = "true"
        ann[globalsvc.ANN_AFFINITY] = rng.choice(globalsvc.AFFINITIES)
        if rng.random() < 0.2:
            ann[globalsvc.ANN_SHARED] = "false"
        if rng.random() < 0.2:
            ann[globalsvc.ANN_SYNC] = "false"
    ports = [{"name": "http", "port": 80, "targetPort": rng.choice([8080, "http"])}]
    if rng.random() < 0.3:
        ports.append({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53})
    spec: dict[str, Any] = {
        "clusterIP": "None"
        if rng.random() < 0.25
        else f"10.96.{rng.randrange(9)}.{rng.randrange(250)}",
        "selector": {"app": rng.choice(APPS)} if rng.random() < 0.9 else {},
        "ports": ports,
    }
    meta = {"name": name, "namespace": ns, "annotations": ann}
    return {"metadata": meta, "spec": spec}


def pod(rng: random.Random, cluster: str, ns: str, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": {"app": rng.choice(APPS)}}
    if rng.random() < 0.1:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    ports = [{"name": "http", "containerPort": rng.choice([8080, 8081])}]
    spec = {"nodeName": rng.choice(NODES[cluster]), "containers": [{"name": "c", "ports": ports}]}
    return {"metadata": meta, "spec": spec}


def status(rng: random.Random, cluster: str, i: int) -> dict[str, Any]:
    ready = "True" if rng.random() < 0.7 else "False"
    octet = {"c1": 244, "c2": 245, "c3": 246}[cluster]
    ip = f"10.{octet}.{rng.randrange(2)}.{i + 2}"
    return {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}


def mutate(rng: random.Random, items: dict[str, dict[str, Any]]) -> tuple[str, Any]:
    """One random put or delete: (relative key, object or None)."""
    cluster = rng.choice(["c1", "c1", "c2", "c3"])
    pre = "" if cluster == C else f"mesh/{cluster}/"
    ns, i = rng.choice(NS), rng.randrange(6)
    kind = rng.choices(
        ["pods", "podstatus", "services", "nodes", "serviceexports", "serviceimports",
         "policies", "namespaces"],
        [30, 40, 12, 4, 5, 3, 3, 3],
    )[0]  # fmt: skip
    if kind == "nodes":
        if cluster == C:
            cluster, pre = "c2", "mesh/c2/"
        node = rng.choice(NODES[cluster])
        rel = f"{pre}nodes/{node}"
        obj = {"underlayIP": f"10.1.{rng.randrange(2)}.{len(node)}"}
    elif kind in ("serviceimports", "policies", "namespaces"):
        pre = ""
        if kind == "namespaces":
            rel, obj = f"namespaces/{ns}", {"metadata": {"labels": {"team": rng.choice("xy")}}}
        elif kind == "policies":
            peer = {"podSelector": {"matchLabels": {"app": rng.choice(APPS)}}}
            spec = {"podSelector": {"matchLabels": {"app": rng.choice(APPS)}},
                    "ingress": [{"from": [peer]}]}  # fmt: skip
            meta = {"name": f"p{i % 2}", "namespace": ns}
            rel, obj = f"policies/{ns}/p{i % 2}", {"metadata": meta, "spec": spec}
        else:
            rel = f"serviceimports/{ns}/s{i % 3}"
            obj = {"spec": {"ips": [f"10.96.255.{i}"]}}
    elif kind == "services":
        rel, obj = f"{pre}services/{ns}/s{i % 3}", service(rng, ns, f"s{i % 3}")
    elif kind == "serviceexports":
        meta = {"name": f"s{i % 3}", "namespace": ns, "creationTimestamp": f"2026-0{i + 1}"}
        rel, obj = f"{pre}serviceexports/{ns}/s{i % 3}", {"metadata": meta}
    elif kind == "pods":
        rel, obj = f"{pre}pods/{ns}/p{i}", pod(rng, cluster, ns, f"p{i}")
    else:
        rel, obj = f"{pre}podstatus/{ns}/p{i}", status(rng, cluster, i)
    if rng.random() < 0.15 and rel in items:
        obj = None
    return rel, obj


def scratch(items: dict[str, Any], dead: set[str], unreachable: frozenset) -> Outcome:
    idx = ServicesIndex(C)
    for rel, obj in items.items():
        idx.record(rel, obj)
    return Derived(C, "n1").update(idx, idx.take(), dead.__contains__, unreachable)


def apply_changes(model: dict[str, ServicePort], changes: PortChanges, step: int) -> None:
    """What a proxy holding ``model`` does with one pass's changes; each change must be
    one (a port equal to what it replaces, or a removal of nothing, is not)."""
    for k, port in changes.changed.items():
        assert model.get(k) != port, f"step {step}: {k} handed over unchanged"
        assert changes.previous.get(k) == model.get(k), f"step {step}: {k}'s previous"
        model[k] = port
    for k in changes.removed:
        assert k in model and changes.previous[k] == model[k], f"step {step}: {k} removed"
        del model[k]


def zone_of(out: Outcome) -> dict[str, list[str]]:
    return {name: sorted(str(rr) for rr in rrs) for name, rrs in out.zone.records.items()}


def same(inc: Outcome, ref: Outcome) -> None:
    assert inc.ports == ref.ports
    assert inc.mesh.targets == ref.mesh.targets
    assert inc.mesh.clusterset == ref.mesh.clusterset
    assert inc.mesh.imports == ref.mesh.imports and inc.mesh.conditions == ref.mesh.conditions
    assert [g.clusters for g in inc.mesh.ports] == [g.clusters for g in ref.mesh.ports]
    assert [g.state for g in inc.mesh.ports] == [g.state for g in ref.mesh.ports]
    assert zone_of(inc) == zone_of(ref)
    assert inc.table == ref.table


@pytest.mark.parametrize("seed", range(4))
def test_incremental_passes_equal_a_recomputation_from_scratch(seed: int) -> None:
    rng = random.Random(seed)
    items: dict[str, Any] = {}
    idx = ServicesIndex(C)
    derived = Derived(C, "n1")
    dead: set[str] = set()
    unreachable: frozenset[tuple[str, str]] = frozenset()
    recomputed = []
    programmed: dict[str, ServicePort] = {}  # a proxy fed only each pass's changes
    for step in range(150):
        for _ in range(rng.randrange(1, 6)):  # a burst of events, then one pass
            rel, obj = mutate(rng, items)
            if obj is None:
                items.pop(rel, None)
            else:
                items[rel] = obj
            idx.record(rel, obj)
        if rng.random() < 0.05:  # a local node dies or comes back: the controller says so
            moved = {rng.choice(NODES[C])}
            dead ^= moved
            idx.nodes_moved(moved)  # only the Services selecting its pods
        dirt = idx.take()
        if rng.random() < 0.05:
            unreachable = frozenset({("c2", rng.choice(NODES["c2"]))} if rng.random() < 0.7 else ())
        out = derived.update(idx, dirt, dead.__contains__, unreachable)
        recomputed.append(out.names)
        ref = scratch(items, dead, unreachable)
        same(out, ref)
        apply_changes(programmed, out.changes, step)
        assert programmed == {p.ident: p for p in ref.ports}, f"step {step}"
        assert out.changes.current == programmed
        served = {}
        for rel, obj in items.items():
            parts = rel.split("/")
            if parts[0] == "podstatus":
                p = items.get(f"pods/{parts[1]}/{parts[2]}") or {}
                gone = p.get("spec", {}).get("nodeName") in dead
                served[(parts[1], parts[2])] = not_ready(obj) if gone else obj
        full = desired.compute(C, items.items(), served, unreachable)
        assert out.ports == [g.port for g in full.ports], f"step {step}"
        assert out.mesh.targets == full.targets and out.mesh.clusterset == full.clusterset
    assert min(recomputed) < max(recomputed)  # passes really were partial


def test_a_status_flip_recomputes_only_the_services_selecting_the_pod() -> None:
    idx = ServicesIndex(C)
    for name, app in (("web", "web"), ("db", "db"), ("api", "api")):
        svc = {"metadata": {"name": name, "namespace": "a"},
               "spec": {"clusterIP": "10.96.0.9", "selector": {"app": app},
                        "ports": [{"port": 80}]}}  # fmt: skip
        idx.record(f"services/a/{name}", svc)
    for i in range(50):
        p = {"metadata": {"name": f"p{i}", "namespace": "a", "labels": {"app": APPS[i % 3]}},
             "spec": {"nodeName": "n1"}}  # fmt: skip
        idx.record(f"pods/a/p{i}", p)
        idx.record(f"podstatus/a/p{i}", {"phase": "Running", "podIP": f"10.244.0.{i + 2}"})
    derived = Derived(C, "n1")
    assert derived.update(idx, idx.take(), lambda n: False).names == 3
    ready = {"phase": "Running", "podIP": "10.244.0.2",
             "conditions": [{"type": "Ready", "status": "True"}]}  # fmt: skip
    assert idx.record("podstatus/a/p0", ready)
    dirt = idx.take()
    assert dirt.refs == {("a", "web")} and not dirt.policy and not dirt.pod_dns
    out = derived.update(idx, dirt, lambda n: False)
    assert out.names == 1 and not out.policy_changed
    assert [e.ip for p in out.ports if p.name == "web" for e in p.endpoints] == ["10.244.0.2"]
