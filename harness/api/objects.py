"""Kubernetes-style objects podlab stores in a cluster's etcd.

Field names are Kubernetes' own (``spec.nodeName``, ``containerPort``…) so a
manifest written for kubectl reads the same here. Models are strict (no
``"80"`` for a port, no unknown fields) because a field we silently ignored
would be a test that passes for the wrong reason. Per-field checks (DNS names,
port ranges) live here so pydantic reports all of them in one pass; checks
across fields (duplicate container names, probe ports) live in ``validate``.

How to add a kind: write its model on ``ApiObject`` (``fields.py`` holds the
shared field types; Service, NetworkPolicy and Namespace live in
``netobjects.py``) with ``kind: Literal["X"]``, then add one ``KindInfo`` to
``KINDS``. The CLI names, etcd key and validation all come from that entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.api.fields import (  # noqa: F401  (re-exported: the kinds' shared vocabulary)
    DEFAULT_NAMESPACE,
    ApiObject,
    DNSLabel,
    DNSSubdomain,
    LabelKey,
    LabelValue,
    NonNegativeInt,
    ObjectMeta,
    PortName,
    PortNumber,
    PortRef,
    PositiveInt,
    Strict,
    check_dns_label,
    check_dns_subdomain,
    check_label_key,
    check_label_value,
    check_port,
    check_port_name,
    check_port_ref,
)
from harness.api.meshobjects import MCS_API_VERSION, ServiceExport, ServiceImport
from harness.api.netobjects import Namespace, NetworkPolicy, Service
from harness.store import keys

API_PREFIX = keys.ROOT
# The node agent runs one process per pod (containers[0]); refusing more is
# better than silently not running them.
MAX_CONTAINERS = 1


class ContainerPort(Strict):
    name: PortName | None = None
    containerPort: PortNumber
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class TCPSocketAction(Strict):
    port: PortRef
    host: str | None = None


class HTTPGetAction(Strict):
    port: PortRef
    path: str = "/"
    host: str | None = None
    scheme: Literal["HTTP"] = "HTTP"


class Probe(Strict):
    """A readiness probe the agent runs (exactly one handler; checked in validate)."""

    tcpSocket: TCPSocketAction | None = None
    httpGet: HTTPGetAction | None = None
    initialDelaySeconds: NonNegativeInt = 0
    periodSeconds: PositiveInt = 10
    timeoutSeconds: PositiveInt = 1
    successThreshold: PositiveInt = 1
    failureThreshold: PositiveInt = 3


class SleepAction(Strict):
    seconds: NonNegativeInt


class LifecycleHandler(Strict):
    """Only Kubernetes' ``sleep`` action: the agent has no exec into a container image."""

    sleep: SleepAction


class Lifecycle(Strict):
    preStop: LifecycleHandler | None = None


class Container(Strict):
    """A process in the pod's network namespace; ``image`` is accepted and ignored."""

    name: DNSLabel
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    ports: list[ContainerPort] = Field(default_factory=list)
    readinessProbe: Probe | None = None
    lifecycle: Lifecycle | None = None


#: Kubernetes' default for ``terminationGracePeriodSeconds``.
DEFAULT_GRACE_S = 30


class PodSpec(Strict):
    nodeName: DNSSubdomain | None = None
    containers: list[Container] = Field(min_length=1)
    restartPolicy: Literal["Always", "OnFailure", "Never"] = "Always"
    # None: DEFAULT_GRACE_S (kept out of the stored object, like every default)
    terminationGracePeriodSeconds: NonNegativeInt | None = None


class Pod(ApiObject):
    kind: Literal["Pod"]
    spec: PodSpec


class PodCondition(BaseModel):
    """A status condition as the agent writes it (``Ready``, ``NetworkReady``…)."""

    model_config = ConfigDict(extra="allow")
    type: str
    status: str = "Unknown"


class PodStatus(BaseModel):
    """What the node agent reports; lenient, since the agent may add fields."""

    model_config = ConfigDict(extra="allow")
    phase: str = "Pending"
    podIP: str | None = None
    hostIP: str | None = None
    netns: str | None = None
    startTime: str | None = None
    networkReadyTime: str | None = None
    conditions: list[PodCondition] = Field(default_factory=list)
    message: str | None = None


class NodeRecord(BaseModel):
    """A node as its agent registers it; ``heartbeat`` is epoch seconds or RFC 3339."""

    model_config = ConfigDict(extra="allow")
    name: str
    underlayIP: str | None = None
    segment: str | None = None
    podCIDR: str | None = None
    mode: str | None = None
    heartbeat: float | str | None = None
    creationTimestamp: str | None = None


@dataclass(frozen=True)
class KindInfo:
    """Everything podlab needs to know about a kind: the registry's one entry."""

    kind: str
    api_version: str
    model: type[ApiObject]
    plural: str
    aliases: tuple[str, ...]
    namespaced: bool = True


KINDS: dict[str, KindInfo] = {
    "Pod": KindInfo("Pod", "v1", Pod, "pods", ("pod", "pods", "po")),
    "Service": KindInfo("Service", "v1", Service, "services", ("service", "services", "svc")),
    "NetworkPolicy": KindInfo(
        "NetworkPolicy",
        "networking.k8s.io/v1",
        NetworkPolicy,
        "policies",
        ("networkpolicy", "networkpolicies", "netpol"),
    ),
    "Namespace": KindInfo(
        "Namespace", "v1", Namespace, "namespaces", ("namespace", "namespaces", "ns"), False
    ),
    "ServiceExport": KindInfo(
        "ServiceExport",
        MCS_API_VERSION,
        ServiceExport,
        "serviceexports",
        ("serviceexport", "serviceexports", "svcex"),
    ),
    "ServiceImport": KindInfo(
        "ServiceImport",
        MCS_API_VERSION,
        ServiceImport,
        "serviceimports",
        ("serviceimport", "serviceimports", "svcim"),
    ),
}
#: kinds the mesh derives: listed by ``get``, refused by ``apply`` and ``delete``
DERIVED = ("ServiceImport",)


def kind_for_alias(name: str) -> KindInfo | None:
    """The kind a CLI word (``po``, ``pods``, ``Pod``) names, or None."""
    low = name.lower()
    for info in KINDS.values():
        if low in info.aliases or low == info.kind.lower():
            return info
    return None


def object_key(cluster: str, info: KindInfo, namespace: str, name: str) -> str:
    """The etcd key of an object: ``/podlab/v1/<cluster>/<plural>/<ns>/<name>``.

    Cluster-scoped kinds (Namespace) have no ``<ns>/`` part.
    """
    return keys.object_key(cluster, info.plural, namespace if info.namespaced else None, name)


def kind_prefix(cluster: str, info: KindInfo, namespace: str | None = None) -> str:
    """The key prefix of every object of a kind, in one namespace or all."""
    return keys.kind_prefix(cluster, info.plural, namespace if info.namespaced else None)


def status_key(cluster: str, namespace: str, name: str) -> str:
    """Where the agent writes a pod's status."""
    return keys.podstatus_key(cluster, namespace, name)


def status_prefix(cluster: str, namespace: str | None = None) -> str:
    return keys.podstatus_prefix(cluster, namespace)


def nodes_prefix(cluster: str) -> str:
    """Where agents register their nodes."""
    return keys.nodes_prefix(cluster)
