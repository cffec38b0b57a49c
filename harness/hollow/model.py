"""What a hollow node publishes: pure builders of its etcd records (no I/O).

The records mirror the real agent's (harness/agent/leases.py ``subnet_record``,
main.py ``heartbeat``, pods.py ``status_json``) field for field, plus
``hollow: true``, so every reader (agents, ``podlab get``, the services
controller) treats a hollow node as a node. They are rebuilt here rather than
imported because the hollow runner may not import the agent (STYLE.md).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Per mode, the backend data a peer needs to program this node (the agent's
# ``backend_data()``): flannel vxlan's VTEP MAC/VNI/port; host-gw needs none.
MODES = ("vxlan", "host-gw")
VXLAN_VNI, VXLAN_PORT = 1, 8472


class HollowError(ValueError):
    """A bad runner setting (mode, size, CIDR): one line, names the fix."""


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def stable_mac(seed: str) -> str:
    """A locally administered unicast MAC from ``seed`` (the agent's derivation)."""
    h = hashlib.sha256(seed.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x0E, *h[:5]))


@dataclass(frozen=True)
class HollowConfig:
    """One runner: ``nodes`` hollow nodes named ``<prefix>-<i>`` of ``cluster``."""

    cluster: str
    etcd_endpoints: list[str]
    nodes: int
    underlay_ip: str  # the runner host's underlay address: it answers for all its nodes
    pod_cidr: str = "10.244.0.0/16"
    node_prefix: int = 24
    mode: str = "vxlan"
    segment: str = "fabric"
    prefix: str = "hollow"
    lease_ttl_s: int = 60  # the cluster's agents' lease_ttl_s: same heartbeat, same grace
    pending_s: float = 0.0  # kwok stage delays: scheduled -> Pending status
    running_s: float = 0.0  # Pending -> Running + Ready
    delete_s: float = 0.0  # deletionTimestamp -> object removed

    def check(self) -> None:
        if self.mode not in MODES:
            raise HollowError(f"mode {self.mode!r}: hollow nodes support {', '.join(MODES)}")
        if self.nodes < 0:
            raise HollowError(f"--nodes {self.nodes}: must be 0 or more")
        cidr = ipaddress.IPv4Network(self.pod_cidr)
        have = 2 ** (self.node_prefix - cidr.prefixlen) - 1
        if self.nodes > have:
            raise HollowError(
                f"{self.nodes} hollow nodes: pod CIDR {cidr} has only {have} /{self.node_prefix} "
                "subnets; ask for fewer nodes or a larger pod CIDR"
            )

    @property
    def heartbeat_s(self) -> float:
        """The agent's period: lease_ttl_s / 4, at least 1 s."""
        return max(1.0, self.lease_ttl_s / 4)

    def names(self, count: int | None = None) -> list[str]:
        """``<prefix>-0000`` … : fixed width, so a resize keeps every name it keeps."""
        return [f"{self.prefix}-{i:04d}" for i in range(self.nodes if count is None else count)]

    def backend(self, node: str) -> dict[str, Any]:
        if self.mode == "vxlan":
            mac = stable_mac(f"{self.cluster}/{node}/vxlan")
            return {"VtepMAC": mac, "VNI": VXLAN_VNI, "Port": VXLAN_PORT}
        return {}


@dataclass
class HollowNode:
    """One hollow node's state in the runner."""

    name: str
    subnet: ipaddress.IPv4Network | None = None
    pod_ips: dict[tuple[str, str], str] = field(default_factory=dict)
    due: float | None = None  # loop time its next heartbeat is due; None: not leased yet
    created: str = field(default_factory=now_rfc3339)  # the record's AGE (`podlab get nodes`)

    def next_ip(self) -> str:
        """The lowest free host address from .2 (.1 is the gateway, as on real nodes)."""
        assert self.subnet is not None
        used = set(self.pod_ips.values())
        for ip in list(self.subnet.hosts())[1:]:
            if str(ip) not in used:
                return str(ip)
        raise HollowError(f"{self.name}: subnet {self.subnet} has no free pod address")


def subnet_record(cfg: HollowConfig, node: str, subnet: ipaddress.IPv4Network) -> dict[str, Any]:
    return {
        "node": node,
        "subnet": str(subnet),
        "underlayIP": cfg.underlay_ip,
        "segment": cfg.segment,
        "mode": cfg.mode,
        "backend": cfg.backend(node),
        "hollow": True,
    }


def node_record(cfg: HollowConfig, node: HollowNode) -> dict[str, Any]:
    return {
        "name": node.name,
        "cluster": cfg.cluster,
        "creationTimestamp": node.created,
        "underlayIP": cfg.underlay_ip,
        "segment": cfg.segment,
        "role": "worker",
        "podCIDR": str(node.subnet),
        "mode": cfg.mode,
        "mtu": 1450 if cfg.mode == "vxlan" else 1500,
        "backend": cfg.backend(node.name),
        "agentVersion": "hollow",
        "hollow": True,
        "heartbeat": now_rfc3339(),
        "problems": [],
    }


def pod_status(
    uid: str, phase: str, ip: str, host_ip: str, started: str, ready_at: str = ""
) -> dict[str, Any]:
    """A ``podstatus`` record in the agent's shape; Ready once Running, since ``ready_at``
    (the Ready condition's lastTransitionTime: the trigger of network programming latency)."""
    ready = "True" if phase == "Running" else "False"
    return {
        "uid": uid,
        "phase": phase,
        "podIP": ip,
        "podIPs": [{"ip": ip}] if ip else [],
        "hostIP": host_ip,
        "netns": "",
        "startTime": started,
        "networkReadyTime": started if ready == "True" else None,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "NetworkReady", "status": ready},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready, "lastTransitionTime": ready_at or started},
        ],
        "containerStatuses": [],
        "message": "hollow",
        "hollow": True,
    }
