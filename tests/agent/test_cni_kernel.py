"""podlab-cni on a real kernel, beyond the spec suite: podlab's own stricter rules.

- a failed ADD leaves nothing even before the runtime's DEL (the spec only
  requires the DEL to clean up);
- a crash between reserving an address and finishing the ADD never hands that
  address out twice, and GC frees it with the half-made veth.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from harness.cni import ipam, links, nsutil
from harness.conformance.cni.plugin import Pods
from harness.conformance.cni.targets import Node, PodlabTarget

pytestmark = [pytest.mark.root, pytest.mark.integration]


@pytest.fixture(scope="module")
def target() -> Iterator[PodlabTarget]:
    t = PodlabTarget("bridge")
    node = Node("kernel")
    try:
        t.setup(node)
        yield t
    finally:
        t.teardown()
        node.close()


@pytest.fixture
def pods(target: PodlabTarget, request: pytest.FixtureRequest) -> Iterator[Pods]:
    p = Pods(target, f"k-{request.node.name[5:20].replace('_', '-')}")
    try:
        yield p
    finally:
        p.cleanup()


def node_links(t: PodlabTarget) -> set[str]:
    assert t.node is not None
    with nsutil.iproute(t.node.path) as ipr:
        return {str(m.get_attr("IFLA_IFNAME")) for m in ipr.get_links()}


def reserved(t: PodlabTarget) -> list[str]:
    assert t.node is not None
    d = t.node.dir / "data" / "ipam" / "10.250.2.0-29"
    return sorted(p.name for p in d.glob("10.*")) if d.is_dir() else []


def test_a_failed_add_leaves_nothing_even_before_del(target: PodlabTarget, pods: Pods) -> None:
    for _ in range(target.tiny_capacity):
        call, _cid, _netns = pods.add("1.0.0", pool="tiny")
        assert call.exit == 0, call
    links_before, held = node_links(target), reserved(target)
    assert len(held) == target.tiny_capacity
    call, _cid, netns = pods.add("1.0.0", pool="tiny")  # the pool is full
    assert call.exit == 1 and call.json["code"] == 11, call
    with nsutil.iproute(netns) as ipr:
        assert not ipr.link_lookup(ifname="eth0"), "eth0 left in the pod"
    assert node_links(target) == links_before and reserved(target) == held
    conf = target.config("1.0.0", pods.network, "tiny")
    env = target.env("ADD", containerid="k-nonet", netns="/run/netns/podlab-none", ifname="eth0")
    call = target.call("ADD", conf, env)
    assert call.exit == 1 and call.json["code"] == 4 and "CNI_NETNS" in call.json["msg"], call
    assert node_links(target) == links_before and reserved(target) == held


def test_a_crashed_add_never_doubles_its_address_and_gc_frees_it(
    target: PodlabTarget, pods: Pods
) -> None:
    assert target.node is not None
    pool = ipam.Pool(target.node.dir / "data", IPv4Network("10.250.2.0/29"), "10.250.2.1")
    # what a plugin killed right after reserving leaves: the reservation, a veth half made
    crashed = pool.reserve(pods.network, "k-crashed", "eth0", "vethcrashed0")
    tag = links.alias(pods.network, "k-crashed", "eth0")
    with nsutil.iproute(target.node.path) as ipr:
        ipr.link("add", ifname="vethcrashed0", kind="veth", peer="vethcrashed1")
        ipr.link("set", ifname="vethcrashed0", ifalias=tag)
    got = []
    for _ in range(target.tiny_capacity - 1):
        call, _cid, _netns = pods.add("1.1.0", pool="tiny")
        assert call.exit == 0, call
        got.append(call.json["ips"][0]["address"].split("/")[0])
    assert crashed.address not in got, f"{crashed.address} handed out twice: {got}"
    assert pods.add("1.1.0", pool="tiny")[0].exit == 1, "the pool should be full"
    valid = [{"containerID": cid, "ifname": "eth0"} for cid, _n, _c in pods.made[:-1]]
    conf = {**target.config("1.1.0", pods.network, "tiny"), "cni.dev/valid-attachments": valid}
    call = target.call("GC", conf, target.env("GC"))
    assert call.exit == 0 and not call.stdout.strip(), call
    assert crashed.address not in reserved(target), "GC did not free the crashed reservation"
    assert "vethcrashed0" not in node_links(target), "GC left the crashed ADD's veth"
    call, _cid, _netns = pods.add("1.1.0", pool="tiny")
    assert call.exit == 0 and call.json["ips"][0]["address"].startswith(crashed.address), call
    data = json.loads(Path(target.node.dir / "data" / "ipam" / "10.250.2.0-29" /
                           crashed.address).read_text())  # fmt: skip
    assert data["containerID"] != "k-crashed"
