"""Hand-built references: which path each mode gets, and the interleaved rounds (pure parts)."""

from __future__ import annotations

import pytest

from harness.probes.stats import coefficient_of_variation
from harness.refpath import rounds, spec


@pytest.mark.parametrize(
    ("mode", "encryption", "want"),
    [
        ("host-gw", "none", ("bridged", "none", 1500, 0, 0)),
        ("vxlan", "none", ("bridged", "vxlan", 1450, 1, 8472)),
        ("bgp", "none", ("routed", "none", 1500, 0, 0)),
        ("calico-vxlan", "none", ("routed", "vxlan", 1450, 4096, 4789)),
        ("cross-subnet", "none", ("routed", "none", 1450, 0, 0)),
        ("ipip", "none", ("routed", "ipip", 1480, 0, 0)),
        ("host-gw", "wireguard", ("bridged", "wireguard", 1420, 0, 0)),
        ("vxlan", "wireguard", ("bridged", "wireguard", 1420, 0, 0)),
        ("bgp", "wireguard", ("routed", "wireguard", 1440, 0, 0)),
    ],
)
def test_each_kernel_mode_has_its_hand_built_path(
    mode: str, encryption: str, want: tuple[str, str, int, int, int]
) -> None:
    ref = spec.reference_for(mode, encryption, wireguard_impl="wireguard-go")
    assert isinstance(ref, spec.RefSpec), ref
    assert (ref.pods, ref.encap, ref.pod_mtu, ref.vni, ref.port) == want
    if encryption == "wireguard":
        assert ref.wireguard == "wireguard-go" and ref.name.endswith("+wireguard-go")


@pytest.mark.parametrize(
    ("mode", "kw", "why"),
    [
        ("udp", {}, "userspace"),
        ("ipip", {"ipip_impl": "userspace"}, "no ipip module"),
        ("host-gw", {"same_segment": False}, "crosses a router"),
        ("vxlan", {"encryption": "wireguard"}, "did not publish"),
        ("flannel-magic", {}, "no hand-built reference"),
    ],
)
def test_modes_without_an_iproute2_equivalent_say_why(mode: str, kw: dict, why: str) -> None:  # type: ignore[type-arg]
    ref = spec.reference_for(mode, **kw)
    assert isinstance(ref, spec.NoReference)
    assert why in ref.reason


def test_the_mesh_tunnel_reference_is_the_mesh_vxlan_across_a_router() -> None:
    ref = spec.mesh_tunnel_reference()
    # vxlan.mesh's numbers (docs/mesh.md), flannel's bridged pods, two segments and a router
    assert (ref.pods, ref.encap, ref.pod_mtu, ref.vni, ref.port) == (
        "bridged",
        "vxlan",
        1450,
        2,
        8473,
    )
    assert ref.router and ref.name == "bridged+vxlan/router"
    assert spec.RefSpec.from_json(ref.to_json()) == ref
    assert not spec.RefSpec("bridged", "vxlan", 1450, 1500, 1, 8472).router


@pytest.mark.parametrize(
    ("mode", "encryption", "routing", "want"),
    [
        # the tunnel mesh: vxlan.mesh between the nodes, the client cluster's pods
        ("host-gw", "none", "tunnel", ("bridged", "vxlan", 1450, 2, 8473, "")),
        ("vxlan", "none", "tunnel", ("bridged", "vxlan", 1450, 2, 8473, "")),
        ("calico-vxlan", "none", "tunnel", ("routed", "vxlan", 1450, 2, 8473, "")),
        # every node a WireGuard peer: WireGuard between the nodes, the agents' implementation
        (
            "calico-vxlan",
            "wireguard",
            "tunnel",
            ("routed", "wireguard", 1440, 0, 0, "wireguard-go"),
        ),
        ("host-gw", "wireguard", "tunnel", ("bridged", "wireguard", 1420, 0, 0, "wireguard-go")),
        # native: pod routes through the router, nothing in between
        ("bgp", "none", "native", ("routed", "none", 1500, 0, 0, "")),
    ],
)
def test_the_mesh_reference_is_the_cross_cluster_path_across_a_router(
    mode: str, encryption: str, routing: str, want: tuple[str, str, int, int, int, str]
) -> None:
    ref = spec.mesh_reference(mode, encryption, routing=routing, wireguard_impl="wireguard-go")
    assert isinstance(ref, spec.RefSpec), ref
    assert (ref.pods, ref.encap, ref.pod_mtu, ref.vni, ref.port, ref.wireguard) == want
    assert ref.router and ref.name.endswith("/router")


@pytest.mark.parametrize(
    ("mode", "encryption", "impl", "why"),
    [
        ("vxlan", "wireguard", "", "did not publish"),
        ("vxlan", "ipsec", "", "encryption 'ipsec'"),
        ("flannel-magic", "none", "", "no hand-built reference"),
    ],
)
def test_a_mesh_without_a_reference_says_why(
    mode: str, encryption: str, impl: str, why: str
) -> None:
    ref = spec.mesh_reference(mode, encryption, wireguard_impl=impl)
    assert isinstance(ref, spec.NoReference)
    assert why in ref.reason


def test_a_spec_round_trips_through_json_and_refuses_nonsense() -> None:
    ref = spec.RefSpec("routed", "vxlan", 1450, 1500, 4096, 4789)
    assert spec.RefSpec.from_json(ref.to_json()) == ref
    with pytest.raises(ValueError, match="VNI"):
        spec.RefSpec("bridged", "vxlan", 1450)
    with pytest.raises(ValueError, match="pods must be"):
        spec.RefSpec("switched", "none", 1500)
    with pytest.raises(ValueError, match="pod MTU"):
        spec.RefSpec("bridged", "none", 9000)
    with pytest.raises(ValueError, match="not a reference spec"):
        spec.RefSpec.from_json('{"pods": "bridged"}')


def test_rounds_rotate_the_order_so_nobody_always_goes_first() -> None:
    calls: list[str] = []

    def make(name: str):  # type: ignore[no-untyped-def]
        return lambda: calls.append(name) or len(calls)

    got = rounds.interleave([(n, make(n)) for n in "abc"], 3)
    assert calls == list("abcbcacab")
    assert got == {"a": [1, 6, 8], "b": [2, 4, 9], "c": [3, 5, 7]}
    with pytest.raises(ValueError):
        rounds.interleave([("a", make("a"))], 0)


def test_comparison_divides_medians_and_counts_rounds_below() -> None:
    mode = rounds.Series("mode", (8.0, 9.0, 7.0, 10.0, 8.5))
    ref = rounds.Series("ref", (10.0, 9.5, 12.0, 9.0, 10.0))
    c = rounds.Comparison(mode, ref)
    assert c.ratio == pytest.approx(8.5 / 10.0)
    assert c.rounds_below == 4
    assert c.round_ratios[0] == pytest.approx(0.8)


def test_coefficient_of_variation() -> None:
    assert coefficient_of_variation([10.0]) is None
    assert coefficient_of_variation([10.0, 10.0, 10.0]) == 0.0
    assert coefficient_of_variation([9.0, 11.0]) == pytest.approx(2**0.5 / 10)


def test_targets_parse_and_enter_their_namespace() -> None:
    t = rounds.Target.parse("pod-pod=/run/netns/pod-x@10.244.2.5:5301")
    assert t == rounds.Target("pod-pod", "/run/netns/pod-x", "10.244.2.5", 5301)
    assert t.argv(1)[:2] == ["nsenter", "--net=/run/netns/pod-x"]
    named = rounds.Target.parse("hand-built=plref-x-pa@10.255.2.2:5201")
    assert named.argv(1)[1] == "--net=/run/netns/plref-x-pa"
    here = rounds.Target.parse("node-node=@10.100.0.3:5302")
    assert here.netns == "" and here.argv(2)[0] == "iperf3"
    for bad in ("x", "x=@1.2.3.4", "=@1.2.3.4:5", "x=ns@1.2.3.4:port"):
        with pytest.raises(ValueError, match="NAME=NETNS@IP:PORT"):
            rounds.Target.parse(bad)
