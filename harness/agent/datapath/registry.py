"""The explicit table of datapath modes (no import-time registration, no scanning).

To add a mode, import its class here and add one line to ``DATAPATHS``; see
``base.py`` for the rest of the checklist.
"""

from __future__ import annotations

from pyroute2 import IPRoute

from harness.agent import encryption
from harness.agent.config import AgentConfig
from harness.agent.datapath import mesh
from harness.agent.datapath.base import Datapath
from harness.agent.datapath.bgp import Bgp
from harness.agent.datapath.calicovxlan import CalicoVxlan
from harness.agent.datapath.crosssubnet import CrossSubnet
from harness.agent.datapath.hostgw import HostGw
from harness.agent.datapath.ipip import Ipip
from harness.agent.datapath.udp import Udp
from harness.agent.datapath.vxlan import Vxlan

DATAPATHS: dict[str, type[Datapath]] = {
    "host-gw": HostGw,
    "vxlan": Vxlan,
    "udp": Udp,
    "bgp": Bgp,
    "ipip": Ipip,
    "calico-vxlan": CalicoVxlan,
    "cross-subnet": CrossSubnet,
}


class UnknownMode(Exception):
    """The configured mode has no datapath in this agent."""


def create(cfg: AgentConfig, ipr: IPRoute) -> Datapath:
    """Instantiate the configured mode's datapath (with WireGuard layered on top when
    ``encryption: wireguard``, and the cluster mesh on top of that when ``mesh`` is
    set), or explain why we cannot."""
    cls = DATAPATHS.get(cfg.mode)
    if cls is None:
        raise UnknownMode(
            f"mode {cfg.mode!r} is not implemented by this agent; "
            f"available: {', '.join(sorted(DATAPATHS))}"
        )
    dp = encryption.layer(cls(cfg, ipr), cfg, ipr)  # type: ignore[call-arg]
    return mesh.layer(dp, cfg, ipr)
