"""Pure parts of the Calico modes and the WireGuard layer: desired objects, bird.conf, MTU."""

from __future__ import annotations

import ipaddress

from harness.agent import encryption
from harness.agent.datapath.base import PodInterface, RouteSpec
from harness.agent.datapath.bgp import Bgp
from harness.agent.datapath.calicovxlan import CalicoVxlan
from harness.agent.datapath.crosssubnet import CrossSubnet
from harness.agent.datapath.hostgw import HostGw
from harness.agent.datapath.vxlan import Vxlan
from harness.agent.podcni import MODES
from harness.cni import routed
from tests.unit.test_agent_datapaths import FAR, PEER, A, N, cfg


def test_calico_vxlan_uses_calicos_numbers_on_the_shared_mechanics() -> None:
    dp = CalicoVxlan(cfg(mode="calico-vxlan"), None)  # type: ignore[arg-type]
    assert (dp.device, dp.vni, dp.port, dp.mtu()) == ("vxlan.calico", 4096, 4789, 1450)
    assert dp.pod_interface is PodInterface.ROUTED
    objs = dp.peer_objects(PEER)
    assert objs.routes == [RouteSpec(N("10.244.2.0/24"), A("10.244.2.0"), "vxlan.calico", True)]
    assert [f.dst for f in objs.fdbs] == [A("10.100.0.4")]
    flannel = Vxlan(cfg(), None)  # type: ignore[arg-type]
    assert dp.backend_data()["VtepMAC"] != flannel.backend_data()["VtepMAC"]


def test_cross_subnet_is_direct_within_a_segment_and_vxlan_across() -> None:
    dp = CrossSubnet(cfg(mode="cross-subnet"), None)  # type: ignore[arg-type]
    direct = dp.peer_objects(PEER)
    assert direct.routes == [RouteSpec(N("10.244.2.0/24"), A("10.100.0.4"), "eth1")]
    assert not direct.fdbs and not direct.neighs
    far = FAR.__class__(FAR.node, FAR.subnet, FAR.underlay_ip, FAR.segment, {"VtepMAC": "0e:9"})
    across = dp.peer_objects(far)
    assert across.routes[0].dev == "vxlan.calico" and across.fdbs[0].dst == A("10.200.0.9")
    assert dp.refuse([PEER, far]) == ([PEER, far], [])


def _bgp(**kw: object) -> Bgp:
    dp = Bgp(cfg(mode="bgp", **kw), None)  # type: ignore[arg-type]
    dp.subnet = ipaddress.IPv4Network("10.244.1.0/24")
    return dp


def test_bgp_mesh_reflectors_multihop_and_kernel_export() -> None:
    peer_rr = PEER.__class__(PEER.node, PEER.subnet, PEER.underlay_ip, PEER.segment, {})
    mesh = _bgp().render([peer_rr, FAR])
    assert "protocol bgp peer_c1_w2" in mesh and "protocol bgp peer_c1_w9" in mesh
    assert "export where source = RTS_BGP;" in mesh and "rr client" not in mesh
    far_block = mesh.split("protocol bgp peer_c1_w9")[1]
    assert "multihop;" in far_block  # another segment
    assert "direct;" in mesh.split("protocol bgp peer_c1_w2")[1].split("}")[0]
    # a reflector elsewhere: this client peers only with it
    rr = PEER.__class__(
        PEER.node, PEER.subnet, PEER.underlay_ip, "fabric", {"RouteReflector": True}
    )
    client = _bgp().render([rr, FAR])
    assert "peer_c1_w2" in client and "peer_c1_w9" not in client
    me_rr = _bgp(route_reflector=True)
    assert me_rr.backend_data() == {"RouteReflector": True}
    assert me_rr.render([PEER, FAR]).count("rr client;") == 2
    assert "export none;" in _bgp(encryption="wireguard").render([PEER])
    assert _bgp().peer_objects(PEER).routes == []
    assert _bgp().pod_interface is PodInterface.ROUTED


def test_wireguard_layer_replaces_peer_routes_and_refuses_keyless_peers() -> None:
    c = cfg(mode="host-gw", encryption="wireguard")
    dp = encryption.layer(HostGw(c, None), c, None)  # type: ignore[arg-type]
    assert isinstance(dp, encryption.WireGuardLayer)
    assert dp.mtu() == 1420 and dp.pod_interface is PodInterface.BRIDGED
    keyed = PEER.__class__(
        PEER.node, PEER.subnet, PEER.underlay_ip, PEER.segment, {"WireguardPublicKey": "k"}
    )
    ok, problems = dp.refuse([keyed, PEER])
    assert ok == [keyed] and "c1-w2" in problems[0] and "in clear" in problems[0]
    assert dp.peer_objects(keyed).routes == [RouteSpec(N("10.244.2.0/24"), None, dp.wg.name)]
    plain = cfg(mode="host-gw")
    assert isinstance(encryption.layer(HostGw(plain, None), plain, None), HostGw)  # type: ignore[arg-type]


def test_routed_pod_interface_maps_to_the_plugins_routed_mode() -> None:
    assert MODES[PodInterface.ROUTED] == "routed" and MODES[PodInterface.BRIDGED] == "bridge"
    assert routed.host_if_name("default/a").startswith("cali")
    assert len(routed.host_if_name("default/a")) == 15
