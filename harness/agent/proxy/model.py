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
from typing import Any

#: The mark that asks postrouting to masquerade (kube-proxy's 0x4000).
MASQ_MARK = 0x4000


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int


@dataclass(frozen=True)
class ServicePort:
    """One proxied port of a Service: ClusterIP:port/proto → endpoints."""

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
    def ident(self) -> str:
        """``ns/name:port/proto``: stable, unique, what chain names are hashed from."""
        return f"{self.namespace}/{self.name}:{self.port_name}/{self.protocol}"

    def chain_id(self, length: int = 16) -> str:
        """kube-proxy's chain suffix: base32 of a SHA-256 of the service port."""
        digest = hashlib.sha256(self.ident.encode()).digest()
        return base64.b32encode(digest).decode()[:length]


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _ready(status: dict[str, Any]) -> bool:
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


def endpoints_for(
    service: dict[str, Any], pods: list[dict[str, Any]], statuses: dict[tuple[str, str], Any]
) -> list[ServicePort]:
    """The ServicePorts of one stored Service given stored pods and their statuses."""
    meta, spec = service["metadata"], service.get("spec", {})
    ns = meta.get("namespace", "default")
    ip = spec.get("clusterIP")
    if spec.get("type") == "ExternalName" or not ip or ip == "None":
        return []
    selector = spec.get("selector") or {}
    backends = [
        p
        for p in pods
        if selector
        and p["metadata"].get("namespace", "default") == ns
        and _labels_match(selector, p["metadata"].get("labels", {}))
        and not p["metadata"].get("deletionTimestamp")  # terminating: out at once
        and _ready(statuses.get((ns, p["metadata"]["name"])) or {})
    ]
    affinity = None
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(cfg.get("timeoutSeconds", 10800))
    out = []
    for port in spec.get("ports", []):
        if port.get("protocol", "TCP") not in ("TCP", "UDP"):
            continue  # SCTP is accepted by the API but not proxied (documented limit)
        eps = set()
        for pod in backends:
            target = _target(port, pod)
            if target is not None:
                eps.add(Endpoint(statuses[(ns, pod["metadata"]["name"])]["podIP"], target))
        out.append(
            ServicePort(
                ns,
                meta["name"],
                port.get("name", ""),
                port.get("protocol", "TCP").lower(),
                ip,
                port["port"],
                port.get("nodePort"),
                affinity,
                tuple(sorted(eps)),
            )
        )
    return out
