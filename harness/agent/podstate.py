"""What the agent knows about a pod: the spec it acts on, the state it keeps, the status it writes.

``PodSpec`` is the part of a Pod object the agent acts on; ``PodState`` is what
it made for the pod, persisted in ``state_dir/pods/<ns>_<name>.json`` so a
restart reuses it; ``status_json`` is the ``podstatus/<ns>/<name>`` record
(Kubernetes PodStatus field names).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from harness.agent import cgroups, procs


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class PodSpec:
    """The part of a Pod object the agent acts on."""

    namespace: str
    name: str
    uid: str
    command: tuple[str, ...]
    restart_policy: str = "Always"
    readiness: procs.Probe | None = None
    container: str = "main"
    grace_s: int | None = None  # set once the pod is being deleted (graceful delete)
    pre_stop_s: int = 0  # lifecycle.preStop.sleep.seconds
    limits: cgroups.Limits = cgroups.NO_LIMITS  # from resources (cgroups.py)

    @property
    def terminating(self) -> bool:
        return self.grace_s is not None

    @staticmethod
    def from_object(obj: dict[str, Any]) -> PodSpec:
        meta, spec = obj.get("metadata", {}), obj.get("spec", {})
        c = (spec.get("containers") or [{}])[0]
        argv = [*(c.get("command") or []), *(c.get("args") or [])]
        grace = meta.get("deletionGracePeriodSeconds") if meta.get("deletionTimestamp") else None
        pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
        return PodSpec(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta["name"]),
            uid=str(meta.get("uid") or ""),
            command=tuple(str(a) for a in argv) or ("sleep", "infinity"),
            restart_policy=str(spec.get("restartPolicy") or "Always"),
            readiness=_probe(c),
            container=str(c.get("name") or "main"),
            grace_s=None if grace is None else int(grace),
            pre_stop_s=int(pre_stop.get("seconds") or 0),
            limits=cgroups.Limits.of(obj),
        )


def _probe(container: dict[str, Any]) -> procs.Probe | None:
    """readinessProbe → Probe; a named port is looked up in the container's ports."""
    rp = container.get("readinessProbe") or {}
    kind, body = ("tcp", rp.get("tcpSocket")) if "tcpSocket" in rp else ("http", rp.get("httpGet"))
    if not body:
        return None
    port = body.get("port")
    if isinstance(port, str):
        named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        port = named.get(port)
    if not isinstance(port, int):
        return None
    threshold = int(rp.get("failureThreshold") or 3)
    return procs.Probe(kind, port, str(body.get("path") or "/"), threshold)


@dataclass
class PodState:
    """What the agent made for one pod; persisted so restarts reuse it."""

    namespace: str
    name: str
    uid: str
    ip: str
    netns: str
    host_if: str
    pid: int = 0
    start_time: str = ""
    network_ready_time: str = ""
    phase: str = "Pending"
    message: str = ""
    exit_code: int | None = None
    restart_count: int = 0
    ready: bool = False
    probe_failures: int = 0  # consecutive failed probes of a Ready pod
    terminating_since: float = 0.0  # wall clock (survives an agent restart)
    sigterm_sent: bool = False
    mtu: int = 0  # of the pod's veth, as last set (0: written before MTU was kept)
    container_id: str = ""  # its CNI container ID (podcni.container_id)
    ready_time: str = ""  # when Ready last changed (the condition's lastTransitionTime)
    oom_kills: int = 0  # of the pod's cgroup, as last seen
    last_reason: str = ""  # why the command last ended: OOMKilled, Error, Completed
    finished_at: str = ""
    attaching: bool = False  # an ADD was started and not confirmed: DEL before the next


def netns_name(namespace: str, name: str) -> str:
    """The pod's netns name on its node (``ip netns exec <it>``), deterministic."""
    return f"pod-{namespace}-{name}"


def _last_state(st: PodState) -> dict[str, Any]:
    """``lastState.terminated`` as the kubelet reports it (signals as 128 + n)."""
    if not st.last_reason:
        return {}
    code = st.exit_code
    code = 128 - code if code is not None and code < 0 else code
    if st.last_reason == "OOMKilled":
        code = 137
    done = {"exitCode": code, "reason": st.last_reason, "finishedAt": st.finished_at or None}
    return {"lastState": {"terminated": done}}


def status_json(st: PodState, host_ip: str, container: str = "main") -> dict[str, Any]:
    """The ``podstatus/<ns>/<name>`` record (Kubernetes PodStatus field names)."""
    ready = "True" if st.phase == "Running" and st.ready else "False"
    # when Ready last changed: Deployments count a pod available minReadySeconds after it
    changed = st.ready_time or st.start_time or None
    net = "True" if st.network_ready_time else "False"
    return {
        "uid": st.uid,
        "phase": st.phase,
        "podIP": st.ip,
        "podIPs": [{"ip": st.ip}],
        "hostIP": host_ip,
        "netns": st.netns,
        "startTime": st.start_time or None,
        "networkReadyTime": st.network_ready_time or None,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {
                "type": "NetworkReady",
                "status": net,
                "lastTransitionTime": st.network_ready_time or None,
            },
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": changed},
            {"type": "Ready", "status": ready, "lastTransitionTime": changed},
        ],
        "containerStatuses": [
            {
                "name": container,
                "ready": ready == "True",
                "restartCount": st.restart_count,
                "started": st.phase == "Running",
                "lastExitCode": st.exit_code,
                **_last_state(st),
            }
        ],
        "message": st.message,
    }
