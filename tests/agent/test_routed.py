"""Calico-style routed pods: cali* veths, /32 routes, the 169.254.1.1 gateway, no bridge.

Node 1 gets two pods attached by running ``podlab-cni`` (mode ``routed``, working
in-process: no agent here) as a runtime would; node 2 stands in for a remote
node (a 'pod' address on lo and the route BIRD would have learned).
Pods must reach each other on the same node (routed through it, not bridged),
the remote node, and be reached from it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from harness.cni import routed
from harness.testlab.calnet import CalNet, ping

pytestmark = [pytest.mark.root, pytest.mark.integration]

A = ipaddress.IPv4Address
PODS = {"p1": A("10.244.1.2"), "p2": A("10.244.1.3")}
REMOTE_POD = "10.244.2.1"


PLUGIN = str(Path(sys.executable).parent / "podlab-cni")


def plugin(net: CalNet, tmp: Path, command: str, name: str, ip: str = "", ns: str = "") -> None:
    """Run podlab-cni in node 1's namespace, as a runtime would."""
    conf = {
        "cniVersion": "1.0.0",
        "name": "t-routed",
        "type": "podlab-cni",
        "mode": "routed",
        "mtu": 1500,
        "subnetFile": str(tmp / "subnet.env"),
        "dataDir": str(tmp / "cni"),
        "agentSocket": "",
    }
    env = {
        **os.environ,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": name,
        "CNI_NETNS": f"/run/netns/{ns}" if ns else "",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
        "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};IP={ip}",
    }
    res = subprocess.run(
        ["ip", "netns", "exec", net.ns(1), PLUGIN],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0, f"podlab-cni {command} {name}: {res.stdout!r} {res.stderr!r}"


def add_pod(net: CalNet, tmp: Path, name: str, ip: ipaddress.IPv4Address) -> tuple[str, str]:
    """Pod ``name`` on node 1: its namespace and node-side veth."""
    ns = net.extra_ns(name)
    plugin(net, tmp, "ADD", name, str(ip), ns)
    return ns, routed.host_if_name(f"default/{name}")


def pod_ping(ns: str, dst: str) -> bool:
    import subprocess

    res = subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", dst],
        capture_output=True,
        timeout=30,
    )
    return res.returncode == 0


def test_routed_pods_reach_each_other_and_the_remote_node(tmp_path: Path) -> None:
    root_forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    (tmp_path / "subnet.env").write_text(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1500\n"
    )
    with CalNet(2) as net:
        net.in_netns(1, lambda: Path("/proc/sys/net/ipv4/ip_forward").write_text("1"))
        pods = {name: add_pod(net, tmp_path, name, ip) for name, ip in PODS.items()}
        net.pod_address(2, REMOTE_POD)
        with IPRoute(netns=net.ns(2)) as ipr:  # what BIRD on node 2 would install
            ipr.route("replace", dst="10.244.1.0/24", gateway=net.ip(1))
        with IPRoute(netns=net.ns(1)) as ipr:
            ipr.route("replace", dst="10.244.2.0/24", gateway=net.ip(2))
            assert not [
                li
                for li in ipr.get_links()
                if li.get_attr("IFLA_LINKINFO")
                and li.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "bridge"
            ]
            host_routes = {
                r.get_attr("RTA_DST"): r["proto"]
                for r in ipr.get_routes(family=2, table=254)
                if r["dst_len"] == 32
            }
        assert host_routes == {str(ip): routed.RTPROT_PODLAB_POD for ip in PODS.values()}
        with IPRoute(netns=pods["p1"][0]) as pod:
            addrs = [
                (a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                for a in pod.get_addr(family=2)
                if a.get_attr("IFA_LABEL") == "eth0"
            ]
            assert addrs == [("10.244.1.2", 32)]

        p1, p2 = pods["p1"][0], pods["p2"][0]
        assert pod_ping(p1, str(PODS["p2"])), "same-node pods cannot reach each other"
        assert pod_ping(p1, REMOTE_POD), "pod cannot reach the remote node's pod address"
        assert ping(net, 2, str(PODS["p2"]), count=2, src=REMOTE_POD), "remote cannot reach pod"

        # without the static entry the pod depends on proxy-ARP, which answers only
        # while the node has a route towards 169.254.1.1 through another device
        with IPRoute(netns=p2) as pod:
            eth0 = pod.link_lookup(ifname="eth0")[0]
            pod.neigh("del", dst=str(routed.GATEWAY), ifindex=eth0)
        assert not pod_ping(p2, str(PODS["p1"])), "proxy-ARP answered without a node route"
        with IPRoute(netns=net.ns(1)) as ipr:  # a lab-internal default route, never used
            ipr.route("replace", dst="0.0.0.0", dst_len=0, gateway="10.198.0.254")
        assert pod_ping(p2, str(PODS["p1"])), "proxy-ARP did not answer for 169.254.1.1"

        plugin(net, tmp_path, "DEL", "p2")  # no netns given: the node side must go anyway
        assert not pod_ping(p1, str(PODS["p2"]))
        assert not list((tmp_path / "cni" / "ipam" / "10.244.1.0-24").glob("10.244.1.3"))
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == root_forwarding


def test_host_if_names_fit_and_are_stable() -> None:
    names = {routed.host_if_name(f"default/pod-{i}") for i in range(100)}
    assert len(names) == 100 and all(len(n) == 15 and n.startswith("cali") for n in names)
