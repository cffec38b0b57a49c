"""A services pass recomputes what changed, not every Service (issue 15, docs/load.md).

The controller fed events as its watch would (no etcd, no kernel): 300 Services
in one namespace, each selecting its own group of three pods, the pods spread
over 30 nodes. One Service added, one pod's status, one Service deleted: each
pass recomputes that one name. A node dying reaches every Service with a pod on
it — a node hosting a pod of every group reaches all 300 — and a heartbeat or a
node hosting nothing recomputes none.
"""

from __future__ import annotations

import json

import pytest

from harness.agent.services import ServicesConfig, ServicesController
from harness.store import KV, Event

P = "/podlab/v1/c/"
G = 3.0  # liveness grace
N = 300  # Services
NODES = 30


def put(key: str, obj: dict) -> Event:
    return Event("PUT", KV(P + key, json.dumps(obj).encode()))


def delete(key: str) -> Event:
    return Event("DELETE", KV(P + key, b""))


def service(i: int) -> dict:
    spec = {"clusterIP": f"10.96.{1 + i // 250}.{1 + i % 250}", "selector": {"group": f"g{i}"},
            "ports": [{"port": 80, "targetPort": 8080}]}  # fmt: skip
    return {"metadata": {"name": f"s{i}", "namespace": "load"}, "spec": spec}


def pod(name: str, group: str, node: str) -> dict:
    meta = {"name": name, "namespace": "load", "labels": {"group": group, "app": "load"}}
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [{"name": "c"}]}}


def status(i: int, ready: bool = True) -> dict:
    cond = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"phase": "Running", "podIP": f"10.244.{i // 250}.{2 + i % 250}", "conditions": cond}


def node_of(i: int, j: int) -> str:
    """Pod j (0-2) of group i: the first always on n0 (so n0 hosts every group)."""
    return "n0" if j == 0 else f"n{1 + (i * 2 + j) % (NODES - 1)}"


@pytest.fixture
def ctl() -> ServicesController:
    cfg = ServicesConfig("c", "n0", "10.96.0.0/16", "10.244.0.0/16", dns=True, node_grace_s=G)
    c = ServicesController(None, cfg)  # type: ignore[arg-type]  # no watch started
    c.clock = lambda: 0.0
    kvs = [put(f"nodes/n{k}", {}).kv for k in range(NODES + 1)]  # n30 hosts no pod
    for i in range(N):
        kvs.append(put(f"services/load/s{i}", service(i)).kv)
        for j in range(3):
            kvs.append(put(f"pods/load/p{i}-{j}", pod(f"p{i}-{j}", f"g{i}", node_of(i, j))).kv)
            kvs.append(put(f"podstatus/load/p{i}-{j}", status(3 * i + j)).kv)
    c.on_reset(kvs)
    c.desired()  # the first pass: everything (a fresh index)
    assert c._names == N
    return c


def endpoints(ports: list, name: str) -> set[str]:
    return {e.ip for p in ports if p.name == name for e in p.endpoints}


def test_one_service_change_recomputes_only_that_service(ctl: ServicesController) -> None:
    ctl.on_events([put(f"services/load/s{N}", service(N))])  # selects no pod yet
    ports, zone, _ = ctl.desired()
    assert ctl._names == 1
    assert f"s{N}.load.svc.cluster.local." in zone.records
    assert {p.name for p in ports} == {f"s{i}" for i in range(N + 1)}
    ctl.on_events([put(f"pods/load/q{N}", pod(f"q{N}", f"g{N}", "n5"))])
    ctl.on_events([put(f"podstatus/load/q{N}", status(3 * N))])
    ports, _, _ = ctl.desired()
    assert ctl._names == 1 and endpoints(ports, f"s{N}") == {status(3 * N)["podIP"]}
    ctl.on_events([put("podstatus/load/p7-1", status(22, ready=False))])
    ports, _, _ = ctl.desired()
    assert ctl._names == 1 and endpoints(ports, "s7") == {status(21)["podIP"], status(23)["podIP"]}
    ctl.on_events([delete("services/load/s8")])
    ports, zone, _ = ctl.desired()
    assert ctl._names == 1 and "s8" not in {p.name for p in ports}
    assert "s8.load.svc.cluster.local." not in zone.records
    ctl.dirty.clear()  # (the worker clears it before each pass)
    ctl.on_events([put(f"nodes/n{k}", {}) for k in range(NODES + 1)])  # heartbeats
    assert not ctl.dirty.is_set()
    ctl.desired()
    assert ctl._names == 0


def test_a_node_going_notready_still_reaches_every_service_it_backs(ctl) -> None:
    for t in (1.0, 2.0, 3.0, G + 0.5):  # everyone but n0 keeps beating
        ctl.clock = lambda t=t: t
        ctl.on_events([put(f"nodes/n{k}", {}) for k in range(1, NODES + 1)])
    assert ctl.liveness.changed(ctl.clock())  # n0 crossed the grace, no event says so
    ports, _, _ = ctl.desired()
    assert ctl._names == N  # every Service has a pod on n0
    for i in range(N):
        want = {status(3 * i + j)["podIP"] for j in (1, 2)}
        assert endpoints(ports, f"s{i}") == want, f"s{i}"
    ctl.on_events([put("nodes/n0", {})])  # back
    ports, _, _ = ctl.desired()
    assert ctl._names == N and endpoints(ports, "s0") == {status(j)["podIP"] for j in range(3)}


def test_a_node_recomputes_the_services_of_its_pods_only(ctl) -> None:
    ctl.on_events([delete("nodes/n1")])  # its record gone: dead at once
    hosted = {i for i in range(N) for j in (1, 2) if node_of(i, j) == "n1"}
    ports, _, _ = ctl.desired()
    assert 0 < ctl._names == len(hosted) < N
    for i in hosted:
        gone = {status(3 * i + j)["podIP"] for j in (1, 2) if node_of(i, j) == "n1"}
        assert not endpoints(ports, f"s{i}") & gone
    ctl.on_events([delete(f"nodes/n{NODES}")])  # hosts nothing
    ctl.desired()
    assert ctl._names == 0


def test_a_pass_hands_over_only_the_ports_it_changed(ctl: ServicesController) -> None:
    """The proxy and the sweeper get a one-name pass's port, not all 300 (issue 15);
    the controller's table equals a recomputation of every Service."""
    ctl.on_events([put("podstatus/load/p7-1", status(22, ready=False))])
    changes, _, _ = ctl.derive()
    assert list(changes.changed) == ["load/s7:/tcp"] and not changes.removed
    was = {e.ip for e in changes.previous["load/s7:/tcp"].endpoints}
    assert was - {e.ip for e in changes.changed["load/s7:/tcp"].endpoints} == {status(22)["podIP"]}
    ctl.on_events([delete("services/load/s8")])
    changes, _, _ = ctl.derive()
    assert not changes.changed and changes.removed == {"load/s8:/tcp"}
    ctl.on_events([put("services/load/s9", service(9))])  # rewritten as it was: no change
    changes, _, _ = ctl.derive()
    assert ctl._names == 1 and not changes
    # kube-dns' address is answered by the node's own DNS server: never handed over
    dns = {"metadata": {"name": "kube-dns", "namespace": "kube-system"},
           "spec": {"clusterIP": "10.96.0.10", "selector": {"group": "g1"},
                    "ports": [{"port": 53, "protocol": "UDP", "name": "dns"}]}}  # fmt: skip
    ctl.on_events([put("services/kube-system/kube-dns", dns)])
    changes, _, _ = ctl.derive()
    assert ctl._names == 1 and not changes
    current = dict(changes.current)
    ctl.on_events([put(f"nodes/n{k}", {}) for k in range(NODES + 1)])
    ctl.desired(full=True)  # everything recomputed: the same table
    assert ctl.derived.ports == current and len(current) == N - 1
