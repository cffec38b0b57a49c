"""Kubernetes-style objects podlab stores in a cluster's etcd.

Field names are Kubernetes' own (``spec.nodeName``, ``containerPort``…) so a
manifest written for kubectl reads the same here. Models are strict (no
``"80"`` for a port, no unknown fields) because a field we silently ignored
would be a test that passes for the wrong reason. Per-field checks (DNS names,
port ranges) live here so pydantic reports all of them in one pass; checks
across fields (duplicate container names, probe ports) live in ``validate``.

How to add a kind (Service, NetworkPolicy…): write its model on ``ApiObject``
with ``kind: Literal["Service"]``, then add one ``KindInfo`` to ``KINDS``. The
CLI names, etcd key and validation all come from that entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

API_PREFIX = "/podlab/v1"
DEFAULT_NAMESPACE = "default"
# The node agent runs one process per pod (containers[0]); refusing more is
# better than silently not running them.
MAX_CONTAINERS = 1

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _fail(message: str, hint: str) -> PydanticCustomError:
    """A validation error whose hint travels in its context to the error printer."""
    return PydanticCustomError("podlab", message, {"hint": hint})


def check_dns_label(value: str) -> str:
    """RFC 1123 label: namespaces and container names (Kubernetes' rule)."""
    if len(value) > 63 or not _LABEL.match(value):
        raise _fail(
            f"{value!r} is not a valid DNS-1123 label",
            "use at most 63 lower-case letters, digits and '-', starting and ending "
            "with a letter or digit",
        )
    return value


def check_dns_subdomain(value: str) -> str:
    """RFC 1123 subdomain: object names and node names (Kubernetes' rule)."""
    if len(value) > 253 or not _SUBDOMAIN.match(value):
        raise _fail(
            f"{value!r} is not a valid DNS-1123 subdomain",
            "use lower-case letters, digits, '-' and '.', starting and ending with a "
            "letter or digit, e.g. 'web-1'",
        )
    return value


def check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise _fail(f"port {value} is out of range", "use a port between 1 and 65535")
    return value


def check_port_name(value: str) -> str:
    """IANA service name, as Kubernetes requires for named ports."""
    if len(value) > 15 or not _SVC_NAME.match(value) or "--" in value:
        raise _fail(
            f"{value!r} is not a valid port name",
            "use at most 15 lower-case letters, digits and single '-', e.g. 'http'",
        )
    if not re.search(r"[a-z]", value):
        raise _fail(f"port name {value!r} has no letter", "include a letter, e.g. 'p8080'")
    return value


def check_port_ref(value: Any) -> int | str:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _fail(
            f"port must be a number or a port name, got {type(value).__name__}",
            "write e.g. 8080 or 'http'",
        )
    return check_port(value) if isinstance(value, int) else check_port_name(value)


def check_label_key(value: str) -> str:
    """A label or annotation key: optional DNS prefix, '/', a name of ≤ 63 chars."""
    prefix, _, name = value.rpartition("/")
    if (prefix and len(prefix) > 253) or (prefix and not _SUBDOMAIN.match(prefix)):
        raise _fail(f"key {value!r} has an invalid prefix", "use a DNS name like 'example.com/'")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise _fail(
            f"key {value!r} is not a valid label key",
            "use ≤ 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric",
        )
    return value


def check_label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_NAME.match(value):
        raise _fail(
            f"label value {value!r} is not valid",
            "use ≤ 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric",
        )
    return value


DNSLabel = Annotated[str, AfterValidator(check_dns_label)]
DNSSubdomain = Annotated[str, AfterValidator(check_dns_subdomain)]
PortNumber = Annotated[int, AfterValidator(check_port)]
PortName = Annotated[str, AfterValidator(check_port_name)]
PortRef = Annotated[int | str, PlainValidator(check_port_ref)]
LabelKey = Annotated[str, AfterValidator(check_label_key)]
LabelValue = Annotated[str, AfterValidator(check_label_value)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class Strict(BaseModel):
    """Base of manifest models: unknown fields and silent type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ObjectMeta(Strict):
    """``metadata``; uid, creationTimestamp and resourceVersion are set by podlab."""

    name: DNSSubdomain
    namespace: DNSLabel = DEFAULT_NAMESPACE
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    annotations: dict[LabelKey, str] = Field(default_factory=dict)
    uid: str | None = None
    creationTimestamp: str | None = None
    resourceVersion: str | None = None


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


class Container(Strict):
    """A process in the pod's network namespace; ``image`` is accepted and ignored."""

    name: DNSLabel
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    ports: list[ContainerPort] = Field(default_factory=list)
    readinessProbe: Probe | None = None


class PodSpec(Strict):
    nodeName: DNSSubdomain | None = None
    containers: list[Container] = Field(min_length=1)
    restartPolicy: Literal["Always", "OnFailure", "Never"] = "Always"


class ApiObject(Strict):
    """Common envelope of every kind. ``status`` in a manifest is accepted and dropped."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    status: dict[str, Any] | None = Field(default=None, exclude=True)


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
}


def kind_for_alias(name: str) -> KindInfo | None:
    """The kind a CLI word (``po``, ``pods``, ``Pod``) names, or None."""
    low = name.lower()
    for info in KINDS.values():
        if low in info.aliases or low == info.kind.lower():
            return info
    return None


def object_key(cluster: str, info: KindInfo, namespace: str, name: str) -> str:
    """The etcd key of an object: ``/podlab/v1/<cluster>/<plural>/<ns>/<name>``."""
    return f"{API_PREFIX}/{cluster}/{info.plural}/{namespace}/{name}"


def kind_prefix(cluster: str, info: KindInfo, namespace: str | None = None) -> str:
    """The key prefix of every object of a kind, in one namespace or all."""
    base = f"{API_PREFIX}/{cluster}/{info.plural}/"
    return f"{base}{namespace}/" if namespace else base


def status_key(cluster: str, namespace: str, name: str) -> str:
    """Where the agent writes a pod's status."""
    return f"{API_PREFIX}/{cluster}/podstatus/{namespace}/{name}"


def status_prefix(cluster: str, namespace: str | None = None) -> str:
    base = f"{API_PREFIX}/{cluster}/podstatus/"
    return f"{base}{namespace}/" if namespace else base


def nodes_prefix(cluster: str) -> str:
    """Where agents register their nodes."""
    return f"{API_PREFIX}/{cluster}/nodes/"
