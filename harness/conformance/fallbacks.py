"""Which fallback implementations the agents run, named for the results' environment.

The agent is the only one who knows which implementation it picked, and says
so in its node record's ``backend``: ``IPIPImpl`` = ``userspace`` (no ipip
module: the TUN + raw-socket tunnel) and ``Encryption`` = ``wireguard``. The
WireGuard implementation (kernel link or wireguard-go) is read from
``backend.WireguardImpl`` when the agent publishes it; otherwise, on a netns
lab, from the kind of the node's ``wg-…`` link (``tun``: wireguard-go, since a
kernel WireGuard link has kind ``wireguard``).
"""

from __future__ import annotations

from typing import Any

from harness.conformance.labctl import Lab

USERSPACE_IPIP = "userspace IPIP (no ipip kernel module)"
WIREGUARD_GO = "wireguard-go (no wireguard kernel module)"


def _link_kind(lab: str, node: str, ifname: str) -> str | None:
    """The kind of ``ifname`` in the node's namespace (netns labs only), or None."""
    from pyroute2 import NetNS

    from harness.plan.naming import netns_name

    try:
        with NetNS(netns_name(lab, node)) as ns:
            links = ns.link("get", ifname=ifname)
    except Exception:  # no such namespace (another backend) or link: unknown
        return None
    for link in links:
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        return str(kind) if kind else "tun"  # TUN devices carry no kind attribute
    return None


def wireguard_impl(lab: Lab, node: str, backend: dict[str, Any]) -> str | None:
    """``kernel`` / ``wireguard-go`` for a node whose backend says Encryption wireguard."""
    if backend.get("Encryption") != "wireguard":
        return None
    if isinstance(backend.get("WireguardImpl"), str):
        return str(backend["WireguardImpl"])
    from harness.agent.wireguard import iface_name

    kind = _link_kind(lab.name, node, iface_name(node))
    if kind is None:
        return None
    return "kernel" if kind == "wireguard" else "wireguard-go"


def from_records(lab: Lab) -> list[str]:
    """Fallback names found in the cluster's node records (each once)."""
    found: list[str] = []
    for cluster in lab.clusters:
        for rec in lab.client(cluster).nodes():
            backend = (rec.model_extra or {}).get("backend")
            if not isinstance(backend, dict):
                continue
            names = []
            if backend.get("IPIPImpl") == "userspace":
                names.append(USERSPACE_IPIP)
            if wireguard_impl(lab, rec.name, backend) == "wireguard-go":
                names.append(WIREGUARD_GO)
            found += [n for n in names if n not in found]
    return found
