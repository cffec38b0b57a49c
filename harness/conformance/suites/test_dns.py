"""Scenario 15: cluster DNS answers pods in every namespace as CoreDNS would.

Two echo backends (``app: dns-web``) behind a ClusterIP service and a headless
one, an ExternalName service, and a client pod in the backends' namespace and
one in another namespace. Questions go from inside the client pods to the
kube-dns address (the service CIDR's .10); short names are resolved by glibc
in the pod through ``podlab exec pod/NAME -- getent ahostsv4 NAME``, as a user
would check them: the exec sees the pod's own resolv.conf, so the search
domains under test are the pod's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest

from harness.conformance import services as svc
from harness.conformance.labctl import Lab
from harness.conformance.pods import NAMESPACE, TCP_PORT, Pod
from harness.conformance.remote import Node

OTHER_NS = "podlab-dns-b"
WEB = {"app": "dns-web"}
ZONE = "svc.cluster.local"


@pytest.fixture(scope="module")
def dns(lab: Lab, mode: str, nodes: dict[str, Node]) -> Iterator[dict[str, object]]:
    objs = svc.Objects(lab.client(), nodes)
    names = [n.name for n in lab.cluster_nodes()]
    try:
        objs.apply([svc.namespace(OTHER_NS, {"team": "dns-b"})])
        backends = objs.echo_pods([(f"dns-web-{i}", names[i % len(names)], WEB) for i in (0, 1)])
        client_a = objs.echo_pods([("dns-client-a", names[0], {})])["dns-client-a"]
        client_b = objs.echo_pods([("dns-client-b", names[-1], {})], OTHER_NS)["dns-client-b"]
        objs.apply([
            svc.service("dns-web", WEB, [svc.port("tcp", 80, "tcp")]),
            svc.service("dns-hl", WEB, [svc.port("tcp", TCP_PORT, "tcp")], clusterIP="None"),
            svc.service("dns-ext", None, [], type="ExternalName", externalName="example.org"),
        ])  # fmt: skip
        vip = objs.service("dns-web")["spec"]["clusterIP"]
        server = svc.dns_ip(str(lab.plan.clusters[lab.first_cluster].service_cidr))
        fqdn = f"dns-web.{NAMESPACE}.{ZONE}"
        for client in (client_a, client_b):
            svc.until(
                f"{client} resolves {fqdn}",
                partial(_answers, client, server, fqdn),
            )
        yield {"vip": vip, "server": server, "backends": backends,
               "clients": {NAMESPACE: client_a, OTHER_NS: client_b}}  # fmt: skip
    finally:
        left = objs.delete_all()
        assert not left, f"pods not removed by the agent within 60 s: {', '.join(left)}"


def _answers(client: Pod, server: str, name: str) -> list[list[str]]:
    return list(svc.ask(client, server, name)["answers"])


def _a(answer: dict) -> list[str]:  # type: ignore[type-arg]
    return sorted(rdata for rtype, rdata in answer["answers"] if rtype == "A")


@pytest.mark.scenario(15)
def test_service_fqdn_resolves_from_pods_in_every_namespace(dns: dict) -> None:  # type: ignore[type-arg]
    fqdn = f"dns-web.{NAMESPACE}.{ZONE}"
    for ns, client in dns["clients"].items():
        got = svc.ask(client, dns["server"], fqdn)
        assert got["rcode"] == "NOERROR" and _a(got) == [dns["vip"]], (
            f"{client} in namespace {ns}: {fqdn} should be A {dns['vip']}, got {got}"
        )


@pytest.mark.scenario(15)
def test_short_names_resolve_through_the_pods_search_domains(lab: Lab, dns: dict) -> None:  # type: ignore[type-arg]
    """glibc in the pod, through ``podlab exec`` as a user types it: ``dns-web`` in its own
    namespace, ``dns-web.<ns>`` from elsewhere."""
    vip = dns["vip"]
    own: Pod = dns["clients"][NAMESPACE]
    other: Pod = dns["clients"][OTHER_NS]
    cases = [
        (own, NAMESPACE, "dns-web", [vip]),
        (other, OTHER_NS, f"dns-web.{NAMESPACE}", [vip]),
        (other, OTHER_NS, "dns-web", []),  # control: the search list is per namespace
    ]
    for pod, ns, name, want in cases:
        got = svc.resolve_in_pod(lab, pod, ns, name)
        assert got == want, (
            f"{pod} in namespace {ns}: `podlab exec pod/{pod.name} -n {ns} -- getent ahostsv4 "
            f"{name}` "
            f"should give {want or 'nothing'}, got {got or 'nothing'}"
        )


@pytest.mark.scenario(15)
def test_headless_service_answers_with_ready_pod_addresses(dns: dict) -> None:  # type: ignore[type-arg]
    client: Pod = dns["clients"][OTHER_NS]
    want = sorted(p.ip for p in dns["backends"].values())
    got = svc.ask(client, dns["server"], f"dns-hl.{NAMESPACE}.{ZONE}")
    assert _a(got) == want, f"headless dns-hl should be A {want} (its ready pods), got {got}"


@pytest.mark.scenario(15)
def test_named_port_has_an_srv_record(dns: dict) -> None:  # type: ignore[type-arg]
    client: Pod = dns["clients"][NAMESPACE]
    name = f"_tcp._tcp.dns-web.{NAMESPACE}.{ZONE}"
    got = svc.ask(client, dns["server"], name, "SRV")
    srv = [rdata.split() for rtype, rdata in got["answers"] if rtype == "SRV"]
    assert len(srv) == 1 and srv[0][2] == "80" and srv[0][3] == f"dns-web.{NAMESPACE}.{ZONE}", (
        f"{name} SRV should point at dns-web.{NAMESPACE}.{ZONE} port 80, got {got}"
    )


@pytest.mark.scenario(15)
def test_external_name_is_a_cname(dns: dict) -> None:  # type: ignore[type-arg]
    client: Pod = dns["clients"][NAMESPACE]
    got = svc.ask(client, dns["server"], f"dns-ext.{NAMESPACE}.{ZONE}")
    assert ["CNAME", "example.org"] in got["answers"], (
        f"ExternalName dns-ext should be CNAME example.org, got {got}"
    )


@pytest.mark.scenario(15)
def test_unknown_service_is_nxdomain(dns: dict) -> None:  # type: ignore[type-arg]
    client: Pod = dns["clients"][OTHER_NS]
    for name in (f"dns-nosuch.{NAMESPACE}.{ZONE}", f"dns-web.{OTHER_NS}.{ZONE}"):
        got = svc.ask(client, dns["server"], name)
        assert got["rcode"] == "NXDOMAIN", f"{name} should be NXDOMAIN, got {got}"
