"""Subnet leases (IPAM): one /node_prefix of the cluster pod CIDR per node.

Like flanneld: a node claims a subnet by creating its key in an etcd transaction
(create_revision == 0), so two agents can never hold the same subnet; the key is
bound to an etcd lease that the agent keeps alive. A restarted agent first
reuses its etcd lease if still alive (state_dir/lease.json), then any subnet key
already naming it, then the subnet it had before, and only then picks a free one.
A node gone for good stops renewing; after the TTL its subnet key disappears and
peers drop its routes.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.agent.config import AgentConfig
from harness.store import Store, StoreError
from harness.store.keys import cluster_prefix, subnet_key

log = logging.getLogger("podlab.leases")

MAX_ATTEMPTS = 50


class LeaseError(Exception):
    """No subnet could be leased (pod CIDR exhausted or etcd unavailable)."""


@dataclass
class SubnetLease:
    """A node's subnet and the etcd lease that keeps it."""

    subnet: ipaddress.IPv4Network
    lease_id: int
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The first host address: cni0's address and the pods' default gateway."""
        return self.subnet.network_address + 1


def subnet_record(cfg: AgentConfig, subnet: ipaddress.IPv4Network, backend: dict[str, Any]) -> dict:
    """The JSON stored under ``subnets/<a.b.c.d-len>``."""
    return {
        "node": cfg.node,
        "subnet": str(subnet),
        "underlayIP": str(cfg.underlay_address),
        "segment": cfg.segment,
        "mode": cfg.mode,
        "backend": backend,
    }


def candidate_subnets(cfg: AgentConfig) -> list[ipaddress.IPv4Network]:
    """Every subnet a node may take; the first (network address) is skipped as flannel does."""
    return list(cfg.pod_cidr.subnets(new_prefix=cfg.node_prefix))[1:]


def _state_path(cfg: AgentConfig) -> Path:
    return cfg.state_dir / "lease.json"


def _load_state(cfg: AgentConfig) -> dict[str, Any]:
    try:
        return dict(json.loads(_state_path(cfg).read_text()))
    except (OSError, ValueError):
        return {}


def _save_state(cfg: AgentConfig, lease: SubnetLease) -> None:
    data = {"subnet": str(lease.subnet), "lease_id": lease.lease_id}
    atomic_write(_state_path(cfg), json.dumps(data) + "\n")


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _etcd_lease(store: Store, cfg: AgentConfig, state: dict[str, Any]) -> int:
    """Reuse the previous run's etcd lease while it lives, else grant a new one."""
    old = int(state.get("lease_id", 0) or 0)
    if old:
        try:
            if store.refresh(old) > 0:
                log.info("reusing etcd lease %x from the previous run", old)
                return old
        except StoreError:
            pass
    return store.grant(cfg.lease_ttl_s)


def acquire(store: Store, cfg: AgentConfig, backend: dict[str, Any]) -> SubnetLease:
    """Lease (or re-lease) this node's subnet; see the module docstring for the order."""
    state = _load_state(cfg)
    lease_id = _etcd_lease(store, cfg, state)
    prefix = cluster_prefix(cfg.cluster) + "subnets/"
    for _ in range(MAX_ATTEMPTS):
        kvs, _rev = store.get_prefix(prefix)
        taken: dict[str, Any] = {}
        for kv in kvs:
            try:
                taken[kv.key] = kv.json()
            except ValueError:
                taken[kv.key] = {}
        mine = [kv for kv in kvs if taken[kv.key].get("node") == cfg.node]
        for kv in mine[1:]:  # a crash mid-claim could leave two: keep one
            store.delete(kv.key)
        if mine:
            subnet = ipaddress.IPv4Network(taken[mine[0].key]["subnet"])
            rec = subnet_record(cfg, subnet, backend)
            if store.replace_if(mine[0].key, json.dumps(rec), mine[0].mod_revision, lease_id):
                log.info("reclaimed subnet %s (already leased to %s)", subnet, cfg.node)
                return _done(cfg, SubnetLease(subnet, lease_id, rec))
            continue
        wanted = _pick(cfg, state, set(taken))
        if wanted is None:
            raise LeaseError(f"pod CIDR {cfg.pod_cidr} has no free /{cfg.node_prefix} left")
        rec = subnet_record(cfg, wanted, backend)
        if store.create(subnet_key(cfg.cluster, str(wanted)), json.dumps(rec), lease_id):
            log.info("leased subnet %s from %s", wanted, cfg.pod_cidr)
            return _done(cfg, SubnetLease(wanted, lease_id, rec))
        log.debug("subnet %s taken concurrently; retrying", wanted)
    raise LeaseError(f"gave up leasing a subnet after {MAX_ATTEMPTS} contended attempts")


def _pick(cfg: AgentConfig, state: dict[str, Any], taken: set[str]) -> ipaddress.IPv4Network | None:
    """The previous subnet if still free, else a random free one (spreads contention)."""
    free = [s for s in candidate_subnets(cfg) if subnet_key(cfg.cluster, str(s)) not in taken]
    if not free:
        return None
    prev = state.get("subnet")
    if prev and ipaddress.IPv4Network(prev) in free:
        return ipaddress.IPv4Network(prev)
    return random.choice(free)


def _done(cfg: AgentConfig, lease: SubnetLease) -> SubnetLease:
    _save_state(cfg, lease)
    return lease


def renew(store: Store, cfg: AgentConfig, lease: SubnetLease, backend: dict[str, Any]) -> bool:
    """Keep the lease alive; if it expired, re-claim the subnet. True if it had expired."""
    if store.refresh(lease.lease_id) > 0:
        key = subnet_key(cfg.cluster, str(lease.subnet))
        if store.get(key) is not None:
            return False
        log.warning("subnet key %s vanished although the lease lives; re-claiming", key)
    else:
        log.warning("etcd lease %x expired; re-claiming subnet %s", lease.lease_id, lease.subnet)
    fresh = acquire(store, cfg, backend)
    lease.subnet, lease.lease_id, lease.record = fresh.subnet, fresh.lease_id, fresh.record
    return True


def subnet_env(cfg: AgentConfig, lease: SubnetLease, mtu: int) -> str:
    """subnet.env in flannel's format (FLANNEL_SUBNET is the gateway address/prefix)."""
    return (
        f"FLANNEL_NETWORK={cfg.pod_cidr}\n"
        f"FLANNEL_SUBNET={lease.gateway}/{lease.subnet.prefixlen}\n"
        f"FLANNEL_MTU={mtu}\n"
        "FLANNEL_IPMASQ=true\n"
    )


def write_subnet_env(cfg: AgentConfig, lease: SubnetLease, mtu: int) -> Path:
    path = cfg.run_dir / "subnet.env"
    atomic_write(path, subnet_env(cfg, lease, mtu))
    return path
