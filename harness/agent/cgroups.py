"""Pod cgroups: requests and limits become kernel settings; usage and OOM kills are read back.

One cgroup per pod, made before its process starts; the process joins it
before it execs the pod's command (``wrap``: a one-line ``sh`` that writes its
own pid into each ``cgroup.procs``), so no thread of the pod ever runs outside.
The values are the kubelet's (``harness.kube.resources``):

==================  =========================  ============================
                    cgroup v2                  cgroup v1
==================  =========================  ============================
CPU limit           ``cpu.max`` quota period   ``cpu.cfs_quota_us`` / period
CPU request         ``cpu.weight``             ``cpu.shares``
memory limit        ``memory.max``             ``memory.limit_in_bytes``
CPU use             ``cpu.stat`` usage_usec    ``cpuacct.usage``
memory use          memory.current − inactive  usage_in_bytes − inactive
OOM kills           ``memory.events``          ``memory.oom_control``
==================  =========================  ============================

Where: with cgroup v2 (and its cpu and memory controllers), beside the agent's
own cgroup: ``<agent cgroup>.pods/<ns>_<name>`` (a cgroup with processes may
not have controller-enabled children). With the v1 controllers (hosts with a
hybrid layout, like the one podlab is developed on), under the agent's own
cgroup in each of the cpu, cpuacct and memory hierarchies:
``<agent cgroup>/podlab.pods/<tag>/<ns>_<name>``, ``tag`` naming the lab and
node (netns nodes share the host's hierarchies; ``podlab down`` removes a
lab's tags). Without either, pods run without limits and the node record says
``cgroups: none``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from harness.kube import resources
from harness.kube.quantity import Quantity

log = logging.getLogger("podlab.cgroups")
V1_CONTROLLERS = ("cpu", "cpuacct", "memory")
V1_DIR = "podlab.pods"


@dataclass(frozen=True)
class Limits:
    """A pod's cgroup values, from its containers' resources."""

    cpu_quota_us: int | None  # None: no CPU limit
    cpu_shares: int
    memory_bytes: int | None  # None: no memory limit

    @staticmethod
    def of(pod: dict[str, object]) -> Limits:
        req = resources.pod_requests(pod)  # type: ignore[arg-type]
        lim = resources.pod_limits(pod)  # type: ignore[arg-type]
        cpu_req = req["cpu"].milli_value() if "cpu" in req else None
        cpu_lim = lim["cpu"].milli_value() if "cpu" in lim else None
        mem = lim.get("memory")
        return Limits(
            resources.cpu_quota_us(cpu_lim),
            resources.cpu_shares(cpu_req),
            mem.int_value() if isinstance(mem, Quantity) else None,
        )


NO_LIMITS = Limits(None, resources.MIN_SHARES, None)


@dataclass(frozen=True)
class Usage:
    cpu_ns: int  # cumulative CPU time
    memory_bytes: int  # working set
    oom_kills: int


def _mounts() -> list[tuple[str, str, str]]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    return [(p[1], p[2], p[3]) for line in lines if len(p := line.split()) > 3]


def _own(controller: str | None) -> str:
    """This process's cgroup path in the v2 tree (None) or a v1 hierarchy."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if (controller is None and ctrls == "") or (
            controller is not None and controller in ctrls.split(",")
        ):
            return path or "/"
    return "/"


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _read_int(path: Path, key: str | None = None) -> int:
    """A file's number, or the value of ``key`` in a flat keyed file; 0 if unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return 0
    if key is None:
        return int(text.split()[0]) if text.split() else 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return 0


class Cgroups:
    """The pod cgroups of one node; ``driver`` is ``v2``, ``v1`` or ``none``."""

    def __init__(self, tag: str, mounts: list[tuple[str, str, str]] | None = None) -> None:
        self.tag = tag
        mounts = _mounts() if mounts is None else mounts
        self.driver = "none"
        self.v2_base: Path | None = None
        self.v1: dict[str, Path] = {}
        v2 = next((Path(m) for m, t, _ in mounts if t == "cgroup2"), None)
        if v2 is not None and {"cpu", "memory"} <= _controllers(v2):
            own = _own(None)
            parent = Path(own).parent if own != "/" else Path("/")
            leaf = f"{Path(own).name}.pods" if own != "/" else "podlab.pods"
            self.v2_base = v2 / str(parent).lstrip("/") / leaf
            self.driver = "v2"
            return
        for mount, kind, opts in mounts:
            if kind != "cgroup":
                continue
            for ctrl in V1_CONTROLLERS:
                if ctrl in opts.split(",") and ctrl not in self.v1:
                    self.v1[ctrl] = Path(mount) / _own(ctrl).lstrip("/") / V1_DIR / tag
        if set(self.v1) == set(V1_CONTROLLERS):
            self.driver = "v1"

    # -- paths ------------------------------------------------------------------------------
    def _dirs(self, namespace: str, name: str) -> dict[str, Path]:
        leaf = f"{namespace}_{name}"
        if self.driver == "v2" and self.v2_base is not None:
            return {"v2": self.v2_base / leaf}
        if self.driver == "v1":
            return {ctrl: base / leaf for ctrl, base in self.v1.items()}
        return {}

    def procs_files(self, namespace: str, name: str) -> list[str]:
        return [str(d / "cgroup.procs") for d in self._dirs(namespace, name).values()]

    # -- lifecycle --------------------------------------------------------------------------
    def prepare(self) -> None:
        """Enable the v2 controllers down to the pods' parent (idempotent)."""
        if self.driver != "v2" or self.v2_base is None:
            return
        root = next(Path(m) for m, t, _ in _mounts() if t == "cgroup2")
        rel = self.v2_base.relative_to(root).parts
        here = root
        for part in rel:
            with contextlib.suppress(OSError):
                _write(here / "cgroup.subtree_control", "+cpu +memory")
            here = here / part
            here.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            _write(here / "cgroup.subtree_control", "+cpu +memory")

    def ensure(self, namespace: str, name: str, limits: Limits) -> list[str]:
        """Create (or update) the pod's cgroup; the ``cgroup.procs`` files to join."""
        dirs = self._dirs(namespace, name)
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        try:
            if self.driver == "v2":
                d = dirs["v2"]
                quota = "max" if limits.cpu_quota_us is None else str(limits.cpu_quota_us)
                _write(d / "cpu.max", f"{quota} {resources.QUOTA_PERIOD_US}")
                _write(d / "cpu.weight", str(resources.cpu_weight(limits.cpu_shares)))
                mem = limits.memory_bytes
                _write(d / "memory.max", "max" if mem is None else str(mem))
                with contextlib.suppress(OSError):
                    _write(d / "memory.swap.max", "0")  # a limit means a limit (the kubelet's)
            elif self.driver == "v1":
                cpu = dirs["cpu"]
                _write(cpu / "cpu.cfs_period_us", str(resources.QUOTA_PERIOD_US))
                cfs = -1 if limits.cpu_quota_us is None else limits.cpu_quota_us
                _write(cpu / "cpu.cfs_quota_us", str(cfs))
                _write(cpu / "cpu.shares", str(limits.cpu_shares))
                mem = limits.memory_bytes
                _write(dirs["memory"] / "memory.limit_in_bytes", "-1" if mem is None else str(mem))
                with contextlib.suppress(OSError):  # no swap beyond the limit, where swap exists
                    _write(dirs["memory"] / "memory.memsw.limit_in_bytes",
                           "-1" if mem is None else str(mem))  # fmt: skip
        except OSError as exc:
            log.warning("pod %s/%s: cgroup settings not applied: %s", namespace, name, exc)
        return self.procs_files(namespace, name)

    def remove(self, namespace: str, name: str) -> None:
        for d in self._dirs(namespace, name).values():
            with contextlib.suppress(OSError):
                d.rmdir()

    def usage(self, namespace: str, name: str) -> Usage | None:
        dirs = self._dirs(namespace, name)
        if not dirs or not all(d.is_dir() for d in dirs.values()):
            return None
        if self.driver == "v2":
            d = dirs["v2"]
            cpu = _read_int(d / "cpu.stat", "usage_usec") * 1000
            mem = _read_int(d / "memory.current") - _read_int(d / "memory.stat", "inactive_file")
            ooms = _read_int(d / "memory.events", "oom_kill")
        else:
            cpu = _read_int(dirs["cpuacct"] / "cpuacct.usage")
            m = dirs["memory"]
            mem = _read_int(m / "memory.usage_in_bytes") - _read_int(
                m / "memory.stat", "total_inactive_file"
            )
            ooms = _read_int(m / "memory.oom_control", "oom_kill")
        return Usage(cpu, max(mem, 0), ooms)


def _controllers(v2_root: Path) -> set[str]:
    try:
        return set((v2_root / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def wrap(procs_files: list[str], argv: list[str]) -> list[str]:
    """``argv`` joining the pod's cgroups first (the shell writes its own pid, then execs)."""
    if not procs_files:
        return argv
    script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
    return ["sh", "-c", script, "podlab-cgexec", *procs_files, "--", *argv]


def node_tag(cluster: str, node: str) -> str:
    """``<lab>.<node>`` from the node's own cgroup (netns labs put each node in
    ``podlab/<lab>/<node>``), else ``<cluster>.<node>``."""
    parts = [p for p in _own(None).split("/") if p]
    if len(parts) >= 3 and parts[-3] == "podlab":
        return f"{parts[-2]}.{parts[-1]}"
    return f"{cluster}.{node}"
