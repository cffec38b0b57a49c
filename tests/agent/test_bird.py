"""Real BIRDs in throwaway namespaces: iBGP comes up, routes reach the kernel, and go.

Each node namespace runs the BIRD that ``harness.agent.bird`` configures; the
kernel's main table is read back through pyroute2 (routes BIRD installs carry
``proto bird``, rtm_protocol 12).
"""

from __future__ import annotations

import ipaddress
import shutil

import pytest
from pyroute2 import IPRoute

from harness.agent import bird
from harness.testlab.calnet import CalNet
from harness.testlab.wait import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 not installed"),
]

RTPROT_BIRD = 12


def kernel_bird_routes(ns: str) -> dict[str, str]:
    """dst → gateway of the routes BIRD installed in namespace ``ns``'s main table."""
    with IPRoute(netns=ns) as ipr:
        return {
            f"{r.get_attr('RTA_DST')}/{r['dst_len']}": str(r.get_attr("RTA_GATEWAY"))
            for r in ipr.get_routes(family=2, table=254)
            if r["proto"] == RTPROT_BIRD
        }


def start_birds(net: CalNet, reflectors: list[str]) -> list[bird.Bird]:
    nodes = {f"n{i}": ipaddress.IPv4Address(net.ip(i)) for i in range(1, len(net.nodes) + 1)}
    birds = []
    for i in range(1, len(net.nodes) + 1):
        b = bird.Bird(net.tmp / f"n{i}", netns=net.ns(i))
        net.cleanups.append(b.stop)
        peers = bird.plan_peers(f"n{i}", nodes, reflectors)
        conf = bird.render(nodes[f"n{i}"], ipaddress.IPv4Network(f"10.244.{i}.0/24"), "eth1", peers)
        assert b.write_config(conf)
        b.start()
        birds.append(b)
    return birds


def established(b: bird.Bird) -> list[str]:
    return sorted(s.name for s in b.protocols() if s.established)


def test_full_mesh_learns_and_withdraws() -> None:
    with CalNet(2) as net:
        b1, b2 = start_birds(net, reflectors=[])
        wait_for("n1 peer_n2 Established", lambda: established(b1) == ["peer_n2"])
        wait_for("n2 peer_n1 Established", lambda: established(b2) == ["peer_n1"])
        want1 = {"10.244.2.0/24": net.ip(2)}
        want2 = {"10.244.1.0/24": net.ip(1)}
        wait_for("n1 learns n2's /24", lambda: kernel_bird_routes(net.ns(1)) == want1)
        wait_for("n2 learns n1's /24", lambda: kernel_bird_routes(net.ns(2)) == want2)
        # the own subnet is announced (blackhole in BIRD) but never put in the kernel
        assert "10.244.1.0/24" not in kernel_bird_routes(net.ns(1))
        # reload with unchanged config keeps the session
        assert not b1.write_config(b1.conf.read_text())
        b1.reload()
        assert established(b1) == ["peer_n2"]
        b2.stop()
        assert b2.pid() is None
        wait_for("n1 withdraws n2's /24", lambda: kernel_bird_routes(net.ns(1)) == {}, timeout=10)
        sess = {s.name: s for s in b1.protocols()}
        assert not sess["peer_n2"].established


def test_route_reflector_clients_learn_each_other() -> None:
    with CalNet(3) as net:
        b1, b2, _b3 = start_birds(net, reflectors=["n1"])
        wait_for("reflector sessions", lambda: established(b1) == ["peer_n2", "peer_n3"])
        # clients peer only with the reflector ...
        assert [s.name for s in b2.protocols() if s.proto == "BGP"] == ["peer_n1"]
        # ... yet learn each other's subnet with the other client as next hop
        wait_for(
            "n2 learns n3 via reflector",
            lambda: (
                kernel_bird_routes(net.ns(2))
                == {"10.244.1.0/24": net.ip(1), "10.244.3.0/24": net.ip(3)}
            ),
        )
        wait_for(
            "n3 learns n2 via reflector",
            lambda: (
                kernel_bird_routes(net.ns(3))
                == {"10.244.1.0/24": net.ip(1), "10.244.2.0/24": net.ip(2)}
            ),
        )
        b2.stop()
        wait_for(
            "n3 loses n2's /24",
            lambda: kernel_bird_routes(net.ns(3)) == {"10.244.1.0/24": net.ip(1)},
            timeout=10,
        )


def test_bad_config_is_refused_before_it_replaces_the_good_one() -> None:
    with CalNet(1) as net:
        b = bird.Bird(net.tmp / "n1", netns=net.ns(1))
        conf = bird.render(
            ipaddress.IPv4Address(net.ip(1)), ipaddress.IPv4Network("10.244.1.0/24"), "eth1", []
        )
        b.write_config(conf)
        with pytest.raises(Exception, match="bird"):
            b.write_config(conf + "protocol nonsense {\n")
        assert b.conf.read_text() == conf


def test_birdc_errors_are_bird_errors() -> None:
    with CalNet(1) as net:
        b = bird.Bird(net.tmp / "n1", netns=net.ns(1))
        with pytest.raises(bird.BirdError, match="Unable to connect"):
            b.protocols()  # not started yet
        conf = bird.render(
            ipaddress.IPv4Address(net.ip(1)), ipaddress.IPv4Network("10.244.1.0/24"), "eth1", []
        )
        b.write_config(conf)
        net.cleanups.append(b.stop)
        b.start()
        with pytest.raises(bird.BirdError, match="syntax error"):
            b.birdc("show", "protocols", "nosuch")
        assert [s.name for s in b.protocols()] == ["device1", "direct1", "kernel1", "pods"]
