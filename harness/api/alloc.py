"""ClusterIP and nodePort allocation at apply time, collision-free through etcd.

Every allocated address or node port also gets an index key
(``/podlab/v1/<cluster>/serviceips/<ip>``, ``/nodeports/<port>-<proto>``)
written in the same transaction as the Service and guarded by "must not exist"
(create_revision 0). Two concurrent applies that picked the same address
cannot both commit: the loser re-reads and picks again (``ApiClient.apply``
retries). ``.10`` of the service CIDR is kept for kube-dns (kube-system/kube-dns
may claim it explicitly), as kubeadm does.

Pure apart from the ``KV`` values handed in: no etcd calls here.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from harness.api.netobjects import NODE_PORT_RANGE, Service
from harness.store import KV, Write
from harness.store.keys import nodeport_key, serviceip_key

DEFAULT_SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/16")  # the agent's default too
DNS_SERVICE = ("kube-system", "kube-dns")


def dns_ip(cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The kube-dns ClusterIP: the CIDR's 10th address (10.96.0.10)."""
    return cidr.network_address + 10


@dataclass
class Allocator:
    """Free ClusterIPs and node ports of one cluster, as read before an apply."""

    cluster: str
    cidr: ipaddress.IPv4Network
    ips: dict[str, str] = field(default_factory=dict)  # ip → "ns/name" of its owner
    ports: dict[tuple[int, str], str] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)

    @classmethod
    def from_entries(cls, cluster: str, cidr: ipaddress.IPv4Network, index: list[KV]) -> Allocator:
        """Build from the index keys under ``serviceips/`` and ``nodeports/``."""
        alloc = cls(cluster, cidr)
        for e in index:
            tail = e.key.rsplit("/", 1)[-1]
            owner = e.value.decode(errors="replace")
            if "/serviceips/" in e.key:
                alloc.ips[tail] = owner
            else:
                port, _, proto = tail.partition("-")
                if port.isdigit():
                    alloc.ports[(int(port), proto.upper())] = owner
        return alloc

    def assign(self, svc: Service, new: dict[str, Any], old: dict[str, Any] | None) -> str | None:
        """Fill clusterIP and nodePorts into ``new`` (stored JSON); a problem text or None."""
        owner = f"{svc.metadata.namespace}/{svc.metadata.name}"
        spec = new.setdefault("spec", {})
        ospec = (old or {}).get("spec", {})
        if svc.spec.type != "ExternalName" and not svc.spec.headless:
            problem = self._assign_ip(owner, spec, ospec)
            if problem:
                return problem
        if svc.spec.type == "NodePort":
            return self._assign_ports(owner, spec, ospec)
        return None

    def _assign_ip(self, owner: str, spec: dict[str, Any], ospec: dict[str, Any]) -> str | None:
        wanted = spec.get("clusterIP") or ""
        kept = ospec.get("clusterIP") or ""
        if kept and kept != "None" and wanted in ("", kept):
            spec["clusterIP"] = kept
            return None
        if kept and kept != "None":
            return f"clusterIP cannot change from {kept} to {wanted} (delete the service first)"
        if wanted:
            addr = ipaddress.IPv4Address(wanted)
            if addr not in self.cidr or addr in (self.cidr.network_address, self.cidr[-1]):
                return f"clusterIP {wanted} is not a usable address of {self.cidr}"
            if addr == dns_ip(self.cidr) and owner != "/".join(DNS_SERVICE):
                return f"clusterIP {wanted} is reserved for kube-system/kube-dns"
            if self.ips.get(wanted, owner) != owner:
                return f"clusterIP {wanted} is already used by service {self.ips[wanted]}"
            self._take_ip(owner, wanted)
            return None
        for addr in self.cidr.hosts():
            text = str(addr)
            if text not in self.ips and addr != dns_ip(self.cidr):
                spec["clusterIP"] = text
                self._take_ip(owner, text)
                return None
        return f"the service CIDR {self.cidr} has no free address left"

    def _take_ip(self, owner: str, ip: str) -> None:
        self.ips[ip] = owner
        self.writes.append(Write(serviceip_key(self.cluster, ip), owner.encode(), 0))

    def _assign_ports(self, owner: str, spec: dict[str, Any], ospec: dict[str, Any]) -> str | None:
        before = {
            (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
            for p in ospec.get("ports", [])
        }
        low, high = NODE_PORT_RANGE
        for p in spec.get("ports", []):
            proto = p.get("protocol", "TCP")
            wanted = p.get("nodePort") or before.get((p["port"], proto))
            if wanted:
                holder = self.ports.get((wanted, proto), owner)
                if holder != owner:
                    return f"nodePort {wanted}/{proto} is already used by service {holder}"
            else:
                free = (n for n in range(low, high + 1) if (n, proto) not in self.ports)
                wanted = next(free, None)
                if wanted is None:
                    return f"no free {proto} node port left in {low}-{high}"
            p["nodePort"] = wanted
            if (wanted, proto) not in self.ports:
                self.ports[(wanted, proto)] = owner
                key = nodeport_key(self.cluster, wanted, proto)
                self.writes.append(Write(key, owner.encode(), 0))
        return None


def released(cluster: str, stored: dict[str, Any]) -> list[str]:
    """Index keys a deleted Service frees (its ClusterIP and node ports)."""
    spec = stored.get("spec", {})
    keys = []
    ip = spec.get("clusterIP")
    if ip and ip != "None":
        keys.append(serviceip_key(cluster, ip))
    for p in spec.get("ports", []):
        if p.get("nodePort"):
            keys.append(nodeport_key(cluster, p["nodePort"], p.get("protocol", "TCP")))
    return keys


def load(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
