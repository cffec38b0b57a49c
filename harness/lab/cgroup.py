"""One cgroup (v2) per lab, one child per node: the lab's process fence.

Every process a node starts — sshd sessions, Ansible modules, etcd, agents,
pods in their own netns, daemons that double-fork — inherits its node's
cgroup, so ``down`` can kill them all with ``cgroup.kill`` and cannot touch
anything else. Where cgroup v2 is not mounted the lab still works; ``down``
then relies on the namespace scan alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

ROOT_NAME = "podlab"


def cgroup2_root() -> Path | None:
    """Mount point of the cgroup v2 hierarchy (pure or hybrid layout), if any."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


def lab_cgroup(lab: str) -> Path | None:
    root = cgroup2_root()
    return root / ROOT_NAME / lab if root else None


def create_node_cgroup(lab: str, node: str) -> Path | None:
    """Create ``podlab/<lab>/<node>``; return its ``cgroup.procs``, or None if unsupported."""
    base = lab_cgroup(lab)
    if base is None:
        return None
    try:
        (base / node).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return base / node / "cgroup.procs"


def node_procs(lab: str, node: str) -> Path | None:
    base = lab_cgroup(lab)
    procs = base / node / "cgroup.procs" if base else None
    return procs if procs and procs.exists() else None


def kill_lab(lab: str, timeout: float = 5.0) -> list[int]:
    """Kill every process of the lab's cgroup tree, remove the cgroups; return the pids.

    The tree may be nested (a container runtime on a node makes children of the
    node's cgroup), so it is walked to the bottom, and on a hybrid host the same
    ``podlab/<lab>`` paths in the v1 hierarchies (where runc mirrors them) go too.
    """
    base = lab_cgroup(lab)
    if base is None or not base.exists():
        return []
    members = [int(p) for procs in base.rglob("cgroup.procs") for p in _read(procs).split()]
    try:
        (base / "cgroup.kill").write_text("1")
    except OSError:
        for procs in base.rglob("cgroup.procs"):
            _kill_listed(procs)
    deadline = time.monotonic() + timeout
    while _populated(base) and time.monotonic() < deadline:
        time.sleep(0.01)
    _rmtree(base)  # deepest first: a node's pod cgroups (harness/agent/cgroups.py) too
    remove_v1_pod_cgroups(lab)
    parent = base.parent
    if parent.name == ROOT_NAME and not any(p.is_dir() for p in parent.iterdir()):
        _rmdir(parent)
    for v1 in v1_roots():
        tree = v1 / ROOT_NAME / lab
        if tree.is_dir():
            for procs in tree.rglob("cgroup.procs"):
                _kill_listed(procs)
            _rmtree(tree)
            if not any(p.is_dir() for p in tree.parent.iterdir()):
                _rmdir(tree.parent)
    return members


def v1_roots() -> list[Path]:
    """Mount points of cgroup v1 hierarchies (a hybrid layout has them beside v2)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    return [Path(p[1]) for line in mounts if len(p := line.split()) > 2 and p[2] == "cgroup"]


def _rmtree(top: Path) -> None:
    """rmdir a cgroup directory and every cgroup below it, deepest first."""
    dirs = sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts))
    for d in [*dirs, top]:
        _rmdir(d)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _populated(base: Path) -> bool:
    try:
        return "populated 1" in (base / "cgroup.events").read_text()
    except OSError:
        return False


def _kill_listed(procs: Path) -> None:
    for raw in procs.read_text().split():
        try:
            fd = os.pidfd_open(int(raw))
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
        except OSError:
            continue


def _rmdir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def stale_labs() -> list[str]:
    """Lab names that have a cgroup under ``podlab/``."""
    root = cgroup2_root()
    base = root / ROOT_NAME if root else None
    if base is None or not base.exists():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir())


V1_POD_DIR = (
    "podlab.pods"  # the agent's v1 pod cgroups: <hierarchy>/<its cgroup>/podlab.pods/<lab>.<node>/
)


def remove_v1_pod_cgroups(lab: str) -> int:
    """Remove the cgroup v1 directories a lab's agents made for pods (hosts whose cpu
    and memory controllers are on v1 keep them outside the lab's v2 cgroup). Empty
    once the lab's processes are gone; returns how many directories went."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return 0
    removed = 0
    for line in mounts:
        parts = line.split()
        if len(parts) < 4 or parts[2] != "cgroup":
            continue
        if not {"cpu", "cpuacct", "memory"} & set(parts[3].split(",")):
            continue
        root = Path(parts[1])
        for top, dirs, _ in os.walk(root):
            here = Path(top)
            if here.name == V1_POD_DIR:
                for tag in [d for d in dirs if d.startswith(f"{lab}.")]:
                    node = here / tag
                    for child in sorted((p for p in node.rglob("*") if p.is_dir()), reverse=True):
                        removed += _rmdir_counted(child)
                    removed += _rmdir_counted(node)
                dirs.clear()
            elif len(here.relative_to(root).parts) >= 4:
                dirs.clear()
    return removed


def _rmdir_counted(path: Path) -> int:
    try:
        path.rmdir()
    except OSError:
        return 0
    return 1
