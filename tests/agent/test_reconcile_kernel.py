"""The reconciler's change passes in a throwaway node namespace: they apply the
change without reading the kernel, and a full pass still repairs what someone
changed by hand.

A change pass trusts what the last read found plus what it applied since, so one
peer's change costs its own netlink calls at 1,000 peers (bench/bench_programming.py);
these tests pin when it must read the kernel anyway: the first pass, a full pass
(the agent's resync), after a failed change, and after a mode device was recreated.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from harness.agent.datapath.base import (
    RTPROT_PODLAB,
    BaseDatapath,
    FdbSpec,
    NeighSpec,
    Peer,
    PeerObjects,
    RouteSpec,
)
from harness.agent.reconcile import Known, Reconciler
from harness.testlab.calnet import CalNet

pytestmark = [pytest.mark.root]

DEV = "vx0"


class Vxlanish(BaseDatapath):
    """vxlan's objects on device vx0; a peer named "bad" gets a route the kernel refuses."""

    def __init__(self) -> None:  # no AgentConfig: nothing here reads it
        self.told: list[list[Peer]] = []

    def devices(self) -> list[str]:
        return [DEV]

    def peers_changed(self, peers: list[Peer]) -> None:
        self.told.append(peers)

    def peer_objects(self, peer: Peer) -> PeerObjects:
        gw = peer.subnet.network_address
        if peer.node == "bad":  # a gateway not on any link, without onlink: EINVAL
            return PeerObjects(routes=[RouteSpec(peer.subnet, ipaddress.IPv4Address("192.0.2.1"))])
        mac = str(peer.backend["VtepMAC"])
        return PeerObjects(
            routes=[RouteSpec(peer.subnet, gw, DEV, onlink=True)],
            neighs=[NeighSpec(DEV, gw, mac)],
            fdbs=[FdbSpec(DEV, mac, peer.underlay_ip)],
        )


def peer(i: int, node: str = "") -> Peer:
    return Peer(
        node or f"p{i}",
        ipaddress.IPv4Network(f"10.245.{i}.0/24"),
        ipaddress.IPv4Address(f"10.198.0.{100 + i}"),
        "fabric",
        {"VtepMAC": f"0e:aa:00:00:00:{i:02x}"},
    )


@pytest.fixture
def node() -> Iterator[tuple[IPRoute, Reconciler, list[int]]]:
    """A node namespace with vx0, a reconciler on it, and a count of its kernel reads."""
    with CalNet(1) as net, IPRoute(netns=net.ns(1)) as ipr:
        make_vx0(ipr)
        rec = Reconciler(ipr, Vxlanish())  # type: ignore[arg-type]
        reads = [0]
        read = rec._read

        def counted(index: dict[str, int | None]) -> Known:
            reads[0] += 1
            return read(index)

        rec._read = counted  # type: ignore[method-assign]
        yield ipr, rec, reads


def make_vx0(ipr: IPRoute) -> None:
    eth1 = ipr.link_lookup(ifname="eth1")[0]
    ipr.link("add", ifname=DEV, kind="vxlan", vxlan_id=7, vxlan_link=eth1, vxlan_port=4789)
    ipr.link("set", index=ipr.link_lookup(ifname=DEV)[0], state="up")


def routes(ipr: IPRoute) -> set[str]:
    got = ipr.get_routes(table=254, family=2, proto=RTPROT_PODLAB)
    return {f"{r.get_attr('RTA_DST')}/{r['dst_len']}" for r in got if r["proto"] == RTPROT_PODLAB}


def fdbs(ipr: IPRoute) -> set[str]:
    idx = ipr.link_lookup(ifname=DEV)[0]
    return {
        str(f.get_attr("NDA_LLADDR")) for f in ipr.fdb("dump", ifindex=idx) if f.get_attr("NDA_DST")
    }


def test_a_change_pass_applies_the_change_without_reading_and_a_full_pass_repairs(node) -> None:
    ipr, rec, reads = node
    peers = [peer(i) for i in range(3)]
    first = rec.sync(peers, full=False)  # nothing known yet: reads anyway
    assert (reads[0], first.added, first.failed) == (1, 9, 0)
    assert routes(ipr) == {f"10.245.{i}.0/24" for i in range(3)}

    ipr.route("del", dst="10.245.0.0", dst_len=24, proto=RTPROT_PODLAB, table=254)  # by hand
    more = rec.sync([*peers, peer(3)], full=False)
    assert (reads[0], more.added, more.removed) == (1, 3, 0)  # peer 3's three objects only
    assert "10.245.0.0/24" not in routes(ipr)  # trusted: the hand-made drift waits
    fewer = rec.sync([*peers[1:], peer(3)], full=False)
    assert (reads[0], fewer.removed) == (1, 3)  # peer 0's three (its route: already gone)
    assert "0e:aa:00:00:00:00" not in fdbs(ipr)

    again = rec.sync([*peers, peer(3)], full=True)
    assert (reads[0], again.added, again.removed) == (2, 3, 0)
    assert routes(ipr) == {f"10.245.{i}.0/24" for i in range(4)}


def test_a_failed_change_or_a_recreated_device_makes_the_next_pass_read(node) -> None:
    ipr, rec, reads = node
    peers = [peer(i) for i in range(2)]
    rec.sync(peers)
    failed = rec.sync([*peers, peer(9, "bad")], full=False)
    assert failed.failed == 1 and reads[0] == 1
    ipr.route("del", dst="10.245.1.0", dst_len=24, proto=RTPROT_PODLAB, table=254)
    after = rec.sync(peers, full=False)
    assert reads[0] == 2 and after.added == 1  # read again: the deleted route came back
    assert routes(ipr) == {"10.245.0.0/24", "10.245.1.0/24"}

    ipr.link("del", index=ipr.link_lookup(ifname=DEV)[0])  # its routes, FDB and neighbours go
    make_vx0(ipr)
    back = rec.sync(peers, full=False)
    assert reads[0] == 3 and back.added == 6 and back.failed == 0
    assert fdbs(ipr) == {"0e:aa:00:00:00:00", "0e:aa:00:00:00:01"}


def test_the_mode_hears_of_the_peers_when_they_changed_or_on_a_full_pass(node) -> None:
    _, rec, _ = node
    dp = rec.dp
    assert isinstance(dp, Vxlanish)
    peers = [peer(i) for i in range(2)]
    rec.sync(peers, full=False)
    rec.sync(list(peers), full=False)  # the same Peer objects: no call
    assert len(dp.told) == 1
    rec.sync([peers[0], peer(1)], full=False)  # an equal but new object: a changed lease
    rec.sync(list(peers), full=True)
    assert len(dp.told) == 3
