"""The explicit table of datapath modes (no import-time registration, no scanning).

To add a mode, import its class here and add one line to ``DATAPATHS``; see
``base.py`` for the rest of the checklist.
"""

from __future__ import annotations

from pyroute2 import IPRoute

from harness.agent.config import AgentConfig
from harness.agent.datapath.base import Datapath
from harness.agent.datapath.hostgw import HostGw
from harness.agent.datapath.udp import Udp
from harness.agent.datapath.vxlan import Vxlan

DATAPATHS: dict[str, type[Datapath]] = {
    "host-gw": HostGw,
    "vxlan": Vxlan,
    "udp": Udp,
}

#: Modes the configuration accepts but this agent does not implement yet.
PLANNED = {"bgp", "ipip", "calico-vxlan", "cross-subnet"}


class UnknownMode(Exception):
    """The configured mode has no datapath in this agent."""


def create(cfg: AgentConfig, ipr: IPRoute) -> Datapath:
    """Instantiate the configured mode's datapath, or explain why we cannot."""
    cls = DATAPATHS.get(cfg.mode)
    if cls is None:
        later = (
            " (planned: Calico-style modes arrive in a later issue)" if cfg.mode in PLANNED else ""
        )
        raise UnknownMode(
            f"mode {cfg.mode!r} is not implemented by this agent{later}; "
            f"available: {', '.join(sorted(DATAPATHS))}"
        )
    return cls(cfg, ipr)  # type: ignore[call-arg]
