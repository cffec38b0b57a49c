"""Checks across fields of Services and NetworkPolicies (Kubernetes' own rules).

Pure: each check returns (YAML path, message, hint) triples that ``validate``
locates in the manifest. What needs etcd (is the ClusterIP inside the service
CIDR and free, is the nodePort free) is decided at apply time in ``alloc``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from harness.agent.mesh.globalsvc import annotation_problems
from harness.api.meshobjects import ServiceImport
from harness.api.netobjects import NODE_PORT_RANGE, NetworkPolicy, Service

Finding = tuple[tuple[str | int, ...], str, str]


def checks(obj: Any) -> list[Finding]:
    """Every cross-field problem of a Service or NetworkPolicy (empty for other kinds)."""
    if isinstance(obj, Service):
        return list(_service(obj))
    if isinstance(obj, NetworkPolicy):
        return list(_policy(obj))
    if isinstance(obj, ServiceImport):
        message = "ServiceImports are derived by the cluster mesh and cannot be applied"
        hint = "apply a ServiceExport with the Service's name in each exporting cluster"
        return [((), message, hint)]
    return []


def _service(svc: Service) -> Iterator[Finding]:
    for key, message, hint in annotation_problems(svc.metadata.annotations):
        yield ("metadata", "annotations", key), message, hint
    spec = svc.spec
    if spec.type == "ExternalName":
        if not spec.externalName:
            yield ("spec", "externalName"), "is required for type ExternalName", "add a DNS name"
        if spec.clusterIP not in (None, ""):
            yield ("spec", "clusterIP"), "must be empty for type ExternalName", "remove clusterIP"
        return
    if spec.externalName:
        yield (
            ("spec", "externalName"),
            f"is only used by type ExternalName, not {spec.type}",
            "remove it or set 'type: ExternalName'",
        )
    if not spec.ports and not spec.headless:
        yield ("spec", "ports"), "a service needs at least one port", "add ports: [{port: 80}]"
    if spec.headless and spec.type == "NodePort":
        yield ("spec", "clusterIP"), "a NodePort service cannot be headless", "omit clusterIP"
    if spec.headless and spec.sessionAffinity == "ClientIP":
        yield (
            ("spec", "sessionAffinity"),
            "ClientIP affinity needs a ClusterIP (this service is headless)",
            "remove sessionAffinity or clusterIP: None",
        )
    yield from _service_ports(svc)


def _service_ports(svc: Service) -> Iterator[Finding]:
    spec = svc.spec
    seen_names: dict[str, int] = {}
    seen_ports: dict[tuple[int, str], int] = {}
    for i, p in enumerate(spec.ports):
        where: tuple[str | int, ...] = ("spec", "ports", i)
        if len(spec.ports) > 1 and not p.name:
            yield (*where, "name"), "is required when a service has several ports", "add a name"
        if p.name and p.name in seen_names:
            yield (
                (*where, "name"),
                f"port name {p.name!r} repeats ports[{seen_names[p.name]}]",
                "give each port a distinct name",
            )
        if p.name:
            seen_names.setdefault(p.name, i)
        ident = (p.port, p.protocol)
        if ident in seen_ports:
            yield (
                (*where, "port"),
                f"{p.port}/{p.protocol} repeats ports[{seen_ports[ident]}]",
                "use another port or protocol",
            )
        seen_ports.setdefault(ident, i)
        if p.nodePort is not None:
            low, high = NODE_PORT_RANGE
            if spec.type != "NodePort":
                yield (
                    (*where, "nodePort"),
                    f"is only allowed on type NodePort, not {spec.type}",
                    "remove nodePort or set 'type: NodePort'",
                )
            elif not low <= p.nodePort <= high:
                yield (
                    (*where, "nodePort"),
                    f"{p.nodePort} is outside the node port range {low}-{high}",
                    f"use a port between {low} and {high}, or omit it to have one allocated",
                )


def _policy(pol: NetworkPolicy) -> Iterator[Finding]:
    spec = pol.spec
    types = spec.types()
    if spec.ingress and "Ingress" not in types:
        yield (
            ("spec", "ingress"),
            "has rules but policyTypes does not list Ingress",
            "add Ingress to policyTypes; without it these rules are ignored",
        )
    if spec.egress and "Egress" not in types:
        yield (
            ("spec", "egress"),
            "has rules but policyTypes does not list Egress",
            "add Egress to policyTypes; without it these rules are ignored",
        )
    rules: list[tuple[str, str, Any]] = [("ingress", "from", r) for r in spec.ingress]
    rules += [("egress", "to", r) for r in spec.egress]
    counters = {"ingress": 0, "egress": 0}
    for direction, peers_field, rule in rules:
        i = counters[direction]
        counters[direction] += 1
        peers = rule.from_ if direction == "ingress" else rule.to
        for j, peer in enumerate(peers):
            yield from _peer(peer, (direction, i, peers_field, j))
        for j, port in enumerate(rule.ports):
            if port.endPort is not None and not isinstance(port.port, int):
                yield (
                    (direction, i, "ports", j, "endPort"),
                    "needs a numeric port to start the range",
                    "set port to a number ≤ endPort",
                )
            elif port.endPort is not None and port.endPort < int(port.port):
                yield (
                    (direction, i, "ports", j, "endPort"),
                    f"{port.endPort} is below port {port.port}",
                    "make endPort ≥ port",
                )


def _peer(peer: Any, where: tuple[str | int, ...]) -> Iterator[Finding]:
    path = ("spec", *where)
    selectors = peer.podSelector is not None or peer.namespaceSelector is not None
    if peer.ipBlock is None and not selectors:
        yield path, "a peer needs podSelector, namespaceSelector or ipBlock", "add one"
        return
    if peer.ipBlock is not None and selectors:
        yield (
            (*path, "ipBlock"),
            "ipBlock cannot be combined with a selector in the same peer",
            "make it a peer of its own ('- ipBlock: …')",
        )
    if peer.ipBlock is None:
        return
    outer = ipaddress.IPv4Network(peer.ipBlock.cidr)
    for k, text in enumerate(peer.ipBlock.except_):
        inner = ipaddress.IPv4Network(text)
        if not inner.subnet_of(outer) or inner == outer:
            yield (
                (*path, "ipBlock", "except", k),
                f"{text} is not strictly inside {peer.ipBlock.cidr}",
                "list only smaller blocks of cidr",
            )
