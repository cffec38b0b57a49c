"""The agent's configuration: ``/etc/podlab/agent.yaml``, rendered by Ansible.

This file is one of the two places where the host side and the agent meet (the
other is etcd), so it is parsed strictly: an unknown key or a bad prefix is an
error at start-up, not a surprise at the first pod.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_PATH = "/etc/podlab/agent.yaml"

Mode = Literal["host-gw", "vxlan", "udp", "bgp", "ipip", "calico-vxlan", "cross-subnet"]


class ConfigError(Exception):
    """agent.yaml is missing or invalid; the message names the file and the fields."""


class BgpRouter(BaseModel):
    """A lab router a node of a native mesh peers with (eBGP): name, address, AS."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    address: ipaddress.IPv4Address
    asn: int = Field(alias="as", ge=1, le=4294967294)


class AgentConfig(BaseModel):
    """Everything one node's agent needs to know; see docs/etcd-layout.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str
    cluster: str
    cluster_id: int = 1
    etcd_endpoints: list[str] = Field(min_length=1)
    pod_cidr: ipaddress.IPv4Network
    node_prefix: int = Field(24, ge=8, le=30)
    service_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.96.0.0/16")
    mode: Mode = "vxlan"
    encryption: Literal["none", "wireguard"] = "none"
    proxy_mode: str = "nftables"
    # "userspace" / "wireguard-go": use the fallback even where the kernel has the
    # module — benchmarks compare kernel and fallback on the same VMs this way.
    ipip_impl: Literal["auto", "userspace"] = "auto"
    wireguard_impl: Literal["auto", "wireguard-go"] = "auto"
    ipvs_scheduler: str = "rr"  # proxy mode ipvs: rr, wrr, lc, wlc, sh, mh … (kube-proxy's)
    underlay_interface: str
    underlay_address: ipaddress.IPv4Address
    underlay_mtu: int = Field(1500, ge=576, le=65535)
    segment: str = "default"
    route_reflector: bool = False
    mesh: str | None = None  # the cluster mesh this cluster joined (docs/mesh.md)
    bgp_as: int = Field(64512, ge=1, le=4294967294)  # bgp: the cluster's AS (harness/plan/bgp.py)
    bgp_routers: list[BgpRouter] = []  # bgp in a mesh: routers on this node's segment
    role: Literal["worker", "control-plane"] = "worker"  # published in the node record
    state_dir: Path = Path("/var/lib/podlab")
    run_dir: Path = Path("/run/podlab")
    log_dir: Path = Path("/var/log/podlab")
    # Optional knobs (not rendered by Ansible today; defaults suit a lab):
    netns_dir: Path = Path("/run/netns")  # where pod netns are bind-mounted (ip netns' dir)
    # WireGuard interface name; default wg-<8 hex of sha256(node)>. Test labs whose nodes
    # share the host's /var/run/wireguard (wireguard-go's sockets) set a unique one.
    wireguard_interface: str = Field("", max_length=15, pattern=r"^$|^[A-Za-z0-9_.-]+$")
    lease_ttl_s: int = Field(60, ge=3)  # etcd lease TTL for the node record + subnet lease
    resync_s: float = Field(10.0, gt=0)  # periodic full reconcile (re-adds deleted objects)
    node_grace_s: float = Field(40.0, gt=0)  # a silent node's pods leave service endpoints
    allow_root_netns: bool = False  # refuse to program the host's own namespace unless set
    # the node's capacity for the scheduler (cpu, memory, pods); default: what the host has
    capacity: dict[str, str] = Field(default_factory=dict)
    metrics_interval_s: float = Field(2.0, gt=0)  # pods' CPU/memory → nodemetrics/<node>
    # BIRD's control socket: BIRD's own default, so `birdc` works on a node with no
    # flags (/run is node-private on netns nodes); tests sharing /run give each agent one
    bird_socket: Path = Path("/run/bird/bird.ctl")
    # CNI (docs/cni.md): where plugins are found (the agent links podlab-cni into the
    # first), where it writes the conflist other runtimes read, libcni's result cache
    cni_bin_dirs: list[Path] = Field(
        default_factory=lambda: [Path("/opt/cni/bin"), Path("/usr/lib/cni")], min_length=1
    )
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    cni_cache_dir: Path = Path("/var/lib/cni")
    pod_workers: int = Field(16, ge=1, le=256)  # pods set up (or removed) at once
    # False: a pod process's exit is noticed at the next full pass only (the behaviour
    # before supervise.py) — the negative control of its test and a benchmark baseline
    pod_exit_watch: bool = True
    # log each services programming pass's timeline (when its first event arrived, when
    # it started, computed, programmed the proxy): bench/bench_mesh.py's per-hop figures
    trace_services: bool = False

    @field_validator("mesh", mode="before")
    @classmethod
    def _no_mesh(cls, value: object) -> object:
        return value or None  # Ansible renders "no mesh" as ""

    @model_validator(mode="after")
    def _prefix_fits(self) -> AgentConfig:
        if self.node_prefix <= self.pod_cidr.prefixlen:
            raise ValueError(
                f"node_prefix /{self.node_prefix} must be longer than pod_cidr {self.pod_cidr}"
            )
        return self

    @model_validator(mode="after")
    def _grace_outlasts_heartbeats(self) -> AgentConfig:
        # one late heartbeat must not declare a node dead, and the services
        # controller stops judging after node_grace_s/2 without any heartbeat
        if self.node_grace_s <= 2 * self.heartbeat_s:
            raise ValueError(
                f"node_grace_s {self.node_grace_s:g} must exceed twice the heartbeat "
                f"({self.heartbeat_s:g} s = lease_ttl_s {self.lease_ttl_s} / 4, at least 1 s)"
            )
        return self

    @property
    def heartbeat_s(self) -> float:
        """How often the lease is renewed and the node record refreshed."""
        return max(1.0, self.lease_ttl_s / 4)


def load(path: str | Path = DEFAULT_PATH) -> AgentConfig:
    """Read and validate agent.yaml, raising ConfigError with every bad field named."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of settings")
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{p}: {'.'.join(str(x) for x in e['loc']) or 'config'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError("\n".join(lines)) from exc
