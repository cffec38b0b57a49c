"""Pure proxy builders: (services, endpoints) → nft script / iptables-restore text."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from harness.agent.proxy import iptables, nftables
from harness.agent.proxy.model import Endpoint, ServicePort, endpoints_for
from harness.agent.proxy.registry import DEFAULT_MODE, PROXIES, ProxyOptions, make_proxy

CFG = nftables.NftConfig("10.96.0.0/16", "10.244.0.0/16")


def sp(name: str, ip: str, n: int, **kw) -> ServicePort:
    eps = tuple(Endpoint(f"10.244.1.{i + 2}", 8080) for i in range(n))
    fields = {"port_name": "", "protocol": "tcp", "port": 80, **kw}
    return ServicePort("default", name, cluster_ip=ip, endpoints=eps, **fields)


def test_nft_lookup_is_one_map_element_per_service_port() -> None:
    doc = nftables.full_ruleset([sp("a", "10.96.0.1", 3), sp("b", "10.96.0.2", 2)], CFG)
    assert doc.count("vmap @service-ips") == 1  # one rule, whatever the number of services
    assert "add element ip podlab-proxy service-ips { 10.96.0.1 . tcp . 80 : goto lb-3, " in doc
    assert "10.96.0.1 . tcp . 80 . 2 : 10.244.1.4 . 8080" in doc  # endpoint = map element
    # 3 NAT base chains, 4 regular ones + lb-N/nplb-N for every N up to LB_MIN (used or not)
    assert doc.count("add chain") == 7 + 2 * nftables.LB_MIN
    assert "sep-" not in doc and "svc-" not in doc  # no per-service chains without affinity
    assert "add element ip podlab-proxy hairpin { 10.244.1.2 . 10.244.1.2, " in doc


def test_nft_service_without_endpoints_rejects() -> None:
    doc = nftables.full_ruleset([sp("a", "10.96.0.1", 0, node_port=30001)], CFG)
    assert "no-endpoint-services { 10.96.0.1 . tcp . 80 : goto reject-chain }" in doc
    assert "no-endpoint-nodeports { tcp . 30001 : goto reject-chain }" in doc
    assert "reject with tcp reset" in doc
    assert "svc-" not in doc  # no chain for it
    # checked where only a connection's first packet passes: the NAT chains (no
    # filter base chain for every packet of the node to pass; docs/throughput.md)
    assert [ln.split()[4] for ln in doc.splitlines() if ln.endswith("jump endpoints-check")] == [
        "nat-prerouting",
        "nat-output",
    ]
    assert "type filter" not in doc


def test_nft_affinity_uses_dynamic_timeout_sets() -> None:
    doc = nftables.full_ruleset([sp("a", "10.96.0.1", 2, affinity_s=30)], CFG)
    assert doc.count("flags dynamic,timeout ; timeout 30s") == 2
    assert doc.count("update @aff-") == 2
    assert doc.count("ip saddr @aff-") == 2
    assert re.search(r"numgen random mod 2 vmap \{ 0 : goto sep-\w+, 1 : goto sep-\w+ \}", doc)
    assert doc.count("dnat to 10.244.1.") == 2


def test_nft_update_touches_only_the_changed_service() -> None:
    a, b = sp("a", "10.96.0.1", 3), sp("b", "10.96.0.2", 3)
    b2 = sp("b", "10.96.0.2", 2)
    doc = nftables.update_document({a.ident: a, b.ident: b}, {a.ident: a, b2.ident: b2}, CFG)
    assert doc is not None
    assert "10.96.0.1" not in doc
    assert "10.96.0.2 . tcp . 80 . 2 : 10.244.1.4 . 8080" in doc.split("add element")[0]
    assert "add chain ip podlab-proxy lb-2" in doc  # first service with 2 endpoints
    assert "add chain ip podlab-proxy lb-3" not in doc  # a still uses it
    assert "delete chain" not in doc and "hairpin" not in doc  # a still uses 10.244.1.4
    assert "add table" not in doc
    assert nftables.update_document({a.ident: a}, {a.ident: a}, CFG) is None


def test_nft_lb_chains_cover_every_count_so_updates_never_add_one() -> None:
    """nft cannot add an lb rule (a lookup of the endpoints map) after the map exists:
    a full ruleset makes lb-N for every N up to lb_range, and an update within it
    adds no chain and no rule; the applier goes to a full sync for a count beyond."""
    assert nftables.lb_range([sp("a", "10.96.0.1", 3)]) == nftables.LB_MIN
    assert nftables.lb_range([sp("a", "10.96.0.1", 1000)]) == 1024
    assert "add chain ip podlab-proxy lb-1024" in nftables.full_ruleset(
        [sp("a", "10.96.0.1", 1000)], CFG
    )
    a, a2 = sp("a", "10.96.0.1", 3), sp("a", "10.96.0.1", 2)
    doc = nftables.update_document({a.ident: a}, {a2.ident: a2}, CFG, nftables.LB_MIN)
    assert doc is not None and "add chain" not in doc and "add rule" not in doc
    proxy = nftables.NftablesProxy(CFG)
    fulls: list[list[ServicePort]] = []
    proxy.full_sync = lambda s: fulls.append(list(s))  # type: ignore[method-assign]
    proxy.state = proxy._given = {a.ident: a}
    proxy.lb_max = nftables.LB_MIN
    proxy.update([sp("a", "10.96.0.1", nftables.LB_MIN + 1)])  # beyond: a full sync
    assert len(fulls) == 1 and len(fulls[0][0].endpoints) == nftables.LB_MIN + 1


def test_nft_endpoints_keep_their_slots_so_an_update_rewrites_only_what_changed() -> None:
    """100 of 1,000 backends Ready, then 200: the first 100 stay in their slots, the
    update adds 100 map elements and deletes none (not 100 deletes and 200 adds)."""
    eps = [Endpoint(f"10.244.{200 + k // 250}.{k % 250 + 1}", 8080) for k in range(1000)]
    base = sp("prog", "10.96.0.50", 0)
    first = replace(base, endpoints=tuple(sorted(eps[:100])))
    second = replace(base, endpoints=tuple(sorted(eps[:200])))
    placed = nftables.slotted(first, second)
    assert placed.endpoints[:100] == first.endpoints and sorted(placed.endpoints) == list(
        second.endpoints
    )
    doc = nftables.update_document({base.ident: first}, {base.ident: placed}, CFG)
    assert doc is not None
    element_lines = [x for x in doc.splitlines() if " element " in x]
    assert sum(x.count(" : 10.244.") for x in element_lines if x.startswith("add")) == 100
    assert not [
        x for x in element_lines if x.startswith("delete element ip podlab-proxy endpoints")
    ]
    assert "service-ips { 10.96.0.50 . tcp . 80 : goto lb-100 }" in doc  # re-pointed to lb-200
    # one backend leaves: the last slot's endpoint moves into its hole, nothing else moves
    gone = eps[5]
    third = replace(base, endpoints=tuple(e for e in placed.endpoints if e != gone))
    moved = nftables.slotted(placed, third)
    assert sum(a != b for a, b in zip(placed.endpoints, moved.endpoints, strict=False)) == 1
    # weights (repeated entries) keep their counts
    w = replace(base, endpoints=(eps[0], eps[0], eps[1]))
    assert sorted(
        nftables.slotted(replace(base, endpoints=(eps[1], eps[2])), w).endpoints
    ) == sorted(w.endpoints)


def test_nft_applier_reprograms_nothing_for_an_unchanged_service() -> None:
    proxy = nftables.NftablesProxy(CFG)
    a = sp("a", "10.96.0.1", 3)
    proxy.state, proxy._given = {a.ident: a}, {a.ident: a}
    proxy.update([sp("a", "10.96.0.1", 3)])  # equal, not identical: no nft run (none here)
    assert proxy.state[a.ident] is a


def test_nft_update_service_losing_all_endpoints_moves_to_reject() -> None:
    a, a0 = sp("a", "10.96.0.1", 2), sp("a", "10.96.0.1", 0)
    doc = nftables.update_document({a.ident: a}, {a.ident: a0}, CFG)
    assert doc is not None
    assert "delete element ip podlab-proxy service-ips { 10.96.0.1 . tcp . 80" in doc
    assert "add element ip podlab-proxy no-endpoint-services" in doc
    assert "delete element ip podlab-proxy endpoints { 10.96.0.1 . tcp . 80 . 0 : " in doc


def test_iptables_statistic_probabilities_follow_kube_proxy() -> None:
    doc = iptables.full_document([sp("a", "10.96.0.1", 3)], "10.244.0.0/16")
    probs = re.findall(r"--probability (\S+)", doc)
    assert [round(float(p), 4) for p in probs] == [0.3333, 0.5]
    assert "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-" in doc
    assert doc.count("-j DNAT --to-destination") == 3


def test_iptables_endpoint_change_declares_only_that_service() -> None:
    a, a2, b = sp("a", "10.96.0.1", 3), sp("a", "10.96.0.1", 2), sp("b", "10.96.0.2", 1)
    doc = iptables.endpoints_document([(a, a2)], None)
    assert doc is not None and "KUBE-SERVICES" not in doc
    assert b.chain_id() not in doc
    assert doc.count("-X KUBE-SEP-") == 1
    both = iptables.endpoints_document([(a, a2), (b, sp("b", "10.96.0.2", 2))], None)
    assert both is not None and both.count("COMMIT") == 1 and both.count("*nat") == 1
    moved = sp("a", "10.96.0.9", 2)
    assert iptables.endpoints_document([(a, moved)], None) is None  # KUBE-SERVICES must change


def test_iptables_service_added_rewrites_top_chains_and_its_own_only() -> None:
    a, b, c = sp("a", "10.96.0.1", 3), sp("b", "10.96.0.2", 2), sp("c", "10.96.0.3", 1)
    old = {a.ident: a, b.ident: b}
    doc = iptables.services_document(old, {**old, c.ident: c}, None)
    assert doc.count("COMMIT") == 2 and ":KUBE-SERVICES - [0:0]" in doc
    assert doc.count("-A KUBE-SERVICES -d ") == 3  # every service's jump: the chain is flushed
    declared = set(re.findall(r"^:(\S+) ", doc, re.M))
    assert set(iptables.chains_of(c)) <= declared
    assert not (set(iptables.chains_of(a)) | set(iptables.chains_of(b))) & declared
    assert "KUBE-MARK-MASQ - " not in doc and "-X " not in doc


def test_iptables_service_removed_or_emptied_deletes_its_chains() -> None:
    a, b = sp("a", "10.96.0.1", 3), sp("b", "10.96.0.2", 2, node_port=30002)
    doc = iptables.services_document({a.ident: a, b.ident: b}, {a.ident: a}, None)
    assert sorted(re.findall(r"^-X (\S+)", doc, re.M)) == sorted(iptables.chains_of(b))
    assert all(f":{ch} - [0:0]" in doc for ch in iptables.chains_of(b))  # flushed first
    b0 = sp("b", "10.96.0.2", 0, node_port=30002)
    doc = iptables.services_document({a.ident: a, b.ident: b}, {a.ident: a, b.ident: b0}, None)
    assert len(re.findall(r"^-X ", doc, re.M)) == len(iptables.chains_of(b))
    assert "-A KUBE-SERVICES -d 10.96.0.2/32 -p tcp -m tcp --dport 80 -j REJECT" in doc


def test_iptables_full_document_deletes_stale_chains() -> None:
    doc = iptables.full_document([], None, stale={"KUBE-SVC-OLD"})
    assert ":KUBE-SVC-OLD - [0:0]" in doc and "-X KUBE-SVC-OLD" in doc


def _pod(name: str, labels: dict, ports: list | None = None) -> dict:
    c = {"name": "c", "ports": ports or []}
    return {
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [c]},
    }


def _status(ip: str, ready: bool = True, phase: str = "Running") -> dict:
    cond = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"phase": phase, "podIP": ip, "conditions": cond}


def test_endpoints_are_ready_running_selected_pods_with_named_ports() -> None:
    service = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "clusterIP": "10.96.0.7",
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    pods = [
        _pod("a", {"app": "web"}, [{"name": "http", "containerPort": 8080}]),
        _pod("b", {"app": "web"}, [{"name": "http", "containerPort": 9000}]),
        _pod("c", {"app": "web"}, [{"name": "http", "containerPort": 8080}]),  # not ready
        _pod("d", {"app": "db"}, [{"name": "http", "containerPort": 8080}]),  # not selected
        _pod("e", {"app": "web"}),  # no port named http
    ]
    statuses = {("default", n): _status(f"10.244.0.{i}") for i, n in enumerate("abcde")}
    statuses[("default", "c")] = _status("10.244.0.2", ready=False)
    (port,) = endpoints_for(service, pods, statuses)
    assert port.endpoints == (Endpoint("10.244.0.0", 8080), Endpoint("10.244.0.1", 9000))
    headless = {**service, "spec": {**service["spec"], "clusterIP": "None"}}
    assert endpoints_for(headless, pods, statuses) == []


def test_registry_lists_modes_and_refuses_unknown() -> None:
    assert set(PROXIES) == {"nftables", "iptables", "userspace", "ipvs"}
    assert DEFAULT_MODE in PROXIES
    with pytest.raises(ValueError, match=r"unknown proxy mode 'ebpf'.*nftables, iptables"):
        make_proxy("ebpf", ProxyOptions("10.96.0.0/16"))
