"""The ssh backend: existing machines from an Ansible inventory; builds nothing.

``up`` reads the inventory, connects to every host with the ssh client in
BatchMode (its key, user and ssh args taken from the inventory, as Ansible
would) and reports which hosts answer. Tested here against a netns lab's nodes.
"""

from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.errors import LabError, ToolError, UserError
from harness.exec import run
from harness.lab.backend import NodeRow, UpRequest, UpResult


def inventory_hosts(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every host of a YAML inventory with its vars: group vars (outer to inner, in
    file order) under the host's own vars, which always win — as in Ansible."""
    group_vars: dict[str, dict[str, Any]] = {}
    own_vars: dict[str, dict[str, Any]] = {}

    def walk(group: dict[str, Any], inherited: dict[str, Any]) -> None:
        merged = {**inherited, **(group.get("vars") or {})}
        for host, hvars in (group.get("hosts") or {}).items():
            group_vars[host] = {**group_vars.get(host, {}), **merged}
            own_vars[host] = {**own_vars.get(host, {}), **(hvars or {})}
        for child in (group.get("children") or {}).values():
            walk(child or {}, merged)

    walk(data.get("all") or {}, {})
    return {host: {**group_vars[host], **own_vars[host]} for host in group_vars}


def ssh_argv(host: str, hvars: dict[str, Any], command: str) -> list[str]:
    """The ssh command Ansible would run for ``host`` (BatchMode, short timeout)."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
    argv += shlex.split(str(hvars.get("ansible_ssh_common_args", "")))
    if hvars.get("ansible_ssh_private_key_file"):
        argv += ["-i", str(hvars["ansible_ssh_private_key_file"])]
    if hvars.get("ansible_user"):
        argv += ["-l", str(hvars["ansible_user"])]
    if hvars.get("ansible_port"):
        argv += ["-p", str(hvars["ansible_port"])]
    return [*argv, str(hvars.get("ansible_host", host)), command]


def probe(host: str, hvars: dict[str, Any]) -> NodeRow:
    """Connect once; the row's state is ``up`` or ``unreachable: <reason>``."""
    try:
        res = run(ssh_argv(host, hvars, "hostname"), timeout=15)
        state = "up" if res.stdout.strip() else "up (no hostname)"
    except ToolError as exc:
        state = f"unreachable: {str(exc)[-80:]}"
    return NodeRow(
        node=host,
        role=str(hvars.get("podlab_role", "-")),
        cluster=str(hvars.get("podlab_cluster", "-")),
        mgmt=str(hvars.get("ansible_host", host)),
        underlay=str(hvars.get("podlab_underlay_address", "-")),
        state=state,
    )


class SshBackend:
    """Machines that already exist (VMs, bare metal)."""

    name = "ssh"

    def up(self, request: UpRequest) -> UpResult:
        if request.inventory is None:
            raise UserError("--backend ssh needs --inventory FILE")
        from harness.inventory import load_inventory

        path = Path(request.inventory)
        if not path.is_file():
            raise UserError(f"{path}: no such inventory file")
        data = load_inventory(path)
        hosts = inventory_hosts(data)
        if not hosts:
            raise UserError(f"{path}: the inventory lists no hosts")
        lab = str((data.get("all", {}).get("vars") or {}).get("podlab_lab", path.stem))
        with ThreadPoolExecutor(max_workers=16) as pool:
            rows = list(pool.map(lambda h: probe(h, hosts[h]), sorted(hosts)))
        result = UpResult(lab=lab, backend="ssh", rows=rows, inventory=path)
        bad = [r.node for r in rows if r.state != "up"]
        if bad:
            result.notes.append(f"unreachable: {', '.join(bad)}")
        return result

    def down(self, lab: str) -> None:
        raise LabError("the ssh backend builds nothing, so there is nothing to take down")
