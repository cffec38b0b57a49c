"""Address assignment: L2 segments, their subnets and hosts, and management.

Explicit ``ipv4:`` on links always wins. Everything else is assigned
deterministically from fixed pools in declaration order, so the same file
always yields the same plan.
"""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from harness.errors import Collector
from harness.plan.model import DEFAULT_MTU, Segment
from harness.topology import Topology

UNDERLAY_POOL = IPv4Network("10.100.0.0/16")  # /24 per bridge segment
P2P_POOL = IPv4Network("10.101.0.0/16")  # /30 per point-to-point link
MGMT_POOL = IPv4Network("172.29.0.0/16")  # /24 per lab unless mgmt.ipv4-subnet is given
CLAB_DEFAULT_MTU = 9500  # containerlab's default veth MTU (plain containerlab files)


def assign_segments(
    topo: Topology, c: Collector
) -> tuple[dict[str, Segment], dict[tuple[str, str], IPv4Interface | None]]:
    """Group link endpoints into L2 segments and give every endpoint an address.

    A plain containerlab file (``topo.plain``) gets only the addresses its links'
    ``ipv4:`` ask for, as containerlab itself assigns none: an endpoint without
    one stays unaddressed (its ``exec:`` usually adds one), a segment nobody
    addressed has no subnet.
    """
    members: dict[str, list[tuple[str, str, IPv4Interface | None, int, int | None]]] = {}
    mtus: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    for link in topo.links:
        a, b = link.endpoints
        ka, kb = topo.nodes[a.node].kind, topo.nodes[b.node].kind
        # containerlab's own default link MTU is 9500; podlab's cluster labs keep 1500
        mtu = link.mtu or (CLAB_DEFAULT_MTU if topo.plain else DEFAULT_MTU)
        if ka == "bridge" and kb == "bridge":
            c.add(
                f"topology.links[{link.index}]",
                "a link between two bridges is not supported",
                "merge the bridges into one kind: bridge node",
                link.line,
            )
            continue
        if "bridge" in (ka, kb):
            bridge, ep = (a, b) if ka == "bridge" else (b, a)
            seg, kinds[bridge.node] = bridge.node, "bridge"
            members.setdefault(seg, []).append(
                (ep.node, ep.interface, ep.ipv4, link.index, link.line)
            )
        else:
            seg = f"{a.node}-{b.node}"
            if seg in members:
                seg = f"{seg}-{link.index}"
            kinds[seg] = "p2p"
            members[seg] = [
                (ep.node, ep.interface, ep.ipv4, link.index, link.line) for ep in (a, b)
            ]
        mtus.setdefault(seg, []).append(mtu)
    taken = [ep[2].network for eps in members.values() for ep in eps if ep[2] is not None]
    segments: dict[str, Segment] = {}
    addresses: dict[tuple[str, str], IPv4Interface | None] = {}
    pools = {"bridge": _subnets(UNDERLAY_POOL, 24, taken), "p2p": _subnets(P2P_POOL, 30, taken)}
    for name, eps in members.items():
        explicit = {ep[2].network for ep in eps if ep[2] is not None}
        if len(explicit) > 1:
            c.add(
                f"segment {name}",
                f"addresses on one L2 segment are in different subnets "
                f"({', '.join(sorted(map(str, explicit)))})",
                "put every address of the segment in one subnet",
                eps[0][4],
            )
            continue
        if topo.plain and not explicit:
            for node, iface, *_ in eps:
                addresses[(node, iface)] = None
            segments[name] = Segment(
                name, kinds[name], None, min(mtus[name]), tuple((ep[0], ep[1]) for ep in eps)
            )
            continue
        subnet = explicit.pop() if explicit else next(pools[kinds[name]])
        used = {ep[2].ip for ep in eps if ep[2] is not None}
        hosts = (h for h in subnet.hosts() if h not in used)
        for node, iface, ip, index, line in _ordered(eps, topo):
            if ip is None and topo.plain:
                addresses[(node, iface)] = None  # the file addressed the other end only
                continue
            if ip is None:
                host = next(hosts, None)
                if host is None:
                    c.add(
                        f"topology.links[{index}]",
                        f"subnet {subnet} of segment {name} is full",
                        "use a larger subnet",
                        line,
                    )
                    break
                ip = IPv4Interface(f"{host}/{subnet.prefixlen}")
            elif (
                ip.ip in (subnet.network_address, subnet.broadcast_address)
                and subnet.prefixlen < 31
            ):
                c.add(
                    f"topology.links[{index}]",
                    f"{ip} is not a host address",
                    "use an address between the network and broadcast addresses",
                    line,
                )
            addresses[(node, iface)] = ip
        segments[name] = Segment(
            name, kinds[name], subnet, min(mtus[name]), tuple((ep[0], ep[1]) for ep in eps)
        )
    return segments, addresses


def _ordered(eps: list, topo: Topology) -> list:
    """Routers first (they take the low addresses, like gateways), then file order."""

    def key(ep: tuple) -> tuple[int, int]:
        role = topo.nodes[ep[0]].labels.get("podlab.role")
        return (0 if role == "router" else 1, topo.nodes[ep[0]].index)

    return sorted(eps, key=key)


def _subnets(pool: IPv4Network, prefix: int, taken: list[IPv4Network]):  # type: ignore[no-untyped-def]
    for net in pool.subnets(new_prefix=prefix):
        if not any(net.overlaps(t) for t in taken):
            yield net


def mgmt_plan(
    topo: Topology, c: Collector
) -> tuple[IPv4Network, IPv4Interface, dict[str, IPv4Interface]]:
    """The lab's management subnet, the host's gateway address on it, and node addresses."""
    subnet = topo.mgmt_subnet or _default_mgmt(topo.name)
    gw = IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")
    if topo.mgmt_gateway:  # containerlab's mgmt.ipv4-gw: the host's address on it
        try:
            given: IPv4Address | None = IPv4Address(topo.mgmt_gateway)
        except ValueError:
            given = None
        ends = (subnet.network_address, subnet.broadcast_address)
        if given is None or given not in subnet or given in ends:
            c.add(
                "mgmt.ipv4-gw",
                f"{topo.mgmt_gateway!r} is not a host address of the management subnet {subnet}",
                f"use an address in {subnet} (default {gw.ip}), or set mgmt.ipv4-subnet",
                topo.line("mgmt", "ipv4-gw"),
            )
        else:
            gw = IPv4Interface(f"{given}/{subnet.prefixlen}")
    hosts = [h for h in subnet.hosts() if h != gw.ip]
    if topo.mgmt_range:  # containerlab's (docker's) ip-range: where dynamic addresses come from
        hosts = _mgmt_range(topo, subnet, hosts, c)
    linux = [n for n in topo.nodes.values() if n.kind == "linux"]
    fixed: dict[str, IPv4Address] = {}
    for n in linux:
        if n.mgmt_ipv4:
            where = f"node {n.clab_name or n.name}"
            line = topo.line("topology", "nodes", n.clab_name or n.name, "mgmt-ipv4")
            try:
                ip = IPv4Address(n.mgmt_ipv4)
            except ValueError:
                c.add(
                    where,
                    f"mgmt-ipv4 {n.mgmt_ipv4!r} is not an IPv4 address",
                    "write it like 172.20.20.11",
                    line,
                )
                continue
            origin = "mgmt.ipv4-subnet" if topo.mgmt_subnet else "the lab's default"
            if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
                c.add(
                    where,
                    f"mgmt-ipv4 {ip} is outside the management subnet {subnet} ({origin})",
                    f"use a host address in {subnet}, or set mgmt.ipv4-subnet to a "
                    "subnet that holds it",
                    line,
                )
            elif ip == gw.ip:
                c.add(
                    where,
                    f"mgmt-ipv4 {ip} is the management gateway (the host's address)",
                    f"use another host address in {subnet}",
                    line,
                )
            other = next((k for k, v in fixed.items() if v == ip), None)
            if other is not None:
                shown = topo.nodes[other].clab_name or other
                c.add(
                    where,
                    f"mgmt-ipv4 {ip} is also node {shown}'s",
                    "give every node its own management address",
                    line,
                )
            fixed[n.name] = ip
    free = iter(h for h in hosts if h not in fixed.values())
    out: dict[str, IPv4Interface] = {}
    for n in linux:
        chosen = fixed.get(n.name) or next(free, None)
        if chosen is None:
            where = "mgmt.ipv4-range" if topo.mgmt_range else "mgmt.ipv4-subnet"
            c.add(
                where,
                f"{topo.mgmt_range or subnet} has too few addresses for {len(linux)} nodes",
                f"set a larger {where}",
                topo.line(*where.split(".")) if topo.mgmt_range else None,
            )
            break
        out[n.name] = IPv4Interface(f"{chosen}/{subnet.prefixlen}")
    return subnet, gw, out


def _mgmt_range(
    topo: Topology, subnet: IPv4Network, hosts: list[IPv4Address], c: Collector
) -> list[IPv4Address]:
    """The hosts of ``mgmt.ipv4-range`` (a prefix inside the management subnet), for
    nodes without ``mgmt-ipv4``; a node's fixed address may lie outside it, as with
    docker. Refused, at its line, when it is no prefix or not inside the subnet."""
    line = topo.line("mgmt", "ipv4-range")
    try:
        pool = IPv4Network(str(topo.mgmt_range), strict=True)
    except ValueError:
        c.add(
            "mgmt.ipv4-range",
            f"{topo.mgmt_range!r} is not an IPv4 prefix (host bits set?)",
            "write it like 172.20.20.128/25",
            line,
        )
        return hosts
    if not pool.subnet_of(subnet):
        origin = "mgmt.ipv4-subnet" if topo.mgmt_subnet else "the lab's default"
        c.add(
            "mgmt.ipv4-range",
            f"{pool} is not inside the management subnet {subnet} ({origin})",
            f"use a prefix inside {subnet}, or set mgmt.ipv4-subnet to a subnet that holds it",
            line,
        )
        return hosts
    return [h for h in hosts if h in pool]


def _default_mgmt(lab: str) -> IPv4Network:
    """A per-lab /24 from MGMT_POOL chosen by a hash of the name (stable across runs)."""
    index = int(hashlib.sha256(lab.encode()).hexdigest(), 16) % 256
    return list(MGMT_POOL.subnets(new_prefix=24))[index]
