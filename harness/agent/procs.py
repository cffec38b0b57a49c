"""Pod processes: start detached in a pod netns, find by netns, stop by pid, probe.

A pod's command runs as ``nsenter --net=<pod netns> --mount=<its namespace's
resolver mount ns> -- CMD`` (dns.ResolverMounts) in a NEW SESSION, so
it is not in the agent's process group and outlives an agent that is killed.
Processes are found by their network namespace (every pid whose
``/proc/<pid>/ns/net`` is the pod's) and stopped by pid: SIGTERM, a grace period,
then SIGKILL. Never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.agent import netlink as nl

STOP_GRACE_S = 2.0
# Probes go straight to the pod, never through a proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start(
    argv: list[str], netns_path: str, env: dict[str, str], log: Path, mount_ns: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside the pod netns (and ``mount_ns``, if given), detached from the
    agent's session."""
    full_env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                "nsenter",
                f"--net={netns_path}",
                *([f"--mount={mount_ns}"] if mount_ns else []),
                "--",
                *argv,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=full_env,
            start_new_session=True,
            close_fds=True,
        )


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def exists(pid: int) -> bool:
    """True for a live process (a zombie counts as gone)."""
    state = _state(pid)
    return state is not None and state != "Z"


def alive_in(pid: int, netns_path: str) -> bool:
    """True if ``pid`` is alive and lives in the netns bind-mounted at ``netns_path``."""
    try:
        same = nl.netns_inode(f"/proc/{pid}/ns/net") == nl.netns_inode(netns_path)
    except OSError:
        return False
    return same and exists(pid)


def pids_by_netns() -> dict[tuple[int, int], list[int]]:
    """Every process by its network namespace ((device, inode)): one walk of /proc, for
    callers that look up many namespaces at once."""
    found: dict[tuple[int, int], list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found.setdefault(nl.netns_inode(f"/proc/{entry}/ns/net"), []).append(int(entry))
            except OSError:
                continue
    return found


def pids_in_netns(
    netns_path: str, by_netns: dict[tuple[int, int], list[int]] | None = None
) -> list[int]:
    """Every process whose network namespace is the one bind-mounted at ``netns_path``."""
    table = pids_by_netns() if by_netns is None else by_netns
    return list(table.get(nl.netns_inode(netns_path), []))


def stop_pids(pids: list[int], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM each pid, then SIGKILL whatever is still there after ``grace``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(exists(p) for p in pids):
        time.sleep(0.05)
    killed = [pid for pid in pids if exists(pid)]
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace  # SIGKILL is not instant on a busy machine
    while time.monotonic() < deadline and any(exists(p) for p in killed):
        time.sleep(0.02)


@dataclass(frozen=True)
class Probe:
    """A readinessProbe: ``tcp`` connect, or ``http`` GET answering 200–399."""

    kind: str
    port: int
    path: str = "/"
    failure_threshold: int = 3  # consecutive failures before a Ready pod is not Ready


def probe(p: Probe, ip: str, timeout: float = 0.3) -> bool:
    """Run one readiness probe against a pod from the node's namespace."""
    try:
        if p.kind == "tcp":
            socket.create_connection((ip, p.port), timeout=timeout).close()
            return True
        with _NO_PROXY.open(f"http://{ip}:{p.port}{p.path}", timeout=timeout) as r:
            return 200 <= int(r.status) < 400
    except OSError:
        return False
