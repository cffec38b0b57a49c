"""Lab nodes as testinfra hosts over ssh, and commands run on them or in their pods.

testinfra's ssh backend reaches a netns node exactly as it reaches a VM (the
lab's ``ssh_config`` names hosts after nodes), and keeps one ssh master
connection per node so each probe costs one channel, not one handshake.
The masters belong to the process that made them (``tcm/<pid>/<node>``): a
lockstep phase runs three ``podlab test`` sessions on the same nodes at once,
and the first to finish closed (``ssh -O exit``) the masters the others were
still running commands over — ssh then exits 255 with no message ("Control
master terminated unexpectedly" is logged at debug level only).
A lockstep run keeps each role's masters (c1, c2, mesh) from phase to phase
instead (``connect_lab(keep=ROLE)``: ``tcm/keep-<role>``, never closed by the
session; ``close_kept`` stops them once the run is over), so only its first
phase pays the handshakes.
testinfra has no timeouts of its own, so every remote command is wrapped in
coreutils ``timeout``: a hung probe fails its test instead of the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.errors import LabError, ToolError
from harness.exec import Result, run
from harness.plan.model import LabPlan, NodePlan
from harness.probes import echo
from harness.probes import netcheck as netcheck_module

CONTROL_PERSIST_S = 30
#: A kept master (lockstep) outlives its session: the rest of the phase (up to a few
#: hundred seconds after a short share), the switch and the next session's start-up.
#: ``close_kept`` ends it at the end of the run; the lab's ``down`` would anyway.
KEPT_PERSIST_S = 1800
#: A kept master lives long; should its connection wedge (a node gone without a
#: reset), keepalives end it within 30 s and the next session makes a new one,
#: instead of commands hanging on it.
KEPT_SSH_OPTIONS = "-o ServerAliveInterval=10 -o ServerAliveCountMax=3"
#: The prefix of a kept role's control directory (``tcm/keep-c1``).
KEEP_PREFIX = "keep-"
#: How long ``Node.close`` gives a master that was told to exit to remove its socket.
MASTER_EXIT_WAIT_S = 2.0


#: The process supervisor podlab's deploy runs on netns nodes (agent, etcd).
SUPERVISORCTL = ("supervisorctl", "-c", "/etc/podlab/supervisor/supervisord.conf")


def unit_name(program: str) -> str:
    """The systemd unit the deploy made of a program where PID 1 is systemd (VM guests):
    ``etcd`` → ``podlab-etcd``, ``podlab-agent`` unchanged. The rule of
    playbooks/library/podlab_service.py's ``unit_name``, which runs on the nodes."""
    return program if program.startswith("podlab-") else f"podlab-{program}"


def output(res: Result) -> str:
    """stdout then stderr: parsers take the last JSON line, errors stay visible in messages."""
    return f"{res.stdout}\n{res.stderr}"


@dataclass
class Node:
    """One lab node: its plan and a testinfra host to run commands with."""

    plan: NodePlan
    host: Any  # testinfra.host.Host
    ssh_config: Path
    control_path: str
    netcheck: tuple[str, ...] = echo.NODE_NETCHECK

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def underlay_ip(self) -> str:
        if not self.plan.underlay or not self.plan.underlay.address:
            raise LabError(f"node {self.name} has no underlay address")
        return str(self.plan.underlay.address.ip)

    @property
    def underlay_if(self) -> str:
        if not self.plan.underlay:
            raise LabError(f"node {self.name} has no underlay interface")
        return self.plan.underlay.name

    def run(self, argv: Sequence[str], timeout_s: float = 30.0) -> Result:
        """Run ``argv`` on the node, killed after ``timeout_s``; the Result has its status."""
        wrapped = ["timeout", "-k", "2", f"{timeout_s:g}", *argv]
        command = shlex.join(wrapped)
        try:
            out = self.host.run(command)
        except RuntimeError as exc:  # testinfra: ssh itself failed (exit 255)
            raise LabError(f"node {self.name}: ssh failed running {argv[0]}: {exc}") from exc
        return Result(wrapped, out.rc, out.stdout, out.stderr)

    def check(self, argv: Sequence[str], timeout_s: float = 30.0) -> Result:
        """Like ``run`` but a non-zero exit raises ToolError naming the node."""
        res = self.run(argv, timeout_s)
        if res.returncode != 0:
            raise ToolError([f"{self.name}:{argv[0]}", *argv[1:]], res.returncode,
                            res.stderr or res.stdout)  # fmt: skip
        return res

    def wait_files(self, paths: Sequence[str], timeout_s: float) -> bool:
        """Whether all ``paths`` exist on the node within ``timeout_s`` (polled there
        every 50 ms: one round trip, e.g. for netcheck's ``--ready-file``)."""
        poll = 'for f in "$@"; do while [ ! -e "$f" ]; do sleep 0.05; done; done'
        return self.run(["sh", "-c", poll, "sh", *paths], timeout_s).returncode == 0

    @cached_property
    def supervisor(self) -> str:
        """``supervisord`` or ``systemd``: which one the deploy gave this node's services.

        Asked of the node (podlab's supervisord configuration is there or not), as the
        deploy decided per node: netns nodes run supervisord, VM guests systemd units.
        """
        probe = ["test", "-e", SUPERVISORCTL[2]]
        return "supervisord" if self.run(probe, 15).returncode == 0 else "systemd"

    def service(self, action: str, name: str, timeout_s: float = 60.0) -> Result:
        """``stop``/``start``/``restart`` podlab's service ``name`` (``podlab-agent``,
        ``etcd``, ``podlab-controllers``) through whichever supervisor runs it."""
        if self.supervisor == "supervisord":
            return self.check([*SUPERVISORCTL, action, name], timeout_s)
        return self.check(["systemctl", action, unit_name(name)], timeout_s)

    def service_pid(self, name: str) -> int:
        """The main pid of podlab's service ``name`` (0: not running)."""
        if self.supervisor == "supervisord":
            text = self.run([*SUPERVISORCTL, "pid", name], 15).stdout.strip()
        else:
            argv = ["systemctl", "show", "-p", "MainPID", "--value", unit_name(name)]
            text = self.run(argv, 15).stdout
        return int(text.strip()) if text.strip().isdigit() else 0

    def in_netns(self, netns: str, argv: Sequence[str], timeout_s: float = 30.0) -> Result:
        """Run ``argv`` inside a named network namespace of this node (a pod's)."""
        return self.run(["ip", "netns", "exec", netns, *argv], timeout_s)

    def start(self, argv: Sequence[str], lifetime_s: float) -> None:
        """Start ``argv`` in the background on the node; it dies after ``lifetime_s`` anyway."""
        inner = shlex.join(["timeout", "-k", "2", f"{lifetime_s:g}", *argv])
        self.check(["sh", "-c", f"nohup {inner} </dev/null >/dev/null 2>&1 &"], timeout_s=10)

    def start_echo(self, port: int, lifetime_s: float) -> None:
        """A TCP+UDP echo server on the node (answering with its name), once it listens.

        Up to 30 s for it to listen: Python's start-up in a starved emulated guest
        took longer than the 10 s this allowed (docs/vm-backend.md); a netns node
        listens within a second, so only a server that never starts waits that long.
        """
        self.start(echo.serve_command(port, self.name, lifetime_s, self.netcheck), lifetime_s + 5)
        argv = echo.reach_command([("127.0.0.1", port)], deadline_s=30, runner=self.netcheck)
        res = self.run(argv, timeout_s=40)
        first = echo.parse_reach(output(res)) if res.returncode == 0 else {}
        if not any(first.values()):
            raise LabError(f"node {self.name}: echo server on :{port} never listened")

    def install_netcheck(self) -> None:
        """Nodes podlab did not deploy (outside hosts: no podlab Python, ``_ready``) get
        netcheck as a standalone file: one standard-library module, copied over ssh into
        the node's ``/run`` and run with the node's own ``python3``."""
        source = Path(netcheck_module.__file__).read_text()
        remote = shlex.join(["sh", "-c", f"cat > {echo.STANDALONE_PATH}"])
        run(["ssh", "-F", str(self.ssh_config), "-o", f"ControlPath={self.control_path}",
             self.name, remote], timeout=30, input=source)  # fmt: skip
        self.netcheck = echo.STANDALONE_NETCHECK

    def close(self) -> None:
        """Stop this node's ssh master connection (nothing lingers after the run).

        Only this process's master: its control path is in this process's own
        directory (``control_dir``), so another session's commands on the node
        keep theirs.
        """
        stop_master(self.ssh_config, self.control_path, self.name)


def stop_master(ssh_config: Path, control_path: str, host: str) -> None:
    """``ssh -O exit`` the master at ``control_path``, then remove its socket and, once
    empty, its directory."""
    with contextlib.suppress(ToolError):
        run(["ssh", "-F", str(ssh_config), "-o", f"ControlPath={control_path}",
             "-O", "exit", host], timeout=10, check=False)  # fmt: skip
    # ``-O exit`` returns once the master has the request; the master unlinks its
    # socket as it exits, a moment later (a clean-clone CI run found the directory
    # still holding it). Wait for that, then take a socket left by a master that
    # died earlier, so the last node out can remove the empty directory.
    sock = Path(control_path)
    deadline = time.monotonic() + MASTER_EXIT_WAIT_S
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    with contextlib.suppress(OSError):
        sock.unlink()
    with contextlib.suppress(OSError):
        sock.parent.rmdir()


def connect(plan: NodePlan, ssh_config: Path, control_dir: Path, kept: bool = False) -> Node:
    """A testinfra host for ``plan``'s node, multiplexed over one ssh master (made by the
    first command, or an earlier session's that is still up at that path)."""
    import testinfra

    control_dir.mkdir(parents=True, exist_ok=True)
    control_path = str(control_dir / plan.name)
    host = testinfra.get_host(
        f"ssh://{plan.name}",
        ssh_config=str(ssh_config),
        controlpath=control_path,
        controlpersist=KEPT_PERSIST_S if kept else CONTROL_PERSIST_S,
        ssh_extra_args=KEPT_SSH_OPTIONS if kept else None,
        timeout=10,
    )
    return Node(plan, host, ssh_config, control_path)


#: A unix socket path holds 107 bytes, and ssh first binds its master at
#: ``<ControlPath>.<16 random characters>``.
SOCKET_PATH_MAX = 107 - 17


def control_dir(
    lab_dir: Path, names: Sequence[str] = (), pid: int | None = None, owner: str | None = None
) -> Path:
    """This process's directory of ssh master sockets in the lab: ``tcm/<pid>``
    (``tcm/<owner>`` for a kept role's, ``keep-c1``).

    Per process because ``Node.close`` stops the master at its control path
    whoever else is using it; sessions that share a lab (lockstep) each keep
    their own masters and close only those. Where a socket for the longest of
    ``names`` would not fit a unix socket path (a deep checkout), the directory
    is ``<tmp>/podlab-tcm-<digest of the lab dir>-<owner>`` instead.
    """
    owner = owner or str(os.getpid() if pid is None else pid)
    here = lab_dir / "tcm" / owner
    longest = max((len(n) for n in names), default=0)
    if len(str(here)) + 1 + longest <= SOCKET_PATH_MAX:
        return here
    prefix = fallback_prefix(lab_dir)
    return prefix.with_name(prefix.name + owner)


def fallback_prefix(lab_dir: Path) -> Path:
    """``<tmp>/podlab-tcm-<digest of the lab dir>-``: the start of the lab's control
    directories that did not fit under it (hygiene looks for them after ``down``)."""
    digest = hashlib.sha256(str(lab_dir).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"podlab-tcm-{digest}-"


def kept_dirs(lab_dir: Path) -> list[Path]:
    """The lab's kept roles' control directories, in the lab or in the tmp fallback."""
    prefix = fallback_prefix(lab_dir)
    found = sorted((lab_dir / "tcm").glob(f"{KEEP_PREFIX}*"))
    return found + sorted(prefix.parent.glob(f"{prefix.name}{KEEP_PREFIX}*"))


def close_kept(lab_dir: Path, ssh_config: Path) -> list[str]:
    """Stop every kept master of the lab (``ssh -O exit``), remove their sockets and
    directories (stale sockets of masters that died too); the directories handled."""
    done = []
    for directory in kept_dirs(lab_dir):
        for sock in sorted(directory.iterdir()):
            stop_master(ssh_config, str(sock), sock.name)
        with contextlib.suppress(OSError):
            directory.rmdir()
        done.append(str(directory))
    return done


def connect_lab(
    plan: LabPlan,
    ssh_config: Path,
    lab_dir: Path,
    names: Sequence[str] | None = None,
    keep: str | None = None,
) -> dict[str, Node]:
    """The lab's nodes (``names``, else every node but the bridges), each over its ssh
    master in this process's ``control_dir`` of the lab, once each answers and runs
    netcheck.

    ``keep``: a lockstep role (c1, c2, mesh): the masters live in that role's
    directory for ``KEPT_PERSIST_S``, and the role's next session (the next phase)
    finds them up — a command over a live master is a channel, not a handshake.
    A master that died meanwhile leaves a stale socket, which ssh unlinks (it
    cannot connect to it) before it makes a new master there.

    The nodes are reached at once (one thread each: every step is an ssh round that
    waits on the node, not on this process). One after the other, the eight nodes of
    two-clusters cost each of a lockstep phase's three runs 3-8 s before its first
    check (docs/conformance.md, "Where the time goes"). The first failure is raised.
    """
    chosen = names if names is not None else [n for n in plan.nodes if n not in plan.bridges]
    owner = f"{KEEP_PREFIX}{keep}" if keep else None
    control = control_dir(lab_dir, chosen, owner=owner)
    out = {name: connect(plan.nodes[name], ssh_config, control, bool(keep)) for name in chosen}
    if out:
        with ThreadPoolExecutor(max_workers=len(out)) as pool:
            for done in [pool.submit(_ready, node) for node in out.values()]:
                done.result()
    return out


def _ready(node: Node) -> None:
    """One node of ``connect_lab``: it answers over ssh, and has a netcheck to run.

    One round for both: the probe that waits for ssh asks whether the node has
    podlab's Python (then netcheck is installed); only a node without it (an
    outside host) takes a second round, the copy of the standalone netcheck.
    """
    if not wait_ssh(node, probe=("test", "-x", echo.NODE_PYTHON)):
        node.install_netcheck()


def wait_ssh(node: Node, timeout_s: float = 30.0, probe: Sequence[str] = ("true",)) -> bool:
    """Wait until the node answers over ssh (sshd may still be starting after ``up``):
    ``probe`` exits 0 or 1 there (a test: whether it exited 0)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            rc = node.run(probe, timeout_s=10).returncode
            if rc in (0, 1):
                return rc == 0
            last = f"{probe[0]} exited {rc}"
        except LabError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise LabError(f"node {node.name} not reachable over ssh after {timeout_s:.0f} s: {last}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.conformance.remote close-kept LAB_DIR``: stop the lockstep
    run's kept ssh masters (scripts/conformance.sh, before ``podlab down``)."""
    import sys

    args = list(argv if argv is not None else sys.argv[1:])
    if len(args) != 2 or args[0] != "close-kept":
        print("usage: python -m harness.conformance.remote close-kept LAB_DIR", file=sys.stderr)
        return 2
    lab_dir = Path(args[1])
    done = close_kept(lab_dir, lab_dir / "ssh_config")
    print(f"closed the kept ssh masters of {len(done)} role(s)" if done else "no kept ssh masters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
