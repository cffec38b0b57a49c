"""Netlink work of the netns backend: links, addresses, routes, sysctls.

All through pyroute2. Veth pairs are created from one root-namespace socket
with each end placed straight into its target namespace (no renames, no
moves); per-namespace settings go through a socket opened inside that
namespace (see ``sysns.in_netns``), so fifty nodes cost fifty sockets, not
fifty helper processes. Root-namespace objects carry the lab's altname marker.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from harness.errors import Problem, UserError
from harness.lab import sysns
from harness.plan import naming
from harness.plan.model import NodePlan

SEGMENT_BRIDGE = "br0"  # the bridge's name inside its own namespace


def mgmt_conflicts(ipr: IPRoute, subnet: ipaddress.IPv4Network) -> list[str]:
    """Host routes and addresses (root netns) that overlap the lab's mgmt subnet."""
    found = []
    for route in ipr.get_routes(family=2):
        if route.get("table") not in (254, None) or route["dst_len"] == 0:
            continue
        dst = route.get_attr("RTA_DST")
        net = ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False)
        if net.overlaps(subnet):
            found.append(f"route {net}")
    for addr in ipr.get_addr(family=2):
        iface = ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
        if iface.network.overlaps(subnet) and iface.network.prefixlen > 0:
            found.append(f"address {iface} on {addr.get_attr('IFA_LABEL')}")
    return sorted(set(found))


def check_mgmt_free(ipr: IPRoute, lab: str, subnet: ipaddress.IPv4Network) -> None:
    """Refuse a management subnet the host already uses."""
    clashes = mgmt_conflicts(ipr, subnet)
    if clashes:
        raise UserError(
            [
                Problem(
                    file="",
                    where=f"lab {lab} mgmt",
                    message=f"management subnet {subnet} overlaps host {', '.join(clashes)}",
                    hint="choose a free subnet with `mgmt: {ipv4-subnet: 172.30.X.0/24}` "
                    "in the topology",
                )
            ]
        )


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(ifname)
    return int(found[0])


def mark(ipr: IPRoute, index: int, lab: str, suffix: str) -> None:
    """Give an interface the lab's altname marker (root-netns links, and ``lo`` of
    every lab namespace so ``cleanup`` can tell a lab's namespace from anyone else's)."""
    ipr.link("property_add", index=index, altname=f"{naming.altname(lab)}-{suffix}"[:127])


def has_mark(ipr: IPRoute, ifname: str, lab: str) -> bool:
    """True if ``ifname`` exists and carries this lab's marker."""
    try:
        link = ipr.link("get", ifname=ifname)[0]
    except NetlinkError:
        return False
    props = link.get_attr("IFLA_PROP_LIST")
    names = props.get_attrs("IFLA_ALT_IFNAME") if props else []
    return any(str(n).startswith(naming.altname(lab)) for n in names)


def create_mgmt_bridge(
    ipr: IPRoute, lab: str, gateway: ipaddress.IPv4Interface, mtu: int = 1500
) -> int:
    """The lab's management bridge in the root netns, with the host's gateway address."""
    name = naming.mgmt_bridge(lab)
    ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
    index = _index(ipr, name)
    mark(ipr, index, lab, "mgmt")
    _no_ipv6(name)
    ipr.addr("add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
    ipr.link("set", index=index, state="up")
    return index


def add_mgmt_veth(ipr: IPRoute, lab: str, host_end: str, netns: str, bridge: int) -> None:
    """Node ``eth0`` in ``netns``, its peer ``host_end`` enslaved to the mgmt bridge."""
    ipr.link("add", ifname=host_end, kind="veth", peer={"ifname": "eth0", "net_ns_fd": netns})
    index = _index(ipr, host_end)
    mark(ipr, index, lab, host_end)
    _no_ipv6(host_end)
    ipr.link("set", index=index, master=bridge, state="up")


def _no_ipv6(ifname: str) -> None:
    """Keep lab interfaces in the root netns silent on IPv6 (no SLAAC, no DAD chatter)."""
    path = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    if path.exists():
        path.write_text("1")


def add_veth(ipr: IPRoute, a: tuple[str, str], b: tuple[str, str], mtu: int) -> None:
    """A veth pair from (netns, ifname) ``a`` to (netns, ifname) ``b``, created in place."""
    ipr.link(
        "add",
        ifname=a[1],
        net_ns_fd=a[0],
        kind="veth",
        mtu=mtu,
        peer={"ifname": b[1], "net_ns_fd": b[0], "mtu": mtu},
    )


@contextmanager
def socket_in(netns: str) -> Iterator[IPRoute]:
    """An IPRoute socket bound to named netns ``netns`` (opened by a setns'd thread)."""
    with sysns.in_netns(sysns.netns_path(netns)):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def mark_netns(netns: str, lab: str) -> None:
    """Mark a fresh lab namespace as the lab's (altname on its ``lo``)."""
    with socket_in(netns) as ipr:
        mark(ipr, 1, lab, "lo")


def build_segment_bridge(netns: str, lab: str, mtu: int, ports: list[str]) -> None:
    """Inside a bridge segment's own netns: the bridge, its ports enslaved, all up."""
    with sysns.in_netns(sysns.netns_path(netns)):
        _write_sysctl("net/ipv6/conf/default/disable_ipv6", "1")
        ipr = IPRoute()
    with ipr:
        ipr.link("set", index=1, state="up")
        ipr.link("add", ifname=SEGMENT_BRIDGE, kind="bridge", mtu=mtu, br_stp_state=0)
        br = _index(ipr, SEGMENT_BRIDGE)
        mark(ipr, br, lab, SEGMENT_BRIDGE)
        for port in ports:
            index = _index(ipr, port)
            mark(ipr, index, lab, port)
            ipr.link("set", index=index, master=br, state="up")
        ipr.link("set", index=br, state="up")


def configure_node(netns: str, lab: str, node: NodePlan) -> None:
    """Addresses, routes and sysctls of one node, inside its namespace."""
    with sysns.in_netns(sysns.netns_path(netns)):
        _write_sysctl("net/ipv4/conf/all/rp_filter", "0")
        _write_sysctl("net/ipv4/conf/default/rp_filter", "0")
        _write_sysctl("net/ipv4/ip_forward", "1" if node.is_router else "0")
        ipr = IPRoute()
    with ipr:
        ipr.link("set", index=1, state="up")
        _addr_up(ipr, lab, "eth0", node.mgmt)
        for iface in node.interfaces:
            _addr_up(ipr, lab, iface.name, iface.address)  # None: up, unaddressed
        for route in node.routes:
            ipr.route(
                "replace",
                dst=str(route.dest),
                gateway=str(route.via),
                oif=_index(ipr, route.dev),
            )


def _addr_up(ipr: IPRoute, lab: str, ifname: str, address: ipaddress.IPv4Interface | None) -> None:
    index = _index(ipr, ifname)
    mark(ipr, index, lab, ifname)
    if address is not None:
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
    ipr.link("set", index=index, state="up")


def _write_sysctl(key: str, value: str) -> None:
    """Write a per-netns sysctl; only valid inside ``sysns.in_netns``."""
    Path("/proc/sys", key).write_text(value)


def delete_link(ipr: IPRoute, ifname: str, lab: str) -> bool:
    """Delete a root-netns link of this lab (marker checked); False if absent/not ours."""
    if not has_mark(ipr, ifname, lab):
        return False
    try:
        ipr.link("del", index=_index(ipr, ifname))
    except (NetlinkError, LookupError):
        return False
    return True


def marked_links(ipr: IPRoute) -> dict[str, list[str]]:
    """Links (of ``ipr``'s netns) carrying a podlab lab marker: lab tag -> ifnames."""
    found: dict[str, list[str]] = {}
    for link in ipr.get_links():
        props = link.get_attr("IFLA_PROP_LIST")
        for alt in props.get_attrs("IFLA_ALT_IFNAME") if props else []:
            if str(alt).startswith(naming.ALTNAME_MARK + "-"):
                tag = str(alt).split("-")[1]
                found.setdefault(tag, []).append(link.get_attr("IFLA_IFNAME"))
                break
    return found


def netns_tag(netns: str) -> str | None:
    """The lab tag marked on ``lo`` of named netns ``netns``, or None if unmarked."""
    return _tag_at(sysns.netns_path(netns))


def pid_netns_tag(pid: int) -> str | None:
    """The lab tag marked in the netns process ``pid`` lives in, or None."""
    return _tag_at(Path(f"/proc/{pid}/ns/net"))


def _tag_at(path: Path) -> str | None:
    try:
        with sysns.in_netns(path):
            ipr = IPRoute()
        with ipr:
            tags = marked_links(ipr)
    except OSError:
        return None
    return next(iter(tags), None)
