"""WireGuard between two node namespaces: encrypted on the wire, marker only in clear.

Each node gets a 'pod' address on lo (10.244.<i>.1). The negative control routes
the other node's /24 straight over the underlay (host-gw style) and a capture of
node 1's underlay port MUST contain the marker string the pings carry; then the
same pings go through WireGuard (kernel where available, else wireguard-go) and
the capture must hold only UDP to/from the WireGuard port between the underlay
addresses, and never the marker.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from harness.agent import wireguard as wg
from harness.testlab.calnet import CalNet, ip_packets, ping

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("wg") is None, reason="wireguard-tools not installed"),
]

MARKER = b"PODLAB-MARK-0042"  # 16 bytes: what ping -p can repeat in its payload
A = ipaddress.IPv4Address
N = ipaddress.IPv4Network


def pod_ip(i: int) -> str:
    return f"10.244.{i}.1"


def route(net: CalNet, i: int, **how: object) -> None:
    with IPRoute(netns=net.ns(i)) as ipr:
        ipr.route("replace", dst=f"10.244.{3 - i}.0/24", **how)


def marker_ping(net: CalNet) -> bool:
    return ping(net, 1, pod_ip(2), count=3, src=pod_ip(1), pattern=MARKER.hex())


def wireguards(net: CalNet) -> list[wg.WireGuard]:
    """One WireGuard per node, named after the node's namespace: wireguard-go sockets
    live in the shared /var/run/wireguard, so names must differ between test runs."""
    out = []
    for i in (1, 2):
        ipr = IPRoute(netns=net.ns(i))
        net.cleanups.append(ipr.close)
        w = wg.WireGuard(
            ipr, net.ns(i), net.tmp / f"n{i}/state", net.tmp / f"n{i}/run", netns=net.ns(i)
        )
        net.cleanups.append(w.down)
        out.append(w)
    return out


def test_wireguard_hides_the_marker_that_plain_routing_shows() -> None:
    with CalNet(2) as net:
        for i in (1, 2):
            net.pod_address(i, pod_ip(i))
            route(net, i, gateway=net.ip(3 - i))  # plain routing over the underlay

        cap = net.capture(1, "plain")
        assert marker_ping(net), "plain routing between the node namespaces does not work"
        assert MARKER in cap.stop(), "negative control: the marker must be visible in clear"

        w1, w2 = wireguards(net)
        pubs = [w.up(mtu=wg.mtu_for(1500)) for w in (w1, w2)]
        for i, w in ((1, w1), (2, w2)):
            o = 3 - i
            w.set_peers(
                [
                    wg.PeerSpec(
                        pubs[o - 1], (A(net.ip(o)), wg.DEFAULT_PORT), (N(f"10.244.{o}.0/24"),)
                    )
                ]
            )
            with IPRoute(netns=net.ns(i)) as ipr:
                route(net, i, oif=ipr.link_lookup(ifname=w.name)[0])

        cap = net.capture(1, "wireguard")
        assert marker_ping(net), f"pings through WireGuard ({w1.kind}) fail"
        raw = cap.stop()
        assert MARKER not in raw, "the marker crossed the underlay in clear"
        between = {net.ip(1), net.ip(2)}
        node_traffic = [p for p in ip_packets(cap.path) if {p.src, p.dst} == between]
        assert len(node_traffic) >= 6  # 3 requests + 3 replies, plus the handshake
        odd = [
            p.summary()
            for p in node_traffic
            if p.proto != 17 or wg.DEFAULT_PORT not in (p.sport, p.dport)
        ]
        assert odd == [], f"non-WireGuard packets between the nodes: {odd}"

        st = w1.show()
        (peer,) = st.peers
        assert peer.public_key == pubs[1] and peer.latest_handshake_s > 0 and peer.rx_bytes > 0
        assert st.public_key == pubs[0] and st.listen_port == wg.DEFAULT_PORT
        with IPRoute(netns=net.ns(1)) as ipr:
            link = ipr.get_links(ipr.link_lookup(ifname=w1.name)[0])[0]
            assert link.get_attr("IFLA_MTU") == 1440

        w1.set_peers([])  # removing the peer cuts the path
        assert w1.show().peers == ()
        assert not ping(net, 1, pod_ip(2), count=1, src=pod_ip(1))


def test_keys_stay_on_the_node_and_survive_restarts() -> None:
    with CalNet(2) as net:
        w1, _ = wireguards(net)
        pub = w1.up(mtu=1440)
        key = net.tmp / "n1/state/wireguard/private.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
        secret = key.read_text().strip()
        assert secret not in pub and wg.public_key(key) == pub
        # the running daemon was never given the key in argv
        pid = w1.userspace_pid() if w1.kind == "wireguard-go" else None
        if pid is not None:
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        # a second up() (agent restart) reuses key, interface and daemon
        again = wg.WireGuard(
            w1.ipr, net.ns(1), net.tmp / "n1/state", net.tmp / "n1/run", netns=net.ns(1)
        )
        assert again.up(mtu=1440) == pub
        assert again.userspace_pid() == pid
        assert again.kind == w1.kind
        # loose permissions are tightened
        os.chmod(key, 0o644)
        wg.ensure_private_key(net.tmp / "n1/state")
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_down_stops_wireguard_go_and_removes_the_interface() -> None:
    with CalNet(1) as net:
        ipr = IPRoute(netns=net.ns(1))
        net.cleanups.append(ipr.close)
        w = wg.WireGuard(ipr, net.ns(1), net.tmp / "s", net.tmp / "r", netns=net.ns(1))
        net.cleanups.append(w.down)
        w.up(mtu=1440)
        pid = w.userspace_pid()
        w.down()
        assert ipr.link_lookup(ifname=w.name) == []
        assert w.userspace_pid() is None
        if pid is not None:
            assert not Path(f"/proc/{pid}").exists()  # stopped and reaped
        assert not (wg.SOCKET_DIR / f"{w.name}.sock").exists()
