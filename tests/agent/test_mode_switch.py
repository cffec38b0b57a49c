"""A mode switch leaves the node exactly as a fresh agent in the new mode would make it.

One two-node lab (real agents, real etcd, pods a and a2 on n1, b on n2) walks a
chain of switches that crosses every pair of pod interface families (bridged ↔
routed, and within each), turns WireGuard on, off and keeps it, and starts once
from every mode that makes something of its own (``flannel.1``, ``flannel0``,
BIRD, ``tunl-pl``, ``vxlan.calico``, the WireGuard interface and wireguard-go,
``cni0``). After each switch, node n1's podlab-made state (``kernelstate``) is
compared with what a FRESH agent in the new mode makes on the same node: n1 is
then wiped (a new namespace, empty state and run dirs) and started in the new
mode with the same pods; the two sets must be equal. The reference is never a
hand-written list, so a mode that gains a device is covered without editing
this test. Each step also shows that the old state had something to remove.

Steps share the lab and run in order (each starts where the previous ended);
one run alone first switches the lab to its starting mode.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pyroute2 import IPRoute

from harness.cni import bridged, routed
from harness.testlab.agentlab import AgentLab, Node
from harness.testlab.wait import wait_for
from tests.agent import kernelstate
from tests.agent.probes import tcp_hello
from tests.agent.test_agent_datapath import ECHO
from tests.agent.test_calico_modes import _set_cfg

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.timeout(600)]

ROUTED = {"bgp", "ipip", "calico-vxlan", "cross-subnet"}
RESYNC_S = 1.0
PODS = {"a": 0, "a2": 0, "b": 1}  # pod → index of its node

#: (from, to): bridged→routed, routed→bridged, routed→routed, bridged→bridged; WireGuard
#: off→on, on→off, on→on, off→off; every device-owning mode left once.
CHAIN = [
    ("vxlan", "bgp+wireguard"),
    ("bgp+wireguard", "udp"),
    ("udp", "ipip"),
    ("ipip", "calico-vxlan+wireguard"),
    ("calico-vxlan+wireguard", "host-gw+wireguard"),
    ("host-gw+wireguard", "vxlan"),
]


def _split(spec: str) -> tuple[str, str]:
    mode, _, enc = spec.partition("+")
    return mode, enc or "none"


@dataclass
class SwitchLab:
    lab: AgentLab
    spec: str = "vxlan"
    state: frozenset[kernelstate.Obj] = frozenset()  # n1 when last settled ...
    state_spec: str = ""  # ... in this mode

    def node(self, i: int) -> Node:
        return self.lab.nodes[i]


@pytest.fixture(scope="module")
def switch_lab() -> Iterator[SwitchLab]:
    lab = AgentLab(2, "vxlan", resync_s=RESYNC_S)
    try:
        for n in lab.nodes:
            lab.start_agent(n)
        for pod, i in PODS.items():
            lab.apply_pod(pod, lab.nodes[i], [*ECHO, "--name", pod])
        sl = SwitchLab(lab)
        _settled(sl)
        yield sl
    finally:
        for n in lab.nodes:
            if n.log.exists():
                print(f"----- agent log {n.name}\n{n.log.read_text()[-3000:]}")
        lab.close()


# -- waiting for the state the comparison reads ---------------------------------------


def _tokens(sl: SwitchLab) -> dict[str, str]:
    """Pod addresses, n1's own subnet (a fresh n1 may lease another one when the old
    lease expired meanwhile) and the nodes' public keys, by what they stand for."""
    net = ipaddress.IPv4Network(sl.lab.wait_node(sl.node(0))["podCIDR"])
    out = {str(net.network_address): "SELF.0", str(net.network_address + 1): "SELF.1"}
    for pod in PODS:
        st = sl.lab.pod_status(pod) or {}
        if st.get("podIP"):
            out[st["podIP"]] = f"POD:{pod}"
    for n in sl.lab.nodes:
        key = (sl.lab.wait_node(n).get("backend") or {}).get("WireguardPublicKey")
        if key:
            out[key] = f"KEY:{n.name}"
    return out


def _plumbed(sl: SwitchLab, mode: str) -> bool:
    """Every pod re-plumbed for ``mode``: its veth of the mode's style, at the node's MTU."""
    for pod, i in PODS.items():
        node, st = sl.node(i), sl.lab.pod_status(pod)
        if not st or st.get("phase") != "Running":
            return False
        mtu = sl.lab.wait_node(node)["mtu"]
        want = routed.host_if_name(f"default/{pod}")
        other = bridged.host_if_name(f"default/{pod}")
        if mode not in ROUTED:
            want, other = other, want
        with IPRoute(netns=node.ns) as ipr:
            if ipr.link_lookup(ifname=other) or not ipr.link_lookup(ifname=want):
                return False
            if ipr.get_links(ipr.link_lookup(ifname=want)[0])[0].get_attr("IFLA_MTU") != mtu:
                return False
        with IPRoute(netns=node.pod_netns(st["netns"])) as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")
            if not eth0 or ipr.get_links(eth0[0])[0].get_attr("IFLA_MTU") != mtu:
                return False
    return True


def _talks(sl: SwitchLab) -> bool:
    a, b = sl.lab.pod_status("a"), sl.lab.pod_status("b")
    assert a and b
    out = sl.lab.pod_run(sl.node(0), a["netns"], tcp_hello(b["podIP"], 8080), check=False)
    back = sl.lab.pod_run(sl.node(1), b["netns"], tcp_hello(a["podIP"], 8080), check=False)
    return out.stdout.split()[:1] == ["b"] and back.stdout.split()[:1] == ["a"]


def _snapshot(sl: SwitchLab) -> frozenset[kernelstate.Obj]:
    n1 = sl.node(0)
    pods = {}
    for pod, i in PODS.items():
        st = sl.lab.pod_status(pod)
        if i == 0 and st:
            pods[pod] = n1.pod_netns(st["netns"])
    agent = {n1.proc.pid} if n1.proc is not None else set()
    return kernelstate.snapshot(n1.ns, n1.dir / "run", pods, _tokens(sl), agent)


def _settled(sl: SwitchLab, timeout: float = 90.0) -> frozenset[kernelstate.Obj]:
    """Wait until both agents run the lab's mode, every pod is re-plumbed for it, the
    pods talk both ways, and n1's state holds still over two resync periods."""
    mode, enc = _split(sl.spec)

    def agents_in_mode() -> bool:
        for n in sl.lab.nodes:
            rec = sl.lab.wait_node(n)
            wg = (rec.get("backend") or {}).get("Encryption") == "wireguard"
            if rec.get("mode") != mode or wg != (enc == "wireguard"):
                return False
        return True

    wait_for(f"both agents in {sl.spec}", agents_in_mode, timeout)
    wait_for(f"every pod re-plumbed for {sl.spec}", lambda: _plumbed(sl, mode), timeout)
    wait_for(f"a ↔ b in {sl.spec}", lambda: _talks(sl), timeout)

    def still() -> frozenset[kernelstate.Obj] | None:
        first = _snapshot(sl)
        time.sleep(2 * RESYNC_S)
        return first if _snapshot(sl) == first else None

    sl.state_spec, sl.state = "", frozenset()
    sl.state = wait_for(f"n1's state to hold still in {sl.spec}", still, timeout, every=0.5)
    sl.state_spec = sl.spec
    return sl.state


# -- switching, and a fresh node to compare with ----------------------------------------


def _switch(sl: SwitchLab, spec: str) -> None:
    mode, enc = _split(spec)
    for n in sl.lab.nodes:
        sl.lab.stop_agent(n)
        _set_cfg(n, mode=mode, encryption=enc)
        sl.lab.start_agent(n)
    sl.spec = spec


def _fresh_n1(sl: SwitchLab) -> None:
    """Replace n1 by a brand-new node (new namespace, empty dirs) running the lab's mode."""
    mode, enc = _split(sl.spec)
    new = sl.lab.replace_node(sl.node(0), mode=mode, encryption=enc)
    sl.lab.start_agent(new)


def _ensure(sl: SwitchLab, spec: str) -> None:
    """The lab settled in ``spec`` (where the previous step left it, unless it failed)."""
    if sl.spec != spec:
        _switch(sl, spec)
    if sl.state_spec != spec:
        _settled(sl)


@pytest.mark.parametrize(
    ("src", "dst"), CHAIN, ids=[f"{a}-to-{b}".replace("+wireguard", "-wg") for a, b in CHAIN]
)
def test_a_switch_leaves_exactly_what_a_fresh_agent_makes(
    switch_lab: SwitchLab, src: str, dst: str
) -> None:
    sl = switch_lab
    _ensure(sl, src)
    before = sl.state
    _switch(sl, dst)
    switched = _settled(sl)
    _fresh_n1(sl)
    fresh = _settled(sl)
    left, missing = switched - fresh, fresh - switched
    assert not left and not missing, (
        f"{src} → {dst}: n1 after the switch differs from a fresh {dst} agent\n"
        f"left over by the switch:\n{kernelstate.describe(left)}\n"
        f"missing after the switch:\n{kernelstate.describe(missing)}"
    )
    gone = before - fresh
    assert any(o[1] in ("link", "process") for o in gone), (
        f"{src} → {dst}: the old state had no device or daemon a fresh {dst} agent lacks; "
        f"this step proves no removal:\n{kernelstate.describe(gone)}"
    )
