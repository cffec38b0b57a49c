"""Global services and MCS across a mesh, computed from mirrored keys (pure).

The mirrored layout is the mesh syncer's contract:
``/podlab/v1/<local>/mesh/<remote>/<the remote's own relative key>``; these
tests write it directly, as the syncer would.
"""

from __future__ import annotations

import collections
import re
from typing import Any

import pytest

from harness.agent.dns import Zone
from harness.agent.mesh import desired, globalsvc, mcs
from harness.agent.mesh.views import build_views, served_statuses
from harness.agent.proxy import iptables, nftables
from harness.agent.proxy.model import Endpoint, PortBackends, ServicePort

Items = list[tuple[str, dict[str, Any]]]


def svc(name: str = "web", ip: str = "10.96.0.20", ns: str = "default", **ann: str) -> dict:
    meta = {"name": name, "namespace": ns, "annotations": dict(ann)}
    spec = {
        "clusterIP": ip,
        "selector": {"app": name},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
    }
    return {"metadata": meta, "spec": spec}


def pod(name: str, node: str, app: str = "web", ns: str = "default") -> dict:
    c = {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}
    meta = {"name": name, "namespace": ns, "labels": {"app": app}}
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [c]}}


def status(ip: str, ready: bool = True) -> dict:
    cond = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"phase": "Running", "podIP": ip, "conditions": cond}


def cluster(prefix: str, subnet: str, n: int, ready: int | None = None, app: str = "web") -> Items:
    """``n`` pods on node <prefix>-n1 at <subnet>.(i+2), the first ``ready`` of them Ready."""
    out: Items = [(f"nodes/{prefix}-n1", {"name": f"{prefix}-n1", "underlayIP": f"{subnet}.254"})]
    for i in range(n):
        name = f"{app}-{prefix}-{i}"
        out.append((f"pods/default/{name}", pod(name, f"{prefix}-n1", app)))
        ok = ready is None or i < ready
        out.append((f"podstatus/default/{name}", status(f"{subnet}.{i + 2}", ok)))
    return out


def mirrored(remote: str, items: Items) -> Items:
    return [(f"mesh/{remote}/{k}", v) for k, v in items]


def lab(local_ready: int | None = 3, remote_ready: int | None = 3, **ann: str) -> Items:
    """c1 (local) and c2 (mirrored), 3 backends each, the same global service in both."""
    g = {globalsvc.ANN_GLOBAL: "true", **ann}
    items = [("services/default/web", svc(**g)), *cluster("c1", "10.244.1", 3, local_ready)]
    remote = [("services/default/web", svc(ip="10.96.0.33", **{globalsvc.ANN_GLOBAL: "true"}))]
    remote += cluster("c2", "10.245.1", 3, remote_ready)
    return items + mirrored("c2", remote)


def ports(items: Items, unreachable: frozenset = frozenset()) -> list[globalsvc.GlobalPort]:
    local, remotes = build_views("c1", items)
    out = []
    for s in local.services.values():
        out += globalsvc.merge(s, local, list(remotes.values()), unreachable)
    return out


def ips(g: globalsvc.GlobalPort) -> list[str]:
    return [ep.ip for ep in g.port.endpoints]


def test_global_service_balances_over_both_clusters() -> None:
    (g,) = ports(lab())
    assert g.state == "all"
    assert ips(g) == [f"10.244.1.{i}" for i in (2, 3, 4)] + [f"10.245.1.{i}" for i in (2, 3, 4)]
    assert g.port.cluster_ip == "10.96.0.20"  # our own ClusterIP, their backends
    assert g.cluster_of(Endpoint("10.245.1.2", 8080)) == "c2"


def test_not_global_or_not_shared_keeps_backends_home() -> None:
    local_only = [(k, v) for k, v in lab() if not k.startswith("services/")]
    local_only.append(("services/default/web", svc()))
    assert ips(ports(local_only)[0]) == ["10.244.1.2", "10.244.1.3", "10.244.1.4"]
    # the remote copy is global but not shared: c2 exports none, we still use our own
    items = lab()
    items = [(k, v) for k, v in items if k != "mesh/c2/services/default/web"]
    shared = {globalsvc.ANN_GLOBAL: "true", globalsvc.ANN_SHARED: "false"}
    items.append(("mesh/c2/services/default/web", svc(ip="10.96.0.33", **shared)))
    assert ips(ports(items)[0]) == ["10.244.1.2", "10.244.1.3", "10.244.1.4"]
    # the remote copy not global at all: the same
    items[-1] = ("mesh/c2/services/default/web", svc(ip="10.96.0.33"))
    assert len(ports(items)[0].port.endpoints) == 3


def test_shared_false_locally_still_consumes_remote_backends() -> None:
    (g,) = ports(lab(**{globalsvc.ANN_SHARED: "false"}))
    assert len(g.port.endpoints) == 6


def test_not_ready_remote_backends_are_never_used() -> None:
    (g,) = ports(lab(remote_ready=1))
    assert [ip for ip in ips(g) if ip.startswith("10.245.")] == ["10.245.1.2"]
    (g,) = ports(lab(local_ready=0, remote_ready=0, **{globalsvc.ANN_AFFINITY: "local"}))
    assert g.port.endpoints == () and g.state == "none"  # refused, not sent to unready pods


def test_affinity_local_uses_remote_only_while_no_local_backend_is_ready() -> None:
    aff = {globalsvc.ANN_AFFINITY: "local"}
    (g,) = ports(lab(**aff))
    assert g.state == "preferred" and all(ip.startswith("10.244.") for ip in ips(g))
    (g,) = ports(lab(local_ready=0, **aff))
    assert g.state == "failover" and all(ip.startswith("10.245.") for ip in ips(g))


def test_affinity_remote_is_the_mirror_image() -> None:
    aff = {globalsvc.ANN_AFFINITY: "remote"}
    (g,) = ports(lab(**aff))
    assert all(ip.startswith("10.245.") for ip in ips(g))
    (g,) = ports(lab(remote_ready=0, **aff))
    assert g.state == "failover" and all(ip.startswith("10.244.") for ip in ips(g))


def test_spread_flip_back_gives_each_returning_backend_its_full_strength_share() -> None:
    """1 of 3 local backends Ready: it takes 1/3 (its share at full strength), the
    3 remote backends the missing 2/3 — not Cilium's 100 % on the first one back."""
    (g,) = ports(lab(local_ready=1, **{globalsvc.ANN_AFFINITY: "local"}))
    assert g.state == "spill"
    share = collections.Counter(ips(g))
    total = sum(share.values())
    assert share["10.244.1.2"] / total == pytest.approx(1 / 3)
    for ip in ("10.245.1.2", "10.245.1.3", "10.245.1.4"):
        assert share[ip] / total == pytest.approx(2 / 9)
    (g,) = ports(lab(local_ready=2, **{globalsvc.ANN_AFFINITY: "local"}))
    share = collections.Counter(ips(g))
    assert share["10.244.1.3"] / sum(share.values()) == pytest.approx(1 / 3)
    (g,) = ports(lab(local_ready=3, **{globalsvc.ANN_AFFINITY: "local"}))
    assert g.state == "preferred" and len(g.port.endpoints) == 3


def test_immediate_flip_back_is_ciliums_all_or_nothing() -> None:
    ann = {globalsvc.ANN_AFFINITY: "local", globalsvc.ANN_FLIPBACK: "immediate"}
    (g,) = ports(lab(local_ready=1, **ann))
    assert ips(g) == ["10.244.1.2"]  # the first one back takes everything (the control)


def test_spill_weights_stay_bounded() -> None:
    pref = [Endpoint(f"10.1.0.{i}", 80) for i in range(1, 4)]
    fb = [Endpoint(f"10.2.{i // 250}.{i % 250}", 80) for i in range(300)]
    eps = globalsvc.spill(pref, 200, fb)
    assert set(eps) == {*pref, *fb}  # nothing dropped, only rounded
    assert len(eps) <= 2 * globalsvc.MAX_SLOTS + len(fb)


def test_unreachable_or_deregistered_remote_nodes_lose_their_backends() -> None:
    (g,) = ports(lab(), unreachable=frozenset({("c2", "c2-n1")}))
    assert all(ip.startswith("10.244.") for ip in ips(g))
    items = [(k, v) for k, v in lab() if k != "mesh/c2/nodes/c2-n1"]
    items.append(("mesh/c2/nodes/c2-other", {"name": "c2-other"}))  # records exist, not its
    assert all(ip.startswith("10.244.") for ip in ips(ports(items)[0]))
    # with no node records mirrored at all nothing is judged (a syncer before its first sync)
    items = [(k, v) for k, v in lab() if "/nodes/" not in k]
    assert len(ports(items)[0].port.endpoints) == 6


def test_remote_heartbeat_silence_removes_nothing() -> None:
    """A stale mirror (remote etcd down) keeps its backends: only the probe or a
    deleted node record may take them out."""
    items = lab()
    view = build_views("c1", items)[1]["c2"]
    view.nodes["c2-n1"]["heartbeat"] = "2000-01-01T00:00:00Z"
    assert served_statuses(view) == view.statuses


def test_unknown_annotation_values_are_problems() -> None:
    found = globalsvc.annotation_problems(
        {globalsvc.ANN_AFFINITY: "loacl", globalsvc.ANN_GLOBAL: "yes"}
    )
    assert [k for k, _, _ in found] == [globalsvc.ANN_GLOBAL, globalsvc.ANN_AFFINITY]
    assert 'use "none", "local", "remote"' in found[1][2]
    assert globalsvc.annotation_problems({globalsvc.ANN_AFFINITY: "Local"}) == []


# -- MCS ---------------------------------------------------------------------------------


def export(ts: str) -> dict:
    meta = {"name": "web", "namespace": "default", "creationTimestamp": ts}
    return {"apiVersion": mcs.API_VERSION, "kind": "ServiceExport", "metadata": meta}


def mcs_lab(c2_port: int = 80, c2_name: str = "http") -> Items:
    items = [("services/default/web", svc()), *cluster("c1", "10.244.1", 2)]
    items.append(("serviceexports/default/web", export("2026-01-01T00:00:05Z")))
    theirs = svc(ip="10.96.0.33")
    theirs["spec"]["ports"] = [{"name": c2_name, "port": c2_port, "targetPort": 8080}]
    remote = [("services/default/web", theirs), *cluster("c2", "10.245.1", 2)]
    remote.append(("serviceexports/default/web", export("2026-01-01T00:00:01Z")))
    return items + mirrored("c2", remote)


def test_exports_become_one_import_over_every_exporting_cluster() -> None:
    items = mcs_lab()
    local, remotes = build_views("c1", items)
    imports, conds = mcs.resolve(mcs.exports_of(local, remotes.values()))
    imp = imports[("default", "web")]
    assert imp.type == "ClusterSetIP" and imp.clusters == ("c2", "c1")  # oldest export first
    assert imp.ports == (mcs.ImportPort("http", "TCP", 80, ("c2", "c1")),)
    assert {c.type: c.status for c in conds[("c1", "default", "web")]} == {
        "Valid": "True",
        "Conflict": "False",
    }
    (g,) = mcs.import_ports(imp, "10.96.255.254", local, list(remotes.values()))
    assert g.port.cluster_ip == "10.96.255.254" and g.port.name == "web@clusterset"
    assert len(g.port.endpoints) == 4


def test_conflicting_ports_oldest_export_wins_all_are_marked() -> None:
    items = mcs_lab(c2_port=8080)
    local, remotes = build_views("c1", items)
    imports, conds = mcs.resolve(mcs.exports_of(local, remotes.values()))
    imp = imports[("default", "web")]
    assert imp.ports == (mcs.ImportPort("http", "TCP", 8080, ("c2",)),)  # c2 exported first
    for c in ("c1", "c2"):
        conflict = {x.type: x for x in conds[(c, "default", "web")]}["Conflict"]
        assert (conflict.status, conflict.reason) == ("True", "PortConflict")
        assert 'port "http" is 8080/TCP in c2 but 80/TCP in c1' in conflict.message
        assert "oldest export (cluster c2" in conflict.message
    (g,) = mcs.import_ports(imp, "10.96.255.254", local, list(remotes.values()))
    assert all(ep.ip.startswith("10.245.") for ep in g.port.endpoints)  # only c2 exposes it


def test_export_without_service_is_invalid_and_contributes_nothing() -> None:
    items = [(k, v) for k, v in mcs_lab() if k != "services/default/web"]
    local, remotes = build_views("c1", items)
    imports, conds = mcs.resolve(mcs.exports_of(local, remotes.values()))
    (valid,) = conds[("c1", "default", "web")]
    assert (valid.status, valid.reason) == ("False", "NoService")
    assert "apply the Service" in valid.message
    assert imports[("default", "web")].clusters == ("c2",)


def test_clusterset_dns_answers_the_import_ip_and_headless_backends() -> None:
    items = mcs_lab()
    items.append(
        ("serviceimports/default/web", {"spec": {"type": "ClusterSetIP", "ips": ["10.96.255.254"]}})
    )
    got = desired.compute("c1", items, build_views("c1", items)[0].statuses)
    zone = Zone()
    for rec in got.clusterset:
        zone.add_clusterset(*rec)
    names = {str(rr.rdata) for rr in zone.records["web.default.svc.clusterset.local."]}
    assert names == {"10.96.255.254"}
    assert "_http._tcp.web.default.svc.clusterset.local." in zone.records
    assert got.targets == {("c2", "c2-n1"): "10.245.1.254"}
    # headless exports: the backends of both clusters
    for i, (k, v) in enumerate(items):
        if k.endswith("services/default/web"):
            items[i] = (k, {**v, "spec": {**v["spec"], "clusterIP": "None"}})
    got = desired.compute("c1", items, build_views("c1", items)[0].statuses)
    assert got.clusterset[0][2] is None
    zone = Zone()
    zone.add_clusterset(*got.clusterset[0])
    answers = {str(rr.rdata) for rr in zone.records["web.default.svc.clusterset.local."]}
    assert answers == {"10.244.1.2", "10.244.1.3", "10.245.1.2", "10.245.1.3"}


# -- weights in every proxy mode --------------------------------------------------------------


def weighted() -> ServicePort:
    a, b = Endpoint("10.244.1.2", 8080), Endpoint("10.245.1.2", 8080)
    return ServicePort("default", "web", "", "tcp", "10.96.0.20", 80, endpoints=(a, a, b))


def test_nft_weights_are_repeated_map_elements_one_chain_per_endpoint() -> None:
    doc = nftables.full_ruleset([weighted()], nftables.NftConfig("10.96.0.0/16"))
    assert "goto lb-3" in doc
    assert doc.count(": 10.244.1.2 . 8080") == 2 and doc.count(": 10.245.1.2 . 8080") == 1
    aff = ServicePort(**{**weighted().__dict__, "affinity_s": 30})
    doc = nftables.full_ruleset([aff], nftables.NftConfig("10.96.0.0/16"))
    assert doc.count("dnat to 10.244.1.2:8080") == 1  # one sep chain per endpoint
    assert re.search(r"numgen random mod 3 vmap \{ 0 : goto (sep-\w+), 1 : goto \1, 2 :", doc)
    old = {aff.ident: aff}
    assert (
        nftables.update_document(old, {}, nftables.NftConfig("10.96.0.0/16")).count("delete chain")
        == 3
    )  # svc + 2 seps, each once


def test_iptables_weights_are_statistic_jumps_one_sep_per_endpoint() -> None:
    doc = iptables.full_document([weighted()], None)
    jumps = re.findall(r"-A KUBE-SVC-\w+ (?:-m statistic .*? )?-j (KUBE-SEP-\w+)", doc)
    assert len(jumps) == 3 and jumps[0] == jumps[1] != jumps[2]
    assert doc.count("-j DNAT --to-destination 10.244.1.2:8080") == 1
    assert doc.count(":KUBE-SEP-") == 2


def test_port_backends_counts_known_and_ready() -> None:
    items = cluster("c1", "10.244.1", 3, 1)
    local, _ = build_views("c1", items)
    from harness.agent.proxy.model import port_backends

    got = port_backends(svc(), local.pods, local.statuses)
    assert got == {("http", "tcp"): PortBackends((Endpoint("10.244.1.2", 8080),), 3)}


def test_ipvs_weights_are_real_server_weights_under_wrr() -> None:
    """ipvs has no repeated real servers: a repeated endpoint becomes its weight, and a
    weighted service uses wrr (rr would ignore weights); a weight change is an edit."""
    from harness.agent.proxy import ipvs

    vss, rss = ipvs.desired([weighted()], [], "rr")
    assert {v.scheduler for v in vss} == {"wrr"}
    assert {(r.raddr, r.weight) for r in rss} == {("10.244.1.2:8080", 2), ("10.245.1.2:8080", 1)}
    plain = ServicePort(
        "default", "web", "", "tcp", "10.96.0.20", 80, endpoints=(Endpoint("10.244.1.2", 8080),)
    )
    assert {v.scheduler for v in ipvs.desired([plain], [], "rr")[0]} == {"rr"}
    lines = ipvs.restore_commands(ipvs.desired([plain], [], "rr"), (vss, rss))
    assert "-e -t 10.96.0.20:80 -r 10.244.1.2:8080 -m -w 2" in lines
    assert not any(x.startswith("-d ") for x in lines), "a re-weighted server must not be deleted"
    saved = "-A -t 10.96.0.20:80 -s wrr\n-a -t 10.96.0.20:80 -r 10.244.1.2:8080 -m -w 2\n"
    assert ipvs.parse_saved(saved)[1] == {
        ipvs.RealServer("tcp", "10.96.0.20:80", "10.244.1.2:8080", 2)
    }
