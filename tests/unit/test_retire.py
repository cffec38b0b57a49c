"""What a node must remove when it runs another mode: declared ownership, pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.agent import retire
from harness.agent.config import AgentConfig
from harness.agent.datapath.registry import DATAPATHS
from harness.agent.wireguard import iface_name


def cfg(mode: str, encryption: str = "none", mesh: str | None = None) -> AgentConfig:
    return AgentConfig(
        node="n1", cluster="c1", etcd_endpoints=["http://127.0.0.1:2379"],
        pod_cidr="10.244.0.0/16", mode=mode, encryption=encryption, mesh=mesh,
        underlay_interface="eth1", underlay_address="10.0.0.1", run_dir=Path("/run/p"),
    )  # fmt: skip


@pytest.mark.parametrize("encryption", ["none", "wireguard"])
@pytest.mark.parametrize("mode", sorted(DATAPATHS))
def test_a_mode_never_removes_what_it_owns_and_owns_or_removes_everything(
    mode: str, encryption: str
) -> None:
    c = cfg(mode, encryption)
    mine, gone = retire.owned_by(c), retire.leftovers(c)
    assert not (mine.links & gone.links) and not (mine.daemons & gone.daemons)
    assert not (mine.files & gone.files) and not (mine.route_protos & gone.route_protos)
    assert mine | gone == retire.owned_by_any(c)


def test_leaving_flannel_vxlan_for_bgp_removes_flannel_and_keeps_bird() -> None:
    gone = retire.leftovers(cfg("bgp"))
    assert {"flannel.1", "flannel0", "cni0", "vxlan.calico", "tunl-pl", iface_name("n1")} <= (
        gone.links
    )
    assert {d.comm for d in gone.daemons} == {"wireguard-go"}
    assert Path("/run/p/bird.conf") not in gone.files and not gone.route_protos


def test_turning_wireguard_off_removes_its_interface_daemon_and_socket() -> None:
    on, off = retire.owned_by(cfg("vxlan", "wireguard")), retire.leftovers(cfg("vxlan"))
    wg = on - retire.owned_by(cfg("vxlan"))
    assert wg.links == {iface_name("n1")} and {d.comm for d in wg.daemons} == {"wireguard-go"}
    assert wg.links <= off.links and wg.daemons <= off.daemons and wg.files <= off.files
    assert "flannel.1" in on.links and "cni0" in on.links


def test_the_mesh_tunnel_stays_only_while_the_mesh_routes_through_it() -> None:
    assert "vxlan.mesh" in retire.owned_by(cfg("vxlan", mesh="m1")).links
    for gone in (cfg("vxlan"), cfg("vxlan", "wireguard", "m1"), cfg("bgp", mesh="m1")):
        assert "vxlan.mesh" in retire.leftovers(gone).links, gone
