"""Which hand-built path is the physical limit of each mode (pure, no I/O).

A mode's pod path is a pod interface style (bridged into ``cni0`` or routed on
a ``cali*`` veth) plus, between the nodes, nothing (plain routes), a VXLAN
device, an IPIP device or a WireGuard device. ``reference_for`` names the same
path built by hand with iproute2 alone: no agent, no nftables, no conntrack,
no policy or proxy hooks, kernel defaults for everything the recipe does not
say. The figures are the mode's own (VNI, UDP port, pod MTU), kept here from
the specification (DESIGN.md, CONFORMANCE.md scenario 3 via ``probes.mtu``)
rather than imported from the agent, so a wrong number in a datapath module
shows up as a difference instead of being copied into its reference.

Modes without an iproute2 equivalent get a ``NoReference`` with the reason:
flannel's ``udp`` and the userspace IPIP fallback forward every packet
through a process of the agent.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from harness.probes import mtu as mtu_spec

BRIDGED, ROUTED = "bridged", "routed"
ENCAPS = ("none", "vxlan", "ipip", "wireguard")
WIREGUARD_IMPLS = ("kernel", "wireguard-go")
# VXLAN identities as each family documents them (DESIGN.md "datapath backends").
FLANNEL_VXLAN = (1, 8472)
CALICO_VXLAN = (4096, 4789)
# The cluster mesh's own VXLAN (docs/mesh.md "Pod routing across clusters": vxlan.mesh).
MESH_VXLAN = (2, 8473)
ROUTED_MODES = ("bgp", "ipip", "calico-vxlan", "cross-subnet")


@dataclass(frozen=True)
class RefSpec:
    """One hand-built pod path: how pods attach, what carries them between nodes."""

    pods: str  # BRIDGED | ROUTED
    encap: str  # one of ENCAPS
    pod_mtu: int
    underlay_mtu: int = 1500
    vni: int = 0  # vxlan only
    port: int = 0  # vxlan: UDP destination port
    wireguard: str = ""  # wireguard only: "kernel" | "wireguard-go"
    router: bool = False  # the two nodes on two segments joined by a router (a mesh's path)

    def __post_init__(self) -> None:
        if self.pods not in (BRIDGED, ROUTED):
            raise ValueError(f"pods must be {BRIDGED!r} or {ROUTED!r}, not {self.pods!r}")
        if self.encap not in ENCAPS:
            raise ValueError(f"encap must be one of {', '.join(ENCAPS)}, not {self.encap!r}")
        if self.encap == "vxlan" and not (self.vni and self.port):
            raise ValueError("a vxlan reference needs its VNI and UDP port")
        if self.encap == "wireguard" and self.wireguard not in WIREGUARD_IMPLS:
            raise ValueError(f"wireguard must be one of {', '.join(WIREGUARD_IMPLS)}")
        if not 576 <= self.pod_mtu <= self.underlay_mtu:
            raise ValueError(f"pod MTU {self.pod_mtu} outside 576..{self.underlay_mtu}")

    @property
    def name(self) -> str:
        """Short label for reports: ``bridged``, ``routed+vxlan``, ``bridged+wireguard-go``."""
        where = "/router" if self.router else ""
        if self.encap == "none":
            return self.pods + where
        return f"{self.pods}+{self.wireguard if self.encap == 'wireguard' else self.encap}{where}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> RefSpec:
        """The inverse of ``to_json``; a bad spec raises ValueError naming the problem."""
        try:
            data = json.loads(text)
            return RefSpec(**data)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a reference spec: {exc}") from exc


@dataclass(frozen=True)
class NoReference:
    """Why a mode is reported against the underlay only."""

    reason: str


def mesh_tunnel_reference(underlay_mtu: int = 1500) -> RefSpec:
    """The cross-cluster tunnel of a mesh built by hand: flannel's bridged pods, a bare
    VXLAN device with the mesh's VNI and port to the remote node's underlay address,
    the two nodes on two segments joined by a router (as a mesh lab's clusters are).

    The physical limit of tunnel routing across clusters (issue 12): the mesh's
    ``vxlan.mesh`` path measured against it says what the agent adds, and this
    path against its own node→node across the same router says what any VXLAN
    tunnel costs there.
    """
    return RefSpec(BRIDGED, "vxlan", underlay_mtu - 50, underlay_mtu, *MESH_VXLAN, router=True)


def mesh_reference(
    mode: str,
    encryption: str = "none",
    *,
    routing: str = "tunnel",
    underlay_mtu: int = 1500,
    wireguard_impl: str = "",
) -> RefSpec | NoReference:
    """The physical limit of a mesh's cross-cluster pod path (issue 12, scenario 24): the
    client cluster's pods on two nodes on two segments joined by a router, carried as the
    mesh carries them (docs/mesh.md "Datapath"): natively routed (every cluster bgp), in
    the mesh's VXLAN tunnel (``vxlan.mesh``, VNI 2, UDP 8473), or, with ``encryption:
    wireguard``, in WireGuard between the nodes with the implementation the agents ran.
    """
    if mode not in mtu_spec.MODE_OVERHEAD:
        return NoReference(f"no hand-built reference is defined for mode {mode!r}")
    pods = ROUTED if mode in ROUTED_MODES else BRIDGED
    if encryption == "wireguard":
        if wireguard_impl not in WIREGUARD_IMPLS:
            return NoReference("the agent did not publish which WireGuard implementation ran")
        pod_mtu = mtu_spec.expected_pod_mtu(mode, underlay_mtu, encryption, mesh=True)
        return RefSpec(pods, "wireguard", pod_mtu, underlay_mtu, wireguard=wireguard_impl,
                       router=True)  # fmt: skip
    if encryption != "none":
        return NoReference(f"no hand-built reference is defined for encryption {encryption!r}")
    if routing == "native":
        return RefSpec(ROUTED, "none", underlay_mtu, underlay_mtu, router=True)
    pod_mtu = mtu_spec.expected_pod_mtu(mode, underlay_mtu, mesh=True)
    return RefSpec(pods, "vxlan", pod_mtu, underlay_mtu, *MESH_VXLAN, router=True)


def reference_for(
    mode: str,
    encryption: str = "none",
    *,
    underlay_mtu: int = 1500,
    same_segment: bool = True,
    wireguard_impl: str = "",
    ipip_impl: str = "kernel",
) -> RefSpec | NoReference:
    """The hand-built equivalent of ``mode`` (a registry name) ± WireGuard.

    ``wireguard_impl`` and ``ipip_impl`` are what the agent published for the
    run (``backend.WireguardImpl``, ``backend.IPIPImpl``): a reference is only
    fair with the same implementation. ``same_segment`` is whether the measured
    pair shares an L2 segment; the reference underlay is one segment.
    """
    if mode not in mtu_spec.MODE_OVERHEAD:
        return NoReference(f"no hand-built reference is defined for mode {mode!r}")
    pods = ROUTED if mode in ROUTED_MODES else BRIDGED
    pod_mtu = mtu_spec.expected_pod_mtu(mode, underlay_mtu, encryption)
    if not same_segment:
        return NoReference(
            "the measured pair crosses a router; the hand-built reference mirrors one L2 segment"
        )
    if encryption == "wireguard":
        if wireguard_impl not in WIREGUARD_IMPLS:
            return NoReference("the agent did not publish which WireGuard implementation ran")
        # WireGuard replaces the mode's encapsulation (agent/encryption.py): pods as the
        # mode attaches them, every peer subnet routed into the wg device.
        return RefSpec(pods, "wireguard", pod_mtu, underlay_mtu, wireguard=wireguard_impl)
    if encryption != "none":
        return NoReference(f"no hand-built reference is defined for encryption {encryption!r}")
    if mode == "udp":
        return NoReference(
            "flannel's udp backend forwards every packet through the agent (TUN + UDP socket "
            "in userspace); no iproute2-only path does that"
        )
    if mode == "ipip":
        if ipip_impl != "kernel":
            return NoReference(
                "this kernel has no ipip module: the agent's userspace IPIP forwarder ran, "
                "and a kernel ipip device cannot be built here to compare it with"
            )
        return RefSpec(pods, "ipip", pod_mtu, underlay_mtu)
    if mode == "vxlan":
        return RefSpec(pods, "vxlan", pod_mtu, underlay_mtu, *FLANNEL_VXLAN)
    if mode == "calico-vxlan":
        return RefSpec(pods, "vxlan", pod_mtu, underlay_mtu, *CALICO_VXLAN)
    if mode == "cross-subnet":
        # Calico's CrossSubnet: inside one segment the routes are direct, like bgp; the
        # pod MTU still reserves the VXLAN overhead (it must fit the encapsulated paths).
        return RefSpec(pods, "none", pod_mtu, underlay_mtu)
    return RefSpec(pods, "none", pod_mtu, underlay_mtu)  # host-gw, bgp
