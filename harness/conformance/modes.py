"""Matrix entries (``vxlan``, ``bgp+wireguard``) and the mode families they belong to.

A datapath breaks along three lines, so a mode belongs to one family on each
axis (docs/adr/0009-conformance-matrix-cover.md):

- ``pods``: **bridged** (Flannel style: the pod's veth on bridge ``cni0``) or
  **routed** (Calico style: a ``cali*`` veth with a /32 route);
- ``encapsulation``: **encapsulated** (VXLAN, UDP, IPIP; cross-subnet
  encapsulates across segments) or **direct** (host-gw, BGP: the pod's own
  header on the underlay);
- ``encryption``: **encrypted** (WireGuard layered on) or **clear**.

Pure: the plugin, the matrix planner and the report's coverage table share it.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UserError
from harness.plan.model import CALICO_MODES, ENCRYPTIONS, MODES

AXES: dict[str, tuple[str, str]] = {
    "pods": ("bridged", "routed"),
    "encapsulation": ("encapsulated", "direct"),
    "encryption": ("encrypted", "clear"),
}
DIRECT_MODES = ("host-gw", "bgp")


@dataclass(frozen=True)
class ModeSpec:
    """A matrix entry: a datapath mode, optionally with encryption ("vxlan+wireguard")."""

    mode: str
    encryption: str = "none"

    @classmethod
    def parse(cls, text: str) -> ModeSpec:
        mode, _, enc = str(text).partition("+")
        if mode not in MODES:
            raise UserError(f"--mode {text!r}: unknown mode {mode!r} (modes: {', '.join(MODES)})")
        if enc and enc not in ENCRYPTIONS:
            raise UserError(f"--mode {text!r}: unknown encryption {enc!r} (use MODE+wireguard)")
        return cls(mode, enc or "none")

    def __str__(self) -> str:
        return self.mode if self.encryption == "none" else f"{self.mode}+{self.encryption}"

    @property
    def families(self) -> frozenset[str]:
        """The three families this entry belongs to, e.g. {"bridged", "direct", "clear"}."""
        return frozenset(families(self))


def families(spec: ModeSpec) -> tuple[str, str, str]:
    """(pods, encapsulation, encryption) family of a matrix entry."""
    pods = "routed" if spec.mode in CALICO_MODES else "bridged"
    encap = "direct" if spec.mode in DIRECT_MODES else "encapsulated"
    enc = "clear" if spec.encryption == "none" else "encrypted"
    return pods, encap, enc


def family_label(spec: ModeSpec) -> str:
    """How the run's plan and the report name a mode's families: "bridged · direct · clear"."""
    return " · ".join(families(spec))
