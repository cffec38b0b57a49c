"""Throughput of the Calico building blocks between two namespace nodes (prints figures).

``sudo .venv/bin/python bench/bench_calico_blocks.py [--seconds 5]``

Two node namespaces on a bridge (harness/testlab/calnet.py). Each node has a 'pod'
address on lo (10.244.<i>.1). iperf3 TCP, node 1 → node 2, measured in the same
run for:

- ``underlay``: between the underlay addresses (the baseline);
- ``routed``: pod → pod, routed over the underlay without encapsulation (what
  BIRD's learned routes give ``bgp``);
- ``ipip-userspace``: pod → pod through ``IpipTunnel`` (TUN + raw protocol 4);
- ``wireguard``: pod → pod through WireGuard (kernel or wireguard-go, as found).

Prints bits/s and the ratio to the underlay. No assertions: figures only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import time

from pyroute2 import IPRoute

from harness.agent import ipip_tun
from harness.agent import wireguard as wg
from harness.testlab.calnet import CalNet

A = ipaddress.IPv4Address
N = ipaddress.IPv4Network


def iperf(net: CalNet, src: str, dst: str, seconds: int) -> float:
    """bits/s received by an iperf3 server on ``dst`` (node 2) from node 1."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", net.ns(2), "iperf3", "-s", "-1", "-B", dst],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        out = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                net.ns(1),
                "iperf3",
                "-J",
                "-c",
                dst,
                "-B",
                src,
                "-t",
                str(seconds),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        ).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=10)


def route(net: CalNet, i: int, **how: object) -> None:
    with IPRoute(netns=net.ns(i)) as ipr:
        ipr.route("replace", dst=f"10.244.{3 - i}.0/24", **how)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    secs = ap.parse_args().seconds
    figures: dict[str, float] = {}
    with CalNet(2) as net:
        for i in (1, 2):
            net.pod_address(i, f"10.244.{i}.1")
        figures["underlay"] = iperf(net, net.ip(1), net.ip(2), secs)

        for i in (1, 2):
            route(net, i, gateway=net.ip(3 - i))
        figures["routed"] = iperf(net, "10.244.1.1", "10.244.2.1", secs)

        tunnels = []
        for i in (1, 2):

            def make(i: int = i) -> ipip_tun.IpipTunnel:
                ipr = IPRoute()
                t = ipip_tun.IpipTunnel(
                    ipr,
                    A(net.ip(i)),
                    ipaddress.IPv4Interface(f"10.244.{i}.0/32"),
                    underlay_mtu=1500,
                )
                t.start()
                t.set_peers({N(f"10.244.{3 - i}.0/24"): A(net.ip(3 - i))})
                return t

            t = net.in_netns(i, make)
            net.cleanups.append(t.ipr.close)
            net.cleanups.append(t.close)
            tunnels.append(t)
            with IPRoute(netns=net.ns(i)) as ipr:
                route(net, i, oif=ipr.link_lookup(ifname=t.device)[0])
        figures["ipip-userspace"] = iperf(net, "10.244.1.1", "10.244.2.1", secs)
        for t in tunnels:
            t.close()

        wgs, pubs = [], []
        for i in (1, 2):
            ipr = IPRoute(netns=net.ns(i))
            net.cleanups.append(ipr.close)
            w = wg.WireGuard(
                ipr, net.ns(i), net.tmp / f"n{i}/s", net.tmp / f"n{i}/r", netns=net.ns(i)
            )
            net.cleanups.append(w.down)
            pubs.append(w.up(mtu=wg.mtu_for(1500)))
            wgs.append(w)
        for i, w in enumerate(wgs, 1):
            o = 3 - i
            w.set_peers(
                [
                    wg.PeerSpec(
                        pubs[o - 1], (A(net.ip(o)), wg.DEFAULT_PORT), (N(f"10.244.{o}.0/24"),)
                    )
                ]
            )
            route(net, i, oif=w.ipr.link_lookup(ifname=w.name)[0])
        figures[f"wireguard ({wgs[0].kind})"] = iperf(net, "10.244.1.1", "10.244.2.1", secs)

    base = figures["underlay"]
    print(f"{'path':28} {'throughput_bps':>16} {'ratio':>7}")
    for name, bps in figures.items():
        print(f"{name:28} {bps:16.3e} {bps / base:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
