"""The userspace IPIP fallback between two node namespaces, checked on the wire.

Each node gets a 'pod' address on a dummy device (10.244.<i>.1) and an
``IpipTunnel`` created inside its namespace; the peer's pod subnet is routed
``dev tunl-pl``. Pings between the pod addresses must work only once the peer
tables say where each subnet lives, and a capture on the underlay must show them
as IP protocol 4 packets between the underlay addresses carrying the ICMP inside.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from harness.agent import ipip_tun
from harness.testlab.calnet import CalNet, ip_packets, ping

pytestmark = [pytest.mark.root, pytest.mark.integration]

A = ipaddress.IPv4Address
N = ipaddress.IPv4Network


def pod_ip(i: int) -> str:
    return f"10.244.{i}.1"


def tunnel(net: CalNet, i: int) -> ipip_tun.IpipTunnel:
    """An IpipTunnel born in node ``i``'s namespace, routing the other node's subnet."""
    net.pod_address(i, pod_ip(i))

    def make() -> ipip_tun.IpipTunnel:
        ipr = IPRoute()  # created on the thread that entered the node's namespace
        t = ipip_tun.IpipTunnel(
            ipr, A(net.ip(i)), ipaddress.IPv4Interface(f"10.244.{i}.0/32"), underlay_mtu=1500
        )
        t.start()
        other = 3 - i
        ipr.route("replace", dst=f"10.244.{other}.0/24", oif=ipr.link_lookup(ifname=t.device)[0])
        return t

    t = net.in_netns(i, make)
    net.cleanups.append(t.ipr.close)
    net.cleanups.append(t.close)
    return t


def test_userspace_ipip_carries_pings_as_protocol_4() -> None:
    with CalNet(2) as net:
        t1, t2 = tunnel(net, 1), tunnel(net, 2)
        with IPRoute(netns=net.ns(1)) as ipr:
            dev = ipr.get_links(ipr.link_lookup(ifname="tunl-pl")[0])[0]
            assert dev.get_attr("IFLA_MTU") == 1480  # underlay 1500 - 20

        # no peers known yet: packets reach the TUN device but go nowhere
        assert not ping(net, 1, pod_ip(2), count=1, src=pod_ip(1))
        assert t1.stats["no_peer"] >= 1 and t1.stats["tx"] == 0

        t1.set_peers({N("10.244.2.0/24"): A(net.ip(2))})
        t2.set_peers({N("10.244.1.0/24"): A(net.ip(1))})
        cap = net.capture(1, "ipip")
        assert ping(net, 1, pod_ip(2), count=3, src=pod_ip(1))
        cap.stop()
        assert t1.stats["tx"] >= 3 and t1.stats["rx"] >= 3
        assert t2.stats["tx"] >= 3 and t2.stats["rx"] >= 3

        outer = [p for p in ip_packets(cap.path) if p.proto == ipip_tun.IPPROTO_IPIP]
        pairs = {(p.src, p.dst) for p in outer}
        assert pairs == {(net.ip(1), net.ip(2)), (net.ip(2), net.ip(1))}, pairs
        inner = [p.payload for p in outer]
        assert {(q.src, q.dst, q.proto) for q in inner} == {
            (pod_ip(1), pod_ip(2), 1),
            (pod_ip(2), pod_ip(1), 1),
        }
        assert len(outer) >= 6
        # nothing of the pod traffic travels unencapsulated
        plain = [p for p in ip_packets(cap.path) if p.dst in (pod_ip(1), pod_ip(2))]
        assert plain == []

        # the table is live: forgetting the peer stops the traffic again
        t1.set_peers({})
        before = t1.stats["no_peer"]
        assert not ping(net, 1, pod_ip(2), count=1, src=pod_ip(1))
        assert t1.stats["no_peer"] > before
        assert t1.peers() == {}
        assert t2.peers() == {N("10.244.1.0/24"): A(net.ip(1))}


def test_packets_from_unknown_sources_are_dropped() -> None:
    with CalNet(2) as net:
        t1, t2 = tunnel(net, 1), tunnel(net, 2)
        t1.set_peers({N("10.244.2.0/24"): A(net.ip(2))})
        t2.set_peers({N("10.244.9.0/24"): A("10.198.0.9")})  # does not know node 1
        assert not ping(net, 1, pod_ip(2), count=2, src=pod_ip(1))
        assert t2.stats["unknown_source"] >= 1 and t2.stats["rx"] == 0


def test_kernel_probe_leaves_nothing_behind() -> None:
    with CalNet(1) as net:

        def probe() -> tuple[bool, list[str]]:
            with IPRoute() as ipr:
                found = ipip_tun.kernel_ipip_available(ipr)
                return found, [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]

        found, links = net.in_netns(1, probe)
        assert ipip_tun.PROBE_LINK not in links
        # whatever the answer, it agrees with the kernel: the module is there iff usable
        assert found == Path("/sys/module/ipip").exists()
