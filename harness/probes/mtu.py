"""Path MTU: what each mode should give pods, and a search for the largest packet that passes.

The expected figures are the specification (CONFORMANCE.md scenario 3), kept
here independently of the agent's code so that a wrong overhead in a datapath
module fails the check instead of being copied into it.
"""

from __future__ import annotations

from collections.abc import Callable

# Bytes a mode's encapsulation adds to each pod packet on the underlay.
MODE_OVERHEAD: dict[str, int] = {
    "host-gw": 0,
    "bgp": 0,
    "ipip": 20,
    "udp": 28,
    "vxlan": 50,
    "calico-vxlan": 50,
    "cross-subnet": 50,  # Calico's vxlanMode CrossSubnet: VXLAN across segments
}
# WireGuard's overhead as each family documents it: Calico 60, Flannel 80.
WIREGUARD_OVERHEAD = {"calico": 60, "flannel": 80}
FLANNEL_FAMILY = ("host-gw", "vxlan", "udp")


#: A tunnel mesh carries cross-cluster pod traffic in VXLAN (harness/agent/datapath/mesh.py).
MESH_TUNNEL_OVERHEAD = 50


def expected_pod_mtu(
    mode: str, underlay_mtu: int, encryption: str = "none", mesh: bool = False
) -> int:
    """The pod interface MTU the spec asks for in ``mode`` on an underlay of ``underlay_mtu``.

    ``mesh``: the cluster is in a cluster mesh; unless it is native (bgp) or
    encrypted, its pods also reach other clusters through VXLAN, so the pod MTU
    fits that path too (docs/mesh.md)."""
    if mode not in MODE_OVERHEAD:
        raise KeyError(f"no MTU overhead known for mode {mode!r}")
    if encryption == "wireguard":
        family = "flannel" if mode in FLANNEL_FAMILY else "calico"
        return underlay_mtu - WIREGUARD_OVERHEAD[family]
    if mesh and mode != "bgp":
        return underlay_mtu - max(MODE_OVERHEAD[mode], MESH_TUNNEL_OVERHEAD)
    return underlay_mtu - MODE_OVERHEAD[mode]


def largest_passing(passes: Callable[[int], bool], low: int, high: int) -> int | None:
    """Binary search of the largest size in [low, high] for which ``passes`` is true.

    Assumes monotony (a size passes iff every smaller one does); returns None when
    even ``low`` fails. ``passes`` is called O(log(high - low)) times.
    """
    if not passes(low):
        return None
    good, bad = low, high + 1
    while bad - good > 1:
        mid = (good + bad) // 2
        if passes(mid):
            good = mid
        else:
            bad = mid
    return good
