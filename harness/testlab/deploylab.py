"""Helpers shared by the deploy integration test and the deploy benchmark.

A lab is brought up from a *copy* of an example topology renamed ``t-dep-…`` with
its own management subnet, so it never collides with a user's lab; ``down`` and
removing the generated inventory always run, even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

import harness

# the project root (topologies/, inventories/): where ``podlab`` runs from in a checkout
REPO = Path(harness.__file__).resolve().parents[1]
PODLAB = [sys.executable, "-m", "harness.cli"]


def podlab(
    *args: str, timeout: float = 600, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``podlab`` CLI from the repository root (stdin: ``input``, else none)."""
    return subprocess.run(
        [*PODLAB, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def topology_copy(example: str, name: str, mgmt_subnet: str, dest: Path) -> Path:
    """``topologies/<example>.clab.yml`` renamed to ``name`` on ``mgmt_subnet``."""
    data: dict[str, Any] = yaml.safe_load((REPO / "topologies" / f"{example}.clab.yml").read_text())
    data["name"] = name
    data["mgmt"] = {"ipv4-subnet": mgmt_subnet}
    path = dest / f"{name}.clab.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextmanager
def lab_up(example: str, name: str, mgmt_subnet: str, workdir: Path) -> Iterator[Path]:
    """Bring a lab up, yield its inventory path, and always take it down again."""
    topo = topology_copy(example, name, mgmt_subnet, workdir)
    inventory = REPO / "inventories" / f"{name}.yml"
    up = podlab("up", str(topo))
    try:
        assert up.returncode == 0, f"podlab up {name} failed:\n{up.stdout}\n{up.stderr}"
        assert inventory.is_file(), f"podlab up did not write {inventory}"
        yield inventory
    finally:
        # down also cleans up after an up that failed halfway; it only reports
        # "no lab" when up refused before making anything.
        down = podlab("down", name)
        inventory.unlink(missing_ok=True)
        if up.returncode == 0:
            assert down.returncode == 0, f"podlab down {name} failed:\n{down.stderr}"


def plain_ssh_inventory(lab_inventory: Path, dest: Path) -> Path:
    """The VM path: the same machines described as plain SSH hosts, as a user would.

    Only addresses, the login key and known_hosts are kept from the generated
    inventory (no ``-F ssh_config``, ``podlab_backend: ssh``). These "VMs" share
    the host's /etc, so persisting sysctls to /etc/sysctl.d is switched off.
    """
    data = yaml.safe_load(lab_inventory.read_text())
    top = data["all"]["vars"]
    lab_dir = Path(top["podlab_lab_dir"])
    top = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": top["ansible_ssh_private_key_file"],
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={lab_dir / 'known_hosts'} -o StrictHostKeyChecking=yes "
            "-o IdentitiesOnly=yes"
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
        "podlab_lab": top["podlab_lab"],
        "podlab_backend": "ssh",
        "common_persist_sysctls": False,
        "agent_cni_link_system": False,  # their /usr/lib/cni is the host's
    }
    data["all"]["vars"] = top
    path = dest / "vms.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sshd_pid(lab: str, node: str) -> int:
    """The pid of a node's sshd, from the lab's state.json ledger."""
    from harness.lab.state import Ledger, find

    pid = Ledger.load(find(lab)).nodes[node].sshd_pid
    assert pid, f"state.json of {lab} has no sshd pid for {node}"
    return pid


def stop_sshd(lab: str, node: str) -> list[int]:
    """Stop a node's sshd as a crash would: the listener and its sessions, by pid.

    Killing only the listener leaves established sessions (and so Ansible's
    ControlPersist connection) alive, exactly as ``systemctl stop ssh`` would.
    """
    listener = sshd_pid(lab, node)
    assert Path(f"/proc/{listener}/comm").read_text().strip() == "sshd"
    victims = [listener, *_descendants(listener)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return victims


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def node_ssh(lab: str, node: str, *argv: str) -> str:
    """Run a command on a node over ssh with the lab's ssh_config; return its stdout."""
    proc = node_run(lab, node, *argv)
    assert proc.returncode == 0, f"ssh {node} {argv}: {proc.stderr}"
    return proc.stdout


def node_run(lab: str, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Like ``node_ssh`` but the caller judges the exit status."""
    from harness.lab.state import find

    return subprocess.run(
        ["ssh", "-F", str(find(lab).ssh_config), "-n", node, shlex.join(argv)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
