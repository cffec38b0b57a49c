"""One sshd per node, bound to the node's management address.

Keys, host key, configs, ``known_hosts`` and an ``ssh_config`` all live in the
lab directory, so ``ssh -F .podlab/<lab>/ssh_config c1-w1``, Ansible, testinfra
and paramiko reach a node like a VM — and nothing under ``/root/.ssh`` or
``/etc/ssh`` is ever read for trust or written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from harness.errors import LabError
from harness.exec import run
from harness.lab import nodeinit, sysns
from harness.lab.state import LabPaths

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PIDFILE = "/run/podlab/sshd.pid"  # inside the node's private /run


def ensure_keys(paths: LabPaths, lab: str) -> None:
    """The lab's login key pair and (shared) host key, generated once per lab dir."""
    for key in (paths.key, paths.host_key):
        if not key.exists():
            comment = f"podlab-{lab}"
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    pub = Path(f"{paths.key}.pub").read_text()
    paths.authorized_keys.write_text(pub)
    paths.authorized_keys.chmod(0o600)


def sshd_config(paths: LabPaths, mgmt_ip: str) -> str:
    """sshd_config text for one node."""
    return "\n".join(
        [
            f"ListenAddress {mgmt_ip}",
            "Port 22",
            f"HostKey {paths.host_key}",
            f"AuthorizedKeysFile {paths.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            f"PidFile {PIDFILE}",
            "MaxStartups 200:30:400",
            "MaxSessions 100",
            "AcceptEnv LANG LC_*",
            f"Subsystem sftp {SFTP_SERVER}",
            "",
        ]
    )


def start_all(
    paths: LabPaths, nodes: dict[str, tuple[int, str, Path | None]], timeout: float = 10.0
) -> dict[str, tuple[int, int]]:
    """Start sshd in each node (name -> (holder pid, mgmt ip, cgroup.procs)).

    The children are forked together and reaped together; sshd daemonizes, so
    each real daemon is found from its pid file in the node's private /run.
    Returns name -> (sshd pid, start time).
    """
    children = {}
    for name, (holder, ip, procs) in nodes.items():
        node_dir = paths.node_dir(name)
        cfg = node_dir / "sshd_config"
        cfg.write_text(sshd_config(paths, ip))
        log = node_dir / "sshd.log"
        children[name] = _spawn(holder, procs, [SSHD, "-f", str(cfg), "-E", str(log)])
    for name, child in children.items():
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise LabError(f"node {name}: sshd failed to start: {_tail(paths, name)}")
    return {
        name: _await_pid(paths, name, nodes[name][0], nodes[name][2], timeout) for name in nodes
    }


def _spawn(holder: int, procs: Path | None, argv: list[str]) -> int:
    """Fork a child that enters the node and runs ``argv`` as a process OF the node.

    setns(2) puts only later children in the node's PID namespace, so the child
    forks once more and waits: sshd then starts inside the node, and the daemon it
    forks is re-parented to the node's PID 1 (which reaps it), not to the host's
    init. A process whose parent is outside would leave the node's PID namespace
    waiting on the host's init at ``down`` (seconds here).
    """
    child = os.fork()
    if child == 0:  # pragma: no cover - forked child
        try:
            os.setsid()
            nodeinit.enter_node(holder, procs)
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, 65536)
            inner = os.fork()
            if inner == 0:
                os.execv(argv[0], argv)
            _, status = os.waitpid(inner, 0)
            os._exit(os.waitstatus_to_exitcode(status))
        finally:
            os._exit(127)
    return child


def _await_pid(
    paths: LabPaths, name: str, holder: int, procs: Path | None, timeout: float
) -> tuple[int, int]:
    """sshd's host pid and start time, once its pid file (in the node's pid space) is there."""
    pidfile = Path(f"/proc/{holder}/root{PIDFILE}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            node_pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.005)
            continue
        members = _members(procs)
        pid = sysns.host_pid(holder, node_pid, members)
        start = sysns.start_time(pid) if pid else None
        if pid and start is not None:
            return pid, start
        time.sleep(0.005)
    raise LabError(f"node {name}: sshd did not come up: {_tail(paths, name)}")


def _members(procs: Path | None) -> list[int] | None:
    """Host pids in a node's cgroup (None: no cgroup, search every process)."""
    if procs is None:
        return None
    try:
        return [int(p) for p in procs.read_text().split()]
    except (OSError, ValueError):
        return None


def _tail(paths: LabPaths, name: str) -> str:
    try:
        lines = (paths.node_dir(name) / "sshd.log").read_text().strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(lines[-3:]) or "empty log"


def write_client_files(paths: LabPaths, mgmt: dict[str, str]) -> None:
    """``known_hosts`` (every node by name and address) and ``ssh_config``."""
    host_pub = Path(f"{paths.host_key}.pub").read_text().split()
    key_text = " ".join(host_pub[:2])
    paths.known_hosts.write_text(
        "".join(f"{name},{ip} {key_text}\n" for name, ip in sorted(mgmt.items()))
    )
    blocks = [f"Host {name}\n  HostName {ip}\n" for name, ip in sorted(mgmt.items())]
    common = (
        "Host *\n"
        "  User root\n"
        f"  IdentityFile {paths.key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {paths.known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  CheckHostIP no\n"
        "  LogLevel ERROR\n"
    )
    paths.ssh_config.write_text("".join(blocks) + common)
