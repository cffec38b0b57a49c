"""Service, NetworkPolicy and Namespace: the kinds kube-proxy, CoreDNS and Felix read.

Field names and defaults are Kubernetes' own (``spec.type: ClusterIP``,
``sessionAffinityConfig.clientIP.timeoutSeconds: 10800``, ``policyTypes``
inferred from the rules present). Per-field checks live here; checks across
fields (named ports when a service has several, nodePort only on NodePort
services…) live in ``netvalidate``; allocation of ClusterIPs and nodePorts
happens at apply time (``alloc``), because it needs what etcd already holds.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PlainValidator

from harness.kube.fields import (
    ApiObject,
    DNSSubdomain,
    LabelKey,
    LabelValue,
    PortName,
    PortNumber,
    PortRef,
    Strict,
    _fail,
)

Protocol = Literal["TCP", "UDP", "SCTP"]
NODE_PORT_RANGE = (30000, 32767)
MAX_AFFINITY_TIMEOUT_S = 86400  # Kubernetes' limit: one day
DEFAULT_AFFINITY_TIMEOUT_S = 10800


def check_cluster_ip(value: Any) -> str:
    """``None`` (headless), ``""`` (allocate) or an IPv4 address."""
    if not isinstance(value, str):
        raise _fail(f"clusterIP must be a string, got {type(value).__name__}", "quote it")
    if value in ("None", ""):
        return value
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise _fail(
            f"{value!r} is not an IPv4 address",
            "write an address of the cluster's service CIDR, 'None' for headless, or omit it",
        ) from None
    return value


def check_cidr(value: str) -> str:
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise _fail(f"{value!r} is not an IPv4 CIDR ({exc})", "write e.g. 10.0.0.0/8") from None
    return value


ClusterIP = Annotated[str, PlainValidator(check_cluster_ip)]
CIDR = Annotated[str, AfterValidator(check_cidr)]
Labels = dict[LabelKey, LabelValue]


class ServicePort(Strict):
    name: PortName | None = None
    protocol: Protocol = "TCP"
    port: PortNumber
    targetPort: PortRef | None = None  # default: the same as port
    nodePort: PortNumber | None = None  # NodePort services; allocated when absent


class ClientIPConfig(Strict):
    timeoutSeconds: Annotated[int, Field(ge=1, le=MAX_AFFINITY_TIMEOUT_S)] = (
        DEFAULT_AFFINITY_TIMEOUT_S
    )


class SessionAffinityConfig(Strict):
    clientIP: ClientIPConfig | None = None


class ServiceSpec(Strict):
    type: Literal["ClusterIP", "NodePort", "ExternalName"] = "ClusterIP"
    selector: Labels = Field(default_factory=dict)
    ports: list[ServicePort] = Field(default_factory=list)
    clusterIP: ClusterIP | None = None
    externalName: DNSSubdomain | None = None
    sessionAffinity: Literal["None", "ClientIP"] = "None"
    sessionAffinityConfig: SessionAffinityConfig | None = None

    @property
    def headless(self) -> bool:
        return self.clusterIP == "None"

    def affinity_timeout_s(self) -> int | None:
        """Seconds a client stays on its backend, or None without ClientIP affinity."""
        if self.sessionAffinity != "ClientIP":
            return None
        cfg = self.sessionAffinityConfig
        if cfg is None or cfg.clientIP is None:
            return DEFAULT_AFFINITY_TIMEOUT_S
        return cfg.clientIP.timeoutSeconds


class Service(ApiObject):
    kind: Literal["Service"]
    spec: ServiceSpec


class LabelSelectorRequirement(Strict):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] = Field(default_factory=list)


class LabelSelector(Strict):
    """matchLabels AND matchExpressions; an empty selector selects everything."""

    matchLabels: Labels = Field(default_factory=dict)
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.matchLabels.items()):
            return False
        for req in self.matchExpressions:
            present = req.key in labels
            value = labels.get(req.key)
            ok = {
                "In": present and value in req.values,
                "NotIn": not present or value not in req.values,
                "Exists": present,
                "DoesNotExist": not present,
            }[req.operator]
            if not ok:
                return False
        return True


class IPBlock(Strict):
    cidr: CIDR
    # "except" is a Python keyword: the manifest field keeps Kubernetes' name.
    except_: list[CIDR] = Field(default_factory=list, alias="except")


class NetworkPolicyPeer(Strict):
    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    ipBlock: IPBlock | None = None


class NetworkPolicyPort(Strict):
    protocol: Protocol = "TCP"
    port: PortRef | None = None  # None: every port of the protocol
    endPort: PortNumber | None = None


class IngressRule(Strict):
    from_: list[NetworkPolicyPeer] = Field(default_factory=list, alias="from")
    ports: list[NetworkPolicyPort] = Field(default_factory=list)


class EgressRule(Strict):
    to: list[NetworkPolicyPeer] = Field(default_factory=list)
    ports: list[NetworkPolicyPort] = Field(default_factory=list)


class NetworkPolicySpec(Strict):
    podSelector: LabelSelector
    ingress: list[IngressRule] = Field(default_factory=list)
    egress: list[EgressRule] = Field(default_factory=list)
    policyTypes: list[Literal["Ingress", "Egress"]] | None = None

    def types(self) -> tuple[str, ...]:
        """Kubernetes' default: Ingress always, Egress when egress rules are present."""
        if self.policyTypes is not None:
            return tuple(sorted(set(self.policyTypes)))
        return ("Egress", "Ingress") if self.egress else ("Ingress",)


class NetworkPolicy(ApiObject):
    kind: Literal["NetworkPolicy"]
    spec: NetworkPolicySpec


class Namespace(ApiObject):
    """Cluster-scoped; its labels are what namespaceSelector matches."""

    kind: Literal["Namespace"]
    spec: dict[str, Any] | None = None
