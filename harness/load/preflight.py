"""Refuse a scale this machine cannot hold, before anything starts (issue 15).

``podlab hollow`` and ``podlab load`` estimate what a size needs and compare it
with the host's limits: available memory, free PIDs (``kernel.pid_max`` less
the processes running), conntrack entries, file descriptors (system-wide and
this process's), inotify instances and watches. Each shortfall is one line
naming the limit, what the size needs, and the fix.

The per-object costs are measured figures with headroom, not guesses:
a hollow node ≈ 0.24 MB of runner memory (bench/bench_hollow_cost.py: 232–237
KiB marginal) plus its etcd records; a real pod a network namespace, a veth
pair, its process and the agent's bookkeeping (≈ 2 MB, 2 PIDs); a hollow pod
three small etcd records. The estimates are doubled (``MARGIN``): the run also
needs the machine for what it measures.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

from harness.errors import Problem

MB = 1024 * 1024
HOLLOW_NODE_BYTES = int(0.3 * MB)  # runner 0.24 MB + etcd records
HOLLOW_POD_BYTES = 16 * 1024  # the runner's entry + three etcd records
REAL_POD_BYTES = 2 * MB  # netns, veth pair, process, agent state
REAL_POD_PIDS = 2  # the pod's process and its nsenter/shim parent
FDS_PER_REAL_POD = 4  # netns handle, veth, log, pidfd
FDS_PER_HOLLOW_NODE = 1
CONNTRACK_PER_REAL_POD = 4  # probes and service traffic through the pod
MIN_INOTIFY_INSTANCES = 128  # the kernel's default; kind fails below it (kind known issues)
MIN_INOTIFY_WATCHES = 8192
MIN_NOFILE = 1024
MARGIN = 2


@dataclass(frozen=True)
class Need:
    """What a scale asks of the machine."""

    hollow_nodes: int = 0
    hollow_pods: int = 0
    real_pods: int = 0

    @property
    def memory_bytes(self) -> int:
        return MARGIN * (
            self.hollow_nodes * HOLLOW_NODE_BYTES
            + self.hollow_pods * HOLLOW_POD_BYTES
            + self.real_pods * REAL_POD_BYTES
        )

    @property
    def pids(self) -> int:
        return MARGIN * self.real_pods * REAL_POD_PIDS

    @property
    def fds(self) -> int:
        return MARGIN * (
            self.real_pods * FDS_PER_REAL_POD + self.hollow_nodes * FDS_PER_HOLLOW_NODE
        )

    @property
    def conntrack(self) -> int:
        return MARGIN * self.real_pods * CONNTRACK_PER_REAL_POD


@dataclass(frozen=True)
class Have:
    """The host's limits and what is in use, read from /proc."""

    mem_available_bytes: int
    pid_max: int
    pids_running: int
    conntrack_max: int | None  # None: nf_conntrack not loaded (nothing to exhaust)
    conntrack_count: int
    file_max: int
    files_open: int
    nofile_soft: int
    inotify_instances: int
    inotify_watches: int

    @classmethod
    def read(cls, proc: Path = Path("/proc")) -> Have:
        def num(rel: str, default: int = 0) -> int:
            try:
                return int((proc / rel).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return default

        mem = 0
        try:
            for line in (proc / "meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    mem = int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        file_nr = (proc / "sys/fs/file-nr").read_text().split() if proc.exists() else []
        ct = proc / "sys/net/netfilter/nf_conntrack_max"
        return cls(
            mem_available_bytes=mem,
            pid_max=min(num("sys/kernel/pid_max", 32768), num("sys/kernel/threads-max", 1 << 22)),
            pids_running=sum(1 for p in proc.iterdir() if p.name.isdigit()),
            conntrack_max=num("sys/net/netfilter/nf_conntrack_max") if ct.exists() else None,
            conntrack_count=num("sys/net/netfilter/nf_conntrack_count"),
            file_max=int(file_nr[2]) if len(file_nr) > 2 else 1 << 20,
            files_open=int(file_nr[0]) if file_nr else 0,
            nofile_soft=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            inotify_instances=num("sys/fs/inotify/max_user_instances", MIN_INOTIFY_INSTANCES),
            inotify_watches=num("sys/fs/inotify/max_user_watches", MIN_INOTIFY_WATCHES),
        )


def problems(need: Need, have: Have, what: str) -> list[Problem]:
    """One located line per limit ``need`` exceeds (empty: the machine holds it)."""
    out: list[Problem] = []

    def refuse(limit: str, message: str, fix: str) -> None:
        out.append(Problem(file=what, where=limit, message=message, hint=fix))

    if need.memory_bytes > have.mem_available_bytes:
        refuse(
            "memory",
            f"needs ~{need.memory_bytes / MB:.0f} MB, the machine has "
            f"{have.mem_available_bytes / MB:.0f} MB available",
            "ask for fewer nodes or pods, or spread hollow runners over several machines",
        )
    free_pids = have.pid_max - have.pids_running
    if need.pids > free_pids:
        refuse(
            "kernel.pid_max",
            f"needs ~{need.pids} PIDs, {free_pids} are free (pid_max/threads-max "
            f"{have.pid_max}, {have.pids_running} in use)",
            f"sysctl -w kernel.pid_max={have.pids_running + need.pids * 2}, or fewer real pods",
        )
    if (
        have.conntrack_max is not None
        and need.conntrack > have.conntrack_max - have.conntrack_count
    ):
        refuse(
            "net.netfilter.nf_conntrack_max",
            f"needs ~{need.conntrack} entries, {have.conntrack_max - have.conntrack_count} free",
            f"sysctl -w net.netfilter.nf_conntrack_max={have.conntrack_max + need.conntrack * 2}",
        )
    if need.fds > have.file_max - have.files_open:
        refuse(
            "fs.file-max",
            f"needs ~{need.fds} file descriptors, {have.file_max - have.files_open} free",
            f"sysctl -w fs.file-max={have.file_max + need.fds * 2}",
        )
    if have.nofile_soft < MIN_NOFILE:
        refuse(
            "ulimit -n",
            f"this shell allows {have.nofile_soft} open files, podlab needs {MIN_NOFILE}",
            f"ulimit -n {MIN_NOFILE * 4}",
        )
    if have.inotify_instances < MIN_INOTIFY_INSTANCES:
        refuse(
            "fs.inotify.max_user_instances",
            f"is {have.inotify_instances}, below the kernel default {MIN_INOTIFY_INSTANCES}",
            "sysctl -w fs.inotify.max_user_instances=512",
        )
    if have.inotify_watches < MIN_INOTIFY_WATCHES:
        refuse(
            "fs.inotify.max_user_watches",
            f"is {have.inotify_watches}, below the kernel default {MIN_INOTIFY_WATCHES}",
            "sysctl -w fs.inotify.max_user_watches=524288",
        )
    return out
