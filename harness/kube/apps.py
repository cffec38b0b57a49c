"""apps/v1 Deployment and ReplicaSet: models, defaults and the apiserver's validation.

Stored as applied (defaults are not written into the object, as for every podlab
kind): ``effective_*`` read a stored object with Kubernetes' defaults filled in
(``replicas: 1``, RollingUpdate with 25 %/25 %, ``revisionHistoryLimit: 10``,
``progressDeadlineSeconds: 600``). ``checks`` returns the apiserver's refusals in
its own words (``spec.template.metadata.labels: Invalid value:
map[string]string{"app":"web"}: `selector` does not match template `labels```),
each with podlab's hint.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator

from harness.api.netobjects import LabelSelector
from harness.kube import fielderr, intstr
from harness.kube.fielderr import Finding
from harness.kube.fields import ApiObject, Strict, _fail
from harness.kube.pod import PodTemplateSpec

DEFAULT_REPLICAS = 1
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
DEFAULT_REVISION_HISTORY = 10
DEFAULT_PROGRESS_DEADLINE_S = 600

# labels and annotations Kubernetes' controllers use
POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
CHANGE_CAUSE = "kubernetes.io/change-cause"


def check_int_or_percent(value: Any) -> int | str:
    """``maxSurge``/``maxUnavailable``: a whole number or ``N%`` (checked further in
    ``checks``, where Kubernetes' own wording can name the field)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _fail(
            f"must be a number or a percentage, got {type(value).__name__}", "write e.g. 1 or 25%"
        )
    return value


IntOrPercent = Annotated[int | str, PlainValidator(check_int_or_percent)]


class RollingUpdateDeployment(Strict):
    maxUnavailable: IntOrPercent | None = None
    maxSurge: IntOrPercent | None = None


class DeploymentStrategy(Strict):
    type: Literal["Recreate", "RollingUpdate"] = "RollingUpdate"
    rollingUpdate: RollingUpdateDeployment | None = None


class DeploymentSpec(Strict):
    replicas: int | None = None
    selector: LabelSelector | None = None
    template: PodTemplateSpec
    strategy: DeploymentStrategy = Field(default_factory=DeploymentStrategy)
    minReadySeconds: int = 0
    revisionHistoryLimit: int | None = None
    progressDeadlineSeconds: int | None = None
    paused: bool = False


class Deployment(ApiObject):
    kind: Literal["Deployment"]
    spec: DeploymentSpec


class ReplicaSetSpec(Strict):
    replicas: int | None = None
    selector: LabelSelector | None = None
    template: PodTemplateSpec
    minReadySeconds: int = 0


class ReplicaSet(ApiObject):
    kind: Literal["ReplicaSet"]
    spec: ReplicaSetSpec


# -- validation ---------------------------------------------------------------------------
def checks(obj: Deployment | ReplicaSet) -> list[Finding]:
    """The apiserver's ``ValidateDeploymentSpec`` / ``ValidateReplicaSetSpec``."""
    spec = obj.spec
    out = _common(spec)
    if isinstance(obj, Deployment):
        out += _strategy(obj.spec.strategy)
        for field in ("revisionHistoryLimit", "progressDeadlineSeconds"):
            value = getattr(obj.spec, field)
            if value is not None and value < 0:
                out.append(_negative(field, value))
        deadline = obj.spec.progressDeadlineSeconds
        deadline = DEFAULT_PROGRESS_DEADLINE_S if deadline is None else deadline
        if deadline <= obj.spec.minReadySeconds:
            out.append(
                (
                    ("spec", "progressDeadlineSeconds"),
                    fielderr.invalid(deadline, "must be greater than minReadySeconds"),
                    "make progressDeadlineSeconds longer than minReadySeconds",
                )
            )
    return out


def _negative(field: str, value: int) -> Finding:
    msg = fielderr.invalid(value, "must be greater than or equal to 0")
    return (("spec", field), msg, "use 0 or more")


def _common(spec: DeploymentSpec | ReplicaSetSpec) -> list[Finding]:
    out: list[Finding] = []
    for field in ("replicas", "minReadySeconds"):
        value = getattr(spec, field)
        if value is not None and value < 0:
            out.append(_negative(field, value))
    sel = spec.selector
    if sel is None:
        out.append(
            (("spec", "selector"), fielderr.required(), "add selector.matchLabels: {app: NAME}")
        )
        return out
    if not sel.matchLabels and not sel.matchExpressions:
        value = sel.model_dump(exclude_defaults=True)
        out.append(
            (
                ("spec", "selector"),
                fielderr.invalid(value, "empty selector is invalid for deployment"),
                "select the template's labels, e.g. matchLabels: {app: NAME}",
            )
        )
    else:
        labels = spec.template.metadata.labels
        if not sel.matches(labels):
            out.append(
                (
                    ("spec", "template", "metadata", "labels"),
                    fielderr.invalid(labels, "`selector` does not match template `labels`"),
                    "give the template the labels the selector asks for",
                )
            )
    policy = spec.template.spec.restartPolicy
    if policy != "Always":
        out.append(
            (
                ("spec", "template", "spec", "restartPolicy"),
                fielderr.not_supported(policy, ["Always"]),
                "a replicated pod restarts always: drop restartPolicy",
            )
        )
    return out


def _strategy(strategy: DeploymentStrategy) -> list[Finding]:
    where = ("spec", "strategy", "rollingUpdate")
    if strategy.type == "Recreate":
        if strategy.rollingUpdate is not None:
            msg = fielderr.forbidden("may not be specified when strategy `type` is 'Recreate'")
            return [(where, msg, "drop rollingUpdate, or use type: RollingUpdate")]
        return []
    ru = strategy.rollingUpdate or RollingUpdateDeployment()
    unavailable = DEFAULT_MAX_UNAVAILABLE if ru.maxUnavailable is None else ru.maxUnavailable
    surge = DEFAULT_MAX_SURGE if ru.maxSurge is None else ru.maxSurge
    out: list[Finding] = []
    for field, value in (("maxUnavailable", unavailable), ("maxSurge", surge)):
        out += _int_or_percent((*where, field), value)
    if intstr.plain(unavailable) == 0 and intstr.plain(surge) == 0:
        msg = fielderr.invalid(
            intstr.go_repr(unavailable), "may not be 0 when `maxSurge` is 0", raw=True
        )
        out.append(((*where, "maxUnavailable"), msg, "let one of maxSurge, maxUnavailable be > 0"))
    if intstr.is_percent(unavailable) and intstr.plain(unavailable) > 100:
        msg = fielderr.invalid(intstr.go_repr(unavailable), "must not be greater than 100%", True)
        out.append(((*where, "maxUnavailable"), msg, "use at most 100%"))
    return out


def _int_or_percent(where: tuple[str, ...], value: int | str) -> list[Finding]:
    """``ValidatePositiveIntOrPercent``."""
    if isinstance(value, str) and not intstr.is_percent(value):
        msg = fielderr.invalid(
            intstr.go_repr(value), "must be an integer or percentage (e.g '5%')", True
        )
        return [(where, msg, "write e.g. 1 or 25%")]
    if isinstance(value, int) and value < 0:
        msg = fielderr.invalid(value, "must be greater than or equal to 0")
        return [(where, msg, "use 0 or more")]
    return []


# -- effective values (Kubernetes' defaults over a stored object) --------------------------
def replicas(obj: dict[str, Any]) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return DEFAULT_REPLICAS if value is None else int(value)


def strategy_type(d: dict[str, Any]) -> str:
    return str(((d.get("spec") or {}).get("strategy") or {}).get("type") or "RollingUpdate")


def rolling_params(d: dict[str, Any]) -> tuple[int | str, int | str]:
    """(maxSurge, maxUnavailable) with the 25 % defaults."""
    ru = (((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate")) or {}
    surge = ru.get("maxSurge")
    unavailable = ru.get("maxUnavailable")
    return (
        DEFAULT_MAX_SURGE if surge is None else surge,
        DEFAULT_MAX_UNAVAILABLE if unavailable is None else unavailable,
    )


def revision_history_limit(d: dict[str, Any]) -> int:
    value = (d.get("spec") or {}).get("revisionHistoryLimit")
    return DEFAULT_REVISION_HISTORY if value is None else int(value)


def progress_deadline_s(d: dict[str, Any]) -> int:
    value = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return DEFAULT_PROGRESS_DEADLINE_S if value is None else int(value)


def min_ready_s(obj: dict[str, Any]) -> int:
    return int((obj.get("spec") or {}).get("minReadySeconds") or 0)


# -- manifests ----------------------------------------------------------------------------
def deployment_manifest(
    name: str,
    namespace: str,
    replicas: int,
    container: dict[str, Any],
    *,
    selector: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A one-container Deployment as a user writes it (what suites, tests and benches apply).

    The selector defaults to ``app: NAME`` and the template's labels to the selector;
    ``spec`` adds fields such as ``strategy`` or ``minReadySeconds``. Every mapping is
    a copy, so a YAML dump never turns a shared one into an anchor.
    """
    match = dict(selector or {"app": name})
    meta: dict[str, Any] = {"labels": dict(labels or match)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": match},
            "template": {"metadata": meta, "spec": {"containers": [container]}},
            **spec,
        },
    }
