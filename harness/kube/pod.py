"""The Pod and its pod template: the model every part of podlab reads a pod with.

Moved here from ``harness.api.objects`` (which re-exports every name) so that the
API, the controller manager and the agent agree on one Pod. Field names are
Kubernetes' own; models are strict (a field we silently ignored would make a test
pass for the wrong reason). ``PodTemplateSpec`` is what Deployments and
ReplicaSets stamp pods from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from harness.kube.fields import (
    ApiObject,
    DNSLabel,
    DNSSubdomain,
    LabelKey,
    LabelValue,
    NonNegativeInt,
    PortName,
    PortNumber,
    PortRef,
    PositiveInt,
    Strict,
)
from harness.kube.resources import ResourceRequirements

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
    resources: ResourceRequirements | None = None


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


class TemplateMeta(Strict):
    """``template.metadata``: the labels and annotations every stamped pod gets."""

    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    annotations: dict[LabelKey, str] = Field(default_factory=dict)
    creationTimestamp: None = None  # kubectl's generated manifests carry ``null``


class PodTemplateSpec(Strict):
    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    spec: PodSpec
