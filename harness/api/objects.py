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

from pydantic import BaseModel, ConfigDict, Field

from harness.api.meshobjects import MCS_API_VERSION, ServiceExport, ServiceImport
from harness.api.netobjects import Namespace, NetworkPolicy, Service
from harness.kube import autoscaling
from harness.kube.apps import Deployment, ReplicaSet
from harness.kube.fields import (  # noqa: F401  (re-exported: the kinds' shared vocabulary)
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
from harness.kube.pod import (  # noqa: F401  (re-exported: the Pod lives in harness.kube)
    DEFAULT_GRACE_S,
    MAX_CONTAINERS,
    Container,
    ContainerPort,
    HTTPGetAction,
    Lifecycle,
    LifecycleHandler,
    Pod,
    PodSpec,
    Probe,
    SleepAction,
    TCPSocketAction,
)
from harness.kube.policy import LimitRange, ResourceQuota
from harness.store import keys

API_PREFIX = keys.ROOT


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
    hollow: bool = False  # a hollow node (harness/hollow/): etcd records only, no kernel


@dataclass(frozen=True)
class KindInfo:
    """Everything podlab needs to know about a kind: the registry's one entry."""

    kind: str
    api_version: str
    model: type[ApiObject]
    plural: str
    aliases: tuple[str, ...]
    namespaced: bool = True
    # other apiVersions accepted in manifests, each with its model; the object is
    # stored in ``api_version`` (the model's ``storage_form()`` converts it)
    other_versions: tuple[tuple[str, type[ApiObject]], ...] = ()
    # where the kind's status lives (written by the controller manager), if apart
    status_plural: str | None = None
    group: str = ""  # API group: "apps" → quota's count/deployments.apps, kubectl's TYPE.GROUP

    def model_for(self, api_version: object) -> type[ApiObject] | None:
        """The model that reads ``api_version``, or None if the kind is not served there."""
        if api_version == self.api_version:
            return self.model
        return next((m for v, m in self.other_versions if v == api_version), None)

    @property
    def versions(self) -> tuple[str, ...]:
        return (self.api_version, *(v for v, _ in self.other_versions))

    @property
    def resource(self) -> str:
        """``deployments.apps``, ``pods``: the resource name quota and kubectl print."""
        name = PLURAL_NAMES.get(self.kind, self.plural)
        return f"{name}.{self.group}" if self.group else name


KINDS: dict[str, KindInfo] = {
    "Pod": KindInfo("Pod", "v1", Pod, "pods", ("pod", "pods", "po")),
    "Service": KindInfo("Service", "v1", Service, "services", ("service", "services", "svc")),
    "NetworkPolicy": KindInfo(
        "NetworkPolicy",
        "networking.k8s.io/v1",
        NetworkPolicy,
        "policies",
        ("networkpolicy", "networkpolicies", "netpol"),
        group="networking.k8s.io",
    ),
    "Namespace": KindInfo(
        "Namespace", "v1", Namespace, "namespaces", ("namespace", "namespaces", "ns"), False
    ),
    # workloads (harness/kube, docs/workloads.md)
    "Deployment": KindInfo(
        "Deployment",
        "apps/v1",
        Deployment,
        "deployments",
        ("deployment", "deployments", "deploy"),
        status_plural="deploymentstatus",
        group="apps",
    ),
    "ReplicaSet": KindInfo(
        "ReplicaSet",
        "apps/v1",
        ReplicaSet,
        "replicasets",
        ("replicaset", "replicasets", "rs"),
        status_plural="replicasetstatus",
        group="apps",
    ),
    "HorizontalPodAutoscaler": KindInfo(
        "HorizontalPodAutoscaler",
        autoscaling.API_V2,
        autoscaling.HorizontalPodAutoscaler,
        "horizontalpodautoscalers",
        ("horizontalpodautoscaler", "horizontalpodautoscalers", "hpa"),
        other_versions=((autoscaling.API_V1, autoscaling.HorizontalPodAutoscalerV1),),
        status_plural="hpastatus",
        group="autoscaling",
    ),
    "ResourceQuota": KindInfo(
        "ResourceQuota",
        "v1",
        ResourceQuota,
        "resourcequotas",
        ("resourcequota", "resourcequotas", "quota"),
        status_plural="resourcequotastatus",
    ),
    "LimitRange": KindInfo(
        "LimitRange", "v1", LimitRange, "limitranges", ("limitrange", "limitranges", "limits")
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
#: resource names where podlab's etcd folder differs from Kubernetes' (quota, kubectl)
PLURAL_NAMES = {"NetworkPolicy": "networkpolicies"}


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
