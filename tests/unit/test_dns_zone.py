"""Cluster DNS answers from stored objects (pure: Zone.build + Zone.answer)."""

from __future__ import annotations

from dnslib import QTYPE, RCODE, DNSRecord

from harness.agent.dns import Zone, dns_ip, resolv_conf


def _svc(name: str, ns: str = "default", **spec) -> dict:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def _pod(name: str, labels: dict) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": {}}


READY = [{"type": "Ready", "status": "True"}]
ZONE = Zone.build(
    [
        _svc("web", clusterIP="10.96.0.20", ports=[{"name": "http", "port": 80}]),
        _svc(
            "db",
            clusterIP="None",
            selector={"app": "db"},
            ports=[{"name": "pg", "port": 5432, "targetPort": 5432}],
        ),
        _svc("ext", type="ExternalName", externalName="example.org"),
        _svc("kube-dns", "kube-system", clusterIP="10.96.0.10"),
    ],
    [_pod("db-0", {"app": "db"}), _pod("db-1", {"app": "db"}), _pod("db-2", {"app": "db"})],
    {
        ("default", "db-0"): {"phase": "Running", "podIP": "10.244.1.5", "conditions": READY},
        ("default", "db-1"): {"phase": "Running", "podIP": "10.244.2.6", "conditions": READY},
        ("default", "db-2"): {"phase": "Running", "podIP": "10.244.2.7", "conditions": []},
    },
)


def ask(name: str, qtype: str = "A") -> DNSRecord:
    return ZONE.answer(DNSRecord.question(name, qtype))


def test_service_a_record() -> None:
    r = ask("web.default.svc.cluster.local")
    assert [str(rr.rdata) for rr in r.rr] == ["10.96.0.20"]
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1


def test_headless_service_lists_ready_pods_only() -> None:
    r = ask("db.default.svc.cluster.local")
    assert sorted(str(rr.rdata) for rr in r.rr) == ["10.244.1.5", "10.244.2.6"]


def test_srv_for_named_ports_with_target_addresses() -> None:
    r = ask("_http._tcp.web.default.svc.cluster.local", "SRV")
    assert [(rr.rdata.port, str(rr.rdata.target)) for rr in r.rr] == [
        (80, "web.default.svc.cluster.local.")
    ]
    assert [str(a.rdata) for a in r.ar] == ["10.96.0.20"]
    r = ask("_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert sorted(str(rr.rdata.target) for rr in r.rr) == [
        "10-244-1-5.db.default.svc.cluster.local.",
        "10-244-2-6.db.default.svc.cluster.local.",
    ]


def test_external_name_is_a_cname() -> None:
    r = ask("ext.default.svc.cluster.local")
    assert r.rr[0].rtype == QTYPE.CNAME and str(r.rr[0].rdata) == "example.org."


def test_nxdomain_nodata_and_refused() -> None:
    assert ask("nope.default.svc.cluster.local").header.rcode == RCODE.NXDOMAIN
    nodata = ask("web.default.svc.cluster.local", "AAAA")
    assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr
    assert ask("default.svc.cluster.local").header.rcode == RCODE.NOERROR  # empty non-terminal
    assert ask("example.org").header.rcode == RCODE.REFUSED


def test_resolv_conf_and_dns_address() -> None:
    assert dns_ip("10.96.0.0/16") == "10.96.0.10"
    text = resolv_conf("team-a", "10.96.0.10")
    assert text.splitlines() == [
        "nameserver 10.96.0.10",
        "search team-a.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5",
    ]
