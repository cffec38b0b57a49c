"""Calico's ``vxlan`` (mode ``calico-vxlan``): Flannel's VXLAN recipe with Calico's numbers.

Kernel objects: one device ``vxlan.calico`` (VNI 4096, UDP 4789, learning off,
local = underlay IP, MAC derived from the node name, address ``<own subnet>.0/32``)
and per peer one onlink route ``<peer subnet> via <peer subnet>.0 dev vxlan.calico``,
one permanent neighbour ``<peer subnet>.0 lladdr <peer VTEP MAC>`` and one FDB entry
``<peer VTEP MAC> dst <peer underlayIP>``; the VTEP MAC goes into the lease as
``backend.VtepMAC``. The mechanics are ``vxlan.Vxlan``'s, parameterised; only the
numbers, the device name and the pod interface style differ. Pods attach the
Calico way (``PodInterface.ROUTED``: ``cali*`` veth, /32 route, proxy-ARP).
MTU = underlay − 50. Options: none (VNI and port are Calico's defaults).
"""

from __future__ import annotations

from typing import ClassVar

from harness.agent.datapath.base import PodInterface
from harness.agent.datapath.vxlan import Vxlan


class CalicoVxlan(Vxlan):
    name: ClassVar[str] = "calico-vxlan"
    pod_interface: ClassVar[PodInterface] = PodInterface.ROUTED
    overhead: ClassVar[int] = 50
    vni: ClassVar[int] = 4096
    port: ClassVar[int] = 4789
    device: ClassVar[str] = "vxlan.calico"
    mac_seed: ClassVar[str] = "vxlan.calico"
