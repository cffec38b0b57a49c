"""A link between two netns labs, for ``podlab mesh join`` (docs/mesh.md, ADR 0015).

Two netns labs are separate sets of namespaces: nothing carries a packet from
one lab's underlay to the other's. ``podlab mesh join A B --link RA:RB`` adds one
veth pair between router RA of lab A and router RB of lab B — both ends inside
the labs' own namespaces, never the root namespace — addressed from a small
link subnet, and static routes (protocol ``JOIN_PROTO``) so that every node of
each lab reaches the other lab's underlay through its router. Deleting either
router's namespace (``podlab down``) deletes the veth pair with it.

Everything here reads the kernel rather than a plan: which subnets a lab's
underlay has (what its router reaches, management excluded) and how each node
reaches its router (``ip route get``), so a join needs only the two running labs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pyroute2.netlink.exceptions import NetlinkError

from harness.lab import links
from harness.plan import naming

#: Routes ``podlab mesh join`` adds (the agent owns 77 and 78; ``podlab up`` uses static).
JOIN_PROTO = 79
MGMT_IF = "eth0"
LINK_SPACE = ipaddress.IPv4Network("100.64.0.0/16")  # shared address space (RFC 6598)


def _v4(msg: object, attr: str) -> str | None:
    value = msg.get_attr(attr)  # type: ignore[attr-defined]
    return str(value) if value else None


def underlay_subnets(netns: str) -> list[ipaddress.IPv4Network]:
    """Every underlay subnet the router in ``netns`` reaches: its connected subnets
    (but management) and its static routes; pod routes (BGP, the agent's) left out."""
    out: set[ipaddress.IPv4Network] = set()
    with links.socket_in(netns) as ipr:
        mgmt = set(ipr.link_lookup(ifname=MGMT_IF))
        for r in ipr.get_routes(family=2, table=254):
            dst = _v4(r, "RTA_DST")
            if dst is None or r.get_attr("RTA_OIF") in mgmt:
                continue
            if r["proto"] in (2, 4):  # kernel (connected), static (podlab up's routes)
                out.add(ipaddress.IPv4Network(f"{dst}/{r['dst_len']}"))
    return sorted(out)


def next_hop(netns: str, towards: ipaddress.IPv4Address) -> tuple[str, str]:
    """(gateway, device) a node uses to reach ``towards``; the gateway is ``towards``
    itself when it is on one of the node's own segments."""
    with links.socket_in(netns) as ipr:
        (route,) = ipr.route("get", dst=str(towards))
        dev = ipr.link("get", index=route.get_attr("RTA_OIF"))[0].get_attr("IFLA_IFNAME")
    return _v4(route, "RTA_GATEWAY") or str(towards), str(dev)


def link_name(peer_lab: str) -> str:
    """The join link's name in a router of this lab: ``pj<tag of the peer lab>``."""
    name = f"pj{naming.lab_tag(peer_lab)}"
    assert len(name) <= naming.IFNAMSIZ
    return name


def free_subnet(taken: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first /30 of ``LINK_SPACE`` that overlaps nothing in ``taken``."""
    used = list(taken)
    for net in LINK_SPACE.subnets(new_prefix=30):
        if not any(net.overlaps(t) for t in used):
            return net
    raise LookupError(f"no free /30 left in {LINK_SPACE}")


def build(
    a: tuple[str, str, str], b: tuple[str, str, str], subnet: ipaddress.IPv4Network, mtu: int
) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
    """The veth pair between ``a`` = (netns, ifname, lab) and ``b``; first and second
    host address of ``subnet`` on them; both up. Returns the two addresses."""
    hosts = list(subnet.hosts())
    addr = (
        ipaddress.IPv4Interface(f"{hosts[0]}/{subnet.prefixlen}"),
        ipaddress.IPv4Interface(f"{hosts[1]}/{subnet.prefixlen}"),
    )
    with links.socket_in(a[0]) as ipr:
        links.add_veth(ipr, (a[0], a[1]), (b[0], b[1]), mtu)
    for (netns, ifname, lab), address in zip((a, b), addr, strict=True):
        with links.socket_in(netns) as ipr:
            index = ipr.link_lookup(ifname=ifname)[0]
            links.mark(ipr, index, lab, ifname)
            ipr.addr("add", index=index, address=str(address.ip), prefixlen=subnet.prefixlen)
            ipr.link("set", index=index, state="up")
    return addr


def delete(netns: str, ifname: str) -> bool:
    """Delete the join link (both ends go); False if it is not there."""
    try:
        with links.socket_in(netns) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return False
            ipr.link("del", index=found[0])
    except (OSError, NetlinkError):
        return False
    return True


def add_routes(netns: str, dests: Iterable[str], via: str, dev: str) -> None:
    """``<dest> via <via> dev <dev> proto 79`` for every destination (replace)."""
    with links.socket_in(netns) as ipr:
        oif = ipr.link_lookup(ifname=dev)[0]
        for dst in dests:
            ipr.route("replace", dst=dst, gateway=via, oif=oif, proto=JOIN_PROTO)


def delete_routes(netns: str, dests: Iterable[str]) -> None:
    """Remove the join's routes to ``dests`` (only ours: protocol 79); absent is fine."""
    wanted = {ipaddress.IPv4Network(d) for d in dests}
    try:
        with links.socket_in(netns) as ipr:
            for r in ipr.get_routes(family=2, table=254, proto=JOIN_PROTO):
                dst = _v4(r, "RTA_DST")
                if dst and ipaddress.IPv4Network(f"{dst}/{r['dst_len']}") in wanted:
                    ipr.route("del", dst=f"{dst}/{r['dst_len']}", proto=JOIN_PROTO)
    except OSError:
        pass  # the namespace is gone: so are its routes
