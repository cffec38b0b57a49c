"""What a proxy mode programs: one entry per (service, port), with its ready endpoints.

Derived from etcd objects by ``endpoints_for`` (pure): a Service's selector
picks the pods of its namespace whose status is Running with condition
Ready=True and that are not terminating (``deletionTimestamp`` set by a graceful
delete: the endpoint goes before the pod's agent has even seen the delete); a
named ``targetPort`` is resolved per pod through that pod's container ports (so
two backends may serve on different numbers, as in Kubernetes). Headless and
ExternalName services have nothing to proxy.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

#: The mark that asks postrouting to masquerade (kube-proxy's 0x4000).
MASQ_MARK = 0x4000


class Endpoint(NamedTuple):
    """One backend address. A tuple, so sorting, hashing and comparing the thousands of a
    big service happen in C (a dataclass compares in Python: the services controller
    spent a third of a 1,000-backend pass in ``Endpoint.__lt__``)."""

    ip: str
    port: int


@dataclass(frozen=True)
class ServicePort:
    """One proxied port of a Service: ClusterIP:port/proto → endpoints.

    ``endpoints`` may name an endpoint more than once: each entry is one equal
    share of new connections, so a repeated endpoint carries a weight (the
    mesh's spread flip-back, harness/agent/mesh/globalsvc.py). Every proxy mode
    balances over the entries as given; ``unique`` is each endpoint once.
    """

    namespace: str
    name: str
    port_name: str
    protocol: str  # tcp | udp (lower case, as nft and iptables spell it)
    cluster_ip: str
    port: int
    node_port: int | None = None
    affinity_s: int | None = None  # ClientIP affinity timeout, None = no affinity
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def unique(self) -> tuple[Endpoint, ...]:
        """Each endpoint once, in order (the targets of per-endpoint chains and sets)."""
        return tuple(dict.fromkeys(self.endpoints))

    @property
    def ident(self) -> str:
        """``ns/name:port/proto``: stable, unique, what chain names are hashed from."""
        return f"{self.namespace}/{self.name}:{self.port_name}/{self.protocol}"

    def chain_id(self, length: int = 16) -> str:
        """kube-proxy's chain suffix: base32 of a SHA-256 of the service port."""
        digest = hashlib.sha256(self.ident.encode()).digest()
        return base64.b32encode(digest).decode()[:length]


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def is_ready(status: dict[str, Any]) -> bool:
    """Running with an address and condition Ready=True (what makes an endpoint)."""
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    conds = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
    return conds.get("Ready") == "True"


def _target(port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    """A service port's target on one pod: a number, or a named container port."""
    target = port.get("targetPort", port["port"])
    if isinstance(target, int):
        return target
    proto = port.get("protocol", "TCP")
    for c in pod.get("spec", {}).get("containers", []):
        for cp in c.get("ports", []):
            if cp.get("name") == target and cp.get("protocol", "TCP") == proto:
                return int(cp["containerPort"])
    return None  # this pod does not serve the named port: not an endpoint


@dataclass(frozen=True)
class PortBackends:
    """One service port's backends in one cluster: the ready endpoints, and how many
    pods would serve it at full strength (``known``: selected, not terminating,
    serving the port — ready or not). The mesh's spread flip-back weighs the
    first by the second (harness/agent/mesh/globalsvc.py)."""

    ready: tuple[Endpoint, ...] = ()
    known: int = 0


def selected_pods(service: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods of the service's namespace matching its selector, not terminating."""
    meta, spec = service["metadata"], service.get("spec", {})
    ns = meta.get("namespace", "default")
    selector = spec.get("selector") or {}
    return [
        p
        for p in pods
        if selector
        and p["metadata"].get("namespace", "default") == ns
        and _labels_match(selector, p["metadata"].get("labels", {}))
        and not p["metadata"].get("deletionTimestamp")  # terminating: out at once
    ]


def proxied_ports(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The ports a proxy programs for a stored Service (none: headless, ExternalName;
    SCTP is accepted by the API but not proxied — a documented limit)."""
    spec = service.get("spec", {})
    ip = spec.get("clusterIP")
    if spec.get("type") == "ExternalName" or not ip or ip == "None":
        return []
    return [p for p in spec.get("ports", []) if p.get("protocol", "TCP") in ("TCP", "UDP")]


def port_backends(
    service: dict[str, Any],
    pods: list[dict[str, Any]],
    statuses: dict[tuple[str, str], Any],
    ports: list[dict[str, Any]] | None = None,
) -> dict[tuple[str, str], PortBackends]:
    """Per (port name, lower-case protocol) of ``service``: its backends among ``pods``.

    ``ports`` defaults to every port of the service (headless ones included:
    the DNS and the mesh need their pods too).
    """
    ns = service["metadata"].get("namespace", "default")
    selected = selected_pods(service, pods)
    out = {}
    for port in service.get("spec", {}).get("ports", []) if ports is None else ports:
        eps, known = set(), 0
        for pod in selected:
            target = _target(port, pod)
            if target is None:
                continue
            known += 1
            status = statuses.get((ns, pod["metadata"]["name"])) or {}
            if is_ready(status):
                eps.add(Endpoint(status["podIP"], target))
        key = (port.get("name", ""), port.get("protocol", "TCP").lower())
        out[key] = PortBackends(tuple(sorted(eps)), known)
    return out


def endpoints_for(
    service: dict[str, Any], pods: list[dict[str, Any]], statuses: dict[tuple[str, str], Any]
) -> list[ServicePort]:
    """The ServicePorts of one stored Service given stored pods and their statuses."""
    meta, spec = service["metadata"], service.get("spec", {})
    ports = proxied_ports(service)
    if not ports:
        return []
    backends = port_backends(service, pods, statuses, ports)
    affinity = None
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(cfg.get("timeoutSeconds", 10800))
    out = []
    for port in ports:
        proto = port.get("protocol", "TCP").lower()
        out.append(
            ServicePort(
                meta.get("namespace", "default"),
                meta["name"],
                port.get("name", ""),
                proto,
                spec["clusterIP"],
                port["port"],
                port.get("nodePort"),
                affinity,
                backends[(port.get("name", ""), proto)].ready,
            )
        )
    return out
