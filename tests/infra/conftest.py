"""testinfra checks of a deployed podlab lab, usable against any inventory.

Run them against a netns lab or against VMs, unchanged::

    pytest tests/infra --hosts='ansible://all' --ansible-inventory=inventories/LAB.yml
    pytest tests/infra --hosts='ssh://root@10.0.0.5' --ssh-identity-file=KEY

With an Ansible inventory each host's role comes from the inventory; with plain
``--hosts`` from the files the roles leave (``/etc/podlab/etcd.yml``: control
plane; ``/etc/podlab/agent.yaml``: cluster node; neither: router or plain host,
checked for ``common`` only). Without either option every check is skipped:
testinfra would otherwise test the machine running pytest.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

SUPERVISOR_CONF = "/etc/podlab/supervisor/supervisord.conf"
ETCD_CONFIG = "/etc/podlab/etcd.yml"
VENV = "/opt/podlab/venv"
AGENT_CONFIG = "/etc/podlab/agent.yaml"
ETCD_CLIENT_PORT = 2379


@dataclass(frozen=True)
class Node:
    """What the inventory promises about one host: the checks derive their expectations here."""

    name: str
    role: str
    cluster: str | None
    backend: str
    underlay_address: str | None
    mgmt_address: str | None
    etcd_endpoints: tuple[str, ...]

    @property
    def runs_etcd(self) -> bool:
        return self.role == "control-plane"

    @property
    def runs_agent(self) -> bool:
        return self.role in ("control-plane", "worker")


def pytest_configure(config: pytest.Config) -> None:
    # testinfra runs `ansible-inventory` from PATH: make it this interpreter's (the venv's).
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    opts = config.option
    if getattr(opts, "hosts", None) or getattr(opts, "ansible_inventory", None):
        return
    skip = pytest.mark.skip(reason="no deployed nodes given (--hosts / --ansible-inventory)")
    for item in items:
        if item.path.is_relative_to(config.rootpath / "tests" / "infra"):
            item.add_marker(skip)


def _from_inventory(v: dict[str, Any]) -> Node:
    return Node(
        name=str(v.get("podlab_node", v["inventory_hostname"])),
        role=str(v.get("podlab_role", "worker")),
        cluster=v.get("podlab_cluster"),
        backend=str(v.get("podlab_backend", "ssh")),
        underlay_address=v.get("podlab_underlay_address"),
        mgmt_address=v.get("podlab_mgmt_address", v.get("ansible_host")),
        etcd_endpoints=tuple(v.get("podlab_etcd_endpoints") or ()),
    )


def _from_node_files(host: Any) -> Node:
    """Without an inventory: what the node's own podlab files say it was deployed as."""
    agent: dict[str, Any] = {}
    if host.file(AGENT_CONFIG).exists:
        agent = yaml.safe_load(host.file(AGENT_CONFIG).content_string) or {}
    # Neither file: a router or plain host, checked for `common` only.
    role = "control-plane" if host.file(ETCD_CONFIG).exists else "worker" if agent else "other"
    return Node(
        name=str(agent.get("node") or host.check_output("hostname")),
        role=role,
        cluster=agent.get("cluster"),
        backend="ssh",
        underlay_address=agent.get("underlay_address"),
        mgmt_address=None,
        etcd_endpoints=tuple(agent.get("etcd_endpoints") or ()),
    )


@pytest.fixture
def node(host: Any) -> Node:
    """The node under test, as the inventory (or the node's own record) describes it."""
    if host.backend.NAME == "ansible" or hasattr(host.backend, "ansible_runner"):
        try:
            return _from_inventory(host.ansible.get_variables())
        except (AttributeError, RuntimeError):
            pass
    return _from_node_files(host)


def supervisor_kind(host: Any, node: Node) -> str:
    """Mirror of the supervise role's choice: supervisord on netns nodes or without systemd."""
    if node.backend == "netns":
        return "supervisord"
    pid1 = host.file("/proc/1/comm").content_string.strip()
    return "systemd" if pid1 == "systemd" else "supervisord"


def program_state(host: Any, node: Node, program: str) -> str:
    """RUNNING/STOPPED/… under supervisord; systemd's ActiveState for a unit."""
    if supervisor_kind(host, node) == "supervisord":
        out = host.run("supervisorctl -c %s status %s", SUPERVISOR_CONF, program).stdout.split()
        return out[1] if len(out) > 1 else "UNKNOWN"
    # the unit's name as playbooks/library/podlab_service.py's unit_name makes it:
    # etcd → podlab-etcd, podlab-agent stays podlab-agent (never podlab-podlab-agent)
    unit = program if program.startswith("podlab-") else f"podlab-{program}"
    res = host.run("systemctl show -p ActiveState --value %s", unit)
    return "RUNNING" if res.stdout.strip() == "active" else res.stdout.strip().upper()
