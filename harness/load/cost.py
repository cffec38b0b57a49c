"""What the lab's processes cost during a load run: peak RSS and CPU cores, from /proc.

A netns lab's processes are the host's: each node's are those in the node's
network namespace (a pod has its own namespace, so the agent is counted without
its pods). Processes are told apart by their command line: etcd, the hollow
runner (``harness.hollow``), the agent (``harness.agent`` / ``podlab-agent``).
CPU is the ticks a process used over the window (its own, not reaped children's)
divided by the window; RSS the largest VmRSS seen by the sampler. The CPU it
*waited* for is the time its threads spent runnable on a run queue, not running
(``/proc/<pid>/task/*/schedstat``, second field), over the window: 0.5 means that
on average half a thread of it was ready to run and had no CPU — on a shared
2-core machine, the figure that tells starvation from work. The load process
itself is counted too (node ``host``, role ``podlab-load``).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.lab import sysns

TICK = os.sysconf("SC_CLK_TCK")
ROLES = (
    ("harness.hollow", "hollow"),
    ("harness.agent", "agent"),
    ("podlab-agent", "agent"),
    ("podlab-controllers", "controllers"),
)


def role_of(cmdline: list[str]) -> str | None:
    """Which lab process a command line is (None: not one we account for)."""
    if cmdline and Path(cmdline[0]).name == "etcd":
        return "etcd"
    text = " ".join(cmdline)
    for needle, role in ROLES:
        if needle in text:
            return role
    return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def cpu_ticks(pid: int) -> int:
    try:
        fields = sysns.stat_fields(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError):
        return 0
    return int(fields[11]) + int(fields[12])


def runqueue_s(pid: int) -> float:
    """Seconds the process's live threads spent runnable but waiting for a CPU."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for t in tasks:
        try:
            total += int((t / "schedstat").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def processes(netns: dict[str, Path]) -> dict[tuple[str, str], int]:
    """(node, role) → pid for the lab processes in each node's network namespace."""
    inodes = {}
    for node, path in netns.items():
        try:
            inodes[os.stat(path).st_ino] = node
        except OSError:
            continue
    out: dict[tuple[str, str], int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            found = inodes.get(os.stat(entry / "ns" / "net").st_ino)
        except OSError:
            continue
        role = role_of(_cmdline(int(entry.name))) if found else None
        if found and role:  # a wrapper (sh -c, nsenter) matches too: keep the largest
            pid, key = int(entry.name), (found, role)
            if key not in out or rss_bytes(pid) > rss_bytes(out[key]):
                out[key] = pid
    return out


@dataclass
class Cost:
    """Per (node, role): peak RSS bytes and CPU cores over the window."""

    rss: dict[tuple[str, str], int] = field(default_factory=dict)
    cores: dict[tuple[str, str], float] = field(default_factory=dict)
    waits: dict[tuple[str, str], float] = field(default_factory=dict)  # run-queue, cores


class CostSampler:
    """Samples RSS every ``every`` seconds between ``start`` and ``finish``.

    A process that exits during the window (an agent restarted by its supervisor)
    is followed: what it used up to the last sample is kept, and its successor of
    the same node and role, found at the next sample, is counted from zero (it
    started inside the window). Without that, the successor's own ticks were
    subtracted from the first process's and a restarted process read negative.
    """

    def __init__(self, netns: dict[str, Path], every: float = 2.0) -> None:
        self.netns = netns
        self.pids = processes(netns)
        self.pids[("host", "podlab-load")] = os.getpid()
        self.every = every
        self.cost = Cost()
        # per (node, role): (ticks, run-queue seconds) at the start, less what processes
        # gone since used; and the latest reading of the current process
        self._base: dict[tuple[str, str], tuple[int, float]] = {}
        self._last: dict[tuple[str, str], tuple[int, float]] = {}
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="load-cost")
        self._zero()

    def _zero(self) -> None:
        self._base = {k: (cpu_ticks(p), runqueue_s(p)) for k, p in self.pids.items()}
        self._last = dict(self._base)

    def start(self) -> None:
        self._zero()
        self._t0 = time.monotonic()
        self._thread.start()

    def _alive(self, key: tuple[str, str], pid: int) -> bool:
        return key[0] == "host" or role_of(_cmdline(pid)) == key[1]

    def _sample(self) -> None:
        gone = [k for k, pid in self.pids.items() if not self._alive(k, pid)]
        found = processes(self.netns) if gone else {}
        for k in gone:  # keep what it used: its successor counts from zero on top of that
            (ticks, wait), (ticks0, wait0) = self._last[k], self._base[k]
            self._base[k] = (ticks0 - ticks, -max(0.0, wait - wait0))
            self._last[k] = (0, 0.0)
            if k in found:
                self.pids[k] = found[k]
        for k, pid in self.pids.items():
            if k in gone and k not in found:
                continue  # not back yet: the next sample looks again
            self.cost.rss[k] = max(self.cost.rss.get(k, 0), rss_bytes(pid))
            self._last[k] = (cpu_ticks(pid), runqueue_s(pid))

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.every):
            self._sample()

    def finish(self) -> Cost:
        self._stop.set()
        self._sample()
        window = max(1e-3, time.monotonic() - self._t0)
        for k in self.pids:
            (ticks, wait), (ticks0, wait0) = self._last[k], self._base[k]
            self.cost.cores[k] = (ticks - ticks0) / TICK / window
            self.cost.waits[k] = max(0.0, wait - wait0) / window
        return self.cost
