"""Lab nodes as testinfra hosts over ssh, and commands run on them or in their pods.

testinfra's ssh backend reaches a netns node exactly as it reaches a VM (the
lab's ``ssh_config`` names hosts after nodes), and keeps one ssh master
connection per node so each probe costs one channel, not one handshake.
The masters belong to the process that made them (``tcm/<pid>/<node>``): a
lockstep phase runs three ``podlab test`` sessions on the same nodes at once,
and the first to finish closed (``ssh -O exit``) the masters the others were
still running commands over — ssh then exits 255 with no message ("Control
master terminated unexpectedly" is logged at debug level only).
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
from pathlib import Path
from typing import Any

from harness.errors import LabError, ToolError
from harness.exec import Result, run
from harness.plan.model import LabPlan, NodePlan
from harness.probes import echo
from harness.probes import netcheck as netcheck_module

CONTROL_PERSIST_S = 30
#: How long ``Node.close`` gives a master that was told to exit to remove its socket.
MASTER_EXIT_WAIT_S = 2.0


#: The process supervisor podlab's deploy runs on netns nodes (agent, etcd).
SUPERVISORCTL = ("supervisorctl", "-c", "/etc/podlab/supervisor/supervisord.conf")


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

    def ensure_netcheck(self) -> None:
        """Nodes podlab did not deploy (outside hosts) get netcheck as a standalone file.

        It is one standard-library module, copied over ssh into the node's ``/run``
        and run with the node's own ``python3``.
        """
        if self.run(["test", "-x", echo.NODE_PYTHON], timeout_s=10).returncode == 0:
            return
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
        with contextlib.suppress(ToolError):
            run(["ssh", "-F", str(self.ssh_config), "-o", f"ControlPath={self.control_path}",
                 "-O", "exit", self.name], timeout=10, check=False)  # fmt: skip
        # ``-O exit`` returns once the master has the request; the master unlinks its
        # socket as it exits, a moment later (a clean-clone CI run found the directory
        # still holding it). Wait for that, then take a socket left by a master that
        # died earlier, so the last node out can remove the empty directory.
        sock = Path(self.control_path)
        deadline = time.monotonic() + MASTER_EXIT_WAIT_S
        while sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(OSError):
            sock.unlink()
        with contextlib.suppress(OSError):
            sock.parent.rmdir()


def connect(plan: NodePlan, ssh_config: Path, control_dir: Path) -> Node:
    """A testinfra host for ``plan``'s node, multiplexed over one ssh master."""
    import testinfra

    control_dir.mkdir(parents=True, exist_ok=True)
    control_path = str(control_dir / plan.name)
    host = testinfra.get_host(
        f"ssh://{plan.name}",
        ssh_config=str(ssh_config),
        controlpath=control_path,
        controlpersist=CONTROL_PERSIST_S,
        timeout=10,
    )
    return Node(plan, host, ssh_config, control_path)


#: A unix socket path holds 107 bytes, and ssh first binds its master at
#: ``<ControlPath>.<16 random characters>``.
SOCKET_PATH_MAX = 107 - 17


def control_dir(lab_dir: Path, names: Sequence[str] = (), pid: int | None = None) -> Path:
    """This process's directory of ssh master sockets in the lab: ``tcm/<pid>``.

    Per process because ``Node.close`` stops the master at its control path
    whoever else is using it; sessions that share a lab (lockstep) each keep
    their own masters and close only those. Where a socket for the longest of
    ``names`` would not fit a unix socket path (a deep checkout), the directory
    is ``<tmp>/podlab-tcm-<digest of the lab dir>-<pid>`` instead.
    """
    owner = str(os.getpid() if pid is None else pid)
    here = lab_dir / "tcm" / owner
    longest = max((len(n) for n in names), default=0)
    if len(str(here)) + 1 + longest <= SOCKET_PATH_MAX:
        return here
    digest = hashlib.sha256(str(lab_dir).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"podlab-tcm-{digest}-{owner}"


def connect_lab(
    plan: LabPlan, ssh_config: Path, lab_dir: Path, names: Sequence[str] | None = None
) -> dict[str, Node]:
    """The lab's nodes (``names``, else every node but the bridges), each over its ssh
    master in this process's ``control_dir`` of the lab, once each answers and runs
    netcheck.

    The nodes are reached at once (one thread each: every step is an ssh round that
    waits on the node, not on this process). One after the other, the eight nodes of
    two-clusters cost each of a lockstep phase's three runs 3-8 s before its first
    check (docs/conformance.md, "Where the time goes"). The first failure is raised.
    """
    chosen = names if names is not None else [n for n in plan.nodes if n not in plan.bridges]
    control = control_dir(lab_dir, chosen)
    out = {name: connect(plan.nodes[name], ssh_config, control) for name in chosen}
    if out:
        with ThreadPoolExecutor(max_workers=len(out)) as pool:
            for done in [pool.submit(_ready, node) for node in out.values()]:
                done.result()
    return out


def _ready(node: Node) -> None:
    """One node of ``connect_lab``: it answers over ssh, and has a netcheck to run."""
    wait_ssh(node)
    node.ensure_netcheck()


def wait_ssh(node: Node, timeout_s: float = 30.0) -> None:
    """Wait until the node answers over ssh (sshd may still be starting after ``up``)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            if node.run(["true"], timeout_s=10).returncode == 0:
                return
        except LabError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise LabError(f"node {node.name} not reachable over ssh after {timeout_s:.0f} s: {last}")
