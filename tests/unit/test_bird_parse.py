"""BIRD config rendering and birdc parsers, on output captured from a real BIRD 2.0.12.

The files under data/bird/ were captured by running three BIRDs (n1 a route
reflector, n2/n3 its clients) in throwaway namespaces; see tests/agent/test_bird.py
for the live version of the same lab.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from harness.agent import bird

DATA = Path(__file__).parent / "data" / "bird"
A = ipaddress.IPv4Address
N = ipaddress.IPv4Network


def text(name: str) -> str:
    return (DATA / name).read_text()


def test_sessions_established_on_reflector() -> None:
    sessions = bird.parse_protocols(text("protocols_rr_established.txt"))
    assert [s.name for s in sessions] == [
        "device1",
        "direct1",
        "kernel1",
        "pods",
        "peer_n2",
        "peer_n3",
    ]
    bgp = [s for s in sessions if s.proto == "BGP"]
    assert all(s.established for s in bgp), bgp
    assert bgp[0] == bird.Session("peer_n2", "BGP", "---", "up", "21:04:01.357", "Established")
    kernel = sessions[2]
    assert (kernel.proto, kernel.table, kernel.state, kernel.info) == (
        "Kernel",
        "master4",
        "up",
        "",
    )
    assert not kernel.established  # only BGP sessions count as established


def test_sessions_before_peers_come_up() -> None:
    bgp = [s for s in bird.parse_protocols(text("protocols_rr_connecting.txt")) if s.proto == "BGP"]
    assert [(s.name, s.state, s.info, s.established) for s in bgp] == [
        ("peer_n2", "start", "Active", False),
        ("peer_n3", "start", "Active", False),
    ]


def test_session_of_stopped_peer_keeps_its_reason() -> None:
    sessions = {s.name: s for s in bird.parse_protocols(text("protocols_rr_peer_stopped.txt"))}
    assert sessions["peer_n2"].info == "Active Received: Administrative shutdown"
    assert not sessions["peer_n2"].established
    assert sessions["peer_n3"].established


def test_garbage_gives_no_sessions() -> None:
    assert (
        bird.parse_protocols("Unable to connect to server control socket (/x): No such file\n")
        == []
    )


def test_routes_learned_and_reflected() -> None:
    routes = bird.parse_routes(text("route_client.txt"))
    by = {r.prefix: r for r in routes}
    assert set(by) == {
        N("10.244.1.0/24"),
        N("10.244.2.0/24"),
        N("10.244.3.0/24"),
        N("10.198.0.0/24"),
    }
    assert by[N("10.244.1.0/24")] == bird.BirdRoute(
        N("10.244.1.0/24"), "unicast", "peer_n1", A("10.198.0.1"), "eth1", True
    )
    # reflected by n1 but the next hop stays n3's own underlay address
    assert (by[N("10.244.3.0/24")].protocol, by[N("10.244.3.0/24")].via) == (
        "peer_n1",
        A("10.198.0.3"),
    )
    assert (by[N("10.244.2.0/24")].kind, by[N("10.244.2.0/24")].via) == ("blackhole", None)
    assert (by[N("10.198.0.0/24")].via, by[N("10.198.0.0/24")].dev) == (None, "eth1")


def test_withdrawn_route_is_gone() -> None:
    prefixes = {r.prefix for r in bird.parse_routes(text("route_client_peer_stopped.txt"))}
    assert N("10.244.2.0/24") not in prefixes and N("10.244.1.0/24") in prefixes


def test_alternative_routes_are_kept_apart() -> None:
    out = (
        "Table master4:\n"
        "10.244.2.0/24        unicast [peer_a 10:00:00.000] * (100) [i]\n"
        "\tvia 10.0.0.2 on eth1\n"
        "                     unicast [peer_b 10:00:01.000] (100) [i]\n"
        "\tvia 10.0.0.3 on eth1\n"
    )
    routes = bird.parse_routes(out)
    assert [(r.protocol, str(r.via), r.primary) for r in routes] == [
        ("peer_a", "10.0.0.2", True),
        ("peer_b", "10.0.0.3", False),
    ]


NODES = {"a": A("10.0.0.1"), "b": A("10.0.0.2"), "c": A("10.0.0.3"), "d": A("10.0.0.4")}


def test_full_mesh_peers_with_everyone_else() -> None:
    peers = bird.plan_peers("b", NODES)
    assert [(p.node, p.rr_client) for p in peers] == [("a", False), ("c", False), ("d", False)]


@pytest.mark.parametrize(
    ("me", "expected"),
    [
        ("a", [("b", False), ("c", True), ("d", True)]),  # reflector: clients marked
        ("c", [("a", False), ("b", False)]),  # client: reflectors only
    ],
)
def test_route_reflector_topology(me: str, expected: list[tuple[str, bool]]) -> None:
    peers = bird.plan_peers(me, NODES, reflectors=["a", "b"])
    assert [(p.node, p.rr_client) for p in peers] == expected


def test_render_has_the_parts_a_node_needs() -> None:
    peers = bird.plan_peers("a", NODES, reflectors=["a"])
    conf = bird.render(A("10.0.0.1"), N("10.244.1.0/24"), "eth1", peers, cluster_id=A("10.0.0.1"))
    assert "router id 10.0.0.1;" in conf
    assert "route 10.244.1.0/24 blackhole;" in conf
    assert "export where source = RTS_BGP;" in conf  # only learned routes reach the kernel
    assert conf.count("protocol bgp ") == 3 and conf.count("rr client;") == 3
    assert "neighbor 10.0.0.4 as 64512;" in conf
    assert f"hold time {bird.HOLD_S};" in conf
    assert conf == bird.render(A("10.0.0.1"), N("10.244.1.0/24"), "eth1", peers, A("10.0.0.1"))


def test_protocol_names_are_bird_identifiers() -> None:
    assert bird.BgpPeer("c1-w1.lab", A("10.0.0.9")).protocol == "peer_c1_w1_lab"
