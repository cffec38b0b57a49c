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

from collections.abc import Mapping, Sequence
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


def phase_entries(token: str, clusters: Sequence[str]) -> dict[str, ModeSpec]:
    """A lockstep phase as the script passes it, per cluster: ``ENTRY`` (every cluster),
    or a pair's ``c1=ENTRY,c2=ENTRY`` (matrix.Phase.token), every cluster named once."""
    if "=" not in token:
        spec = ModeSpec.parse(token)
        return {c: spec for c in clusters}
    out: dict[str, ModeSpec] = {}
    for item in token.split(","):
        cluster, eq, entry = item.partition("=")
        if not eq or cluster not in clusters or cluster in out:
            raise UserError(f"phase {token!r}: {item!r} is not CLUSTER=ENTRY for a cluster of "
                            f"the lab ({', '.join(clusters)}), each once")  # fmt: skip
        out[cluster] = ModeSpec.parse(entry)
    missing = [c for c in clusters if c not in out]
    if missing:
        raise UserError(f"phase {token!r}: no entry for cluster {missing[0]}")
    return out


def deploy_mode(entries: Mapping[str, ModeSpec]) -> tuple[str, str]:
    """``podlab deploy``'s ``--mode`` and ``--encryption`` for a phase's entries: one MODE
    when every cluster runs the same, else CLUSTER=MODE,…; the encryption is one for all
    (a mesh's rule; a pair has one)."""
    specs = list(entries.values())
    encs = {s.encryption for s in specs}
    if len(encs) != 1:
        raise UserError(f"clusters in one lab switch need one encryption, not {sorted(encs)}")
    if len({s.mode for s in specs}) == 1:
        return specs[0].mode, specs[0].encryption
    return ",".join(f"{c}={s.mode}" for c, s in entries.items()), specs[0].encryption
