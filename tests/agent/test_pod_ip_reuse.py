"""A pod that gets a deleted pod's address is reachable at once (bridged pods, cni0).

The lowest free address goes to the next pod, so a new pod usually reuses the
address of one just deleted, while neighbour entries on ``cni0`` — the node's,
and those of the other pods on the bridge — still map it to the deleted pod's
MAC (REACHABLE for up to ~45 s). Measured before the agent announced new pods:
the node reached the new pod 22 s after it listened. ``cni0`` has a MAC of its
own, so a pod's veth joining or leaving never changes the bridge's MAC (which
would also flush the node's entries and hide the stale one); the test checks
that too.
"""

from __future__ import annotations

import time

import pytest
from pyroute2 import IPRoute

from harness.cni import bridged
from harness.store.keys import pod_key
from harness.testlab.agentlab import AgentLab, Node
from harness.testlab.wait import wait_for
from tests.agent.probes import tcp_hello
from tests.agent.test_agent_datapath import ECHO

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.timeout(300)]

PROMPT_S = 3.0  # a new pod must answer its node and its neighbours this soon after it listens


def _mac(node: Node, dev: str) -> str:
    with IPRoute(netns=node.ns) as ipr:
        return str(ipr.get_links(ipr.link_lookup(ifname=dev)[0])[0].get_attr("IFLA_ADDRESS"))


def test_a_pod_reusing_a_deleted_pods_address_is_reachable_at_once(agent_lab) -> None:
    lab: AgentLab = agent_lab(1, "host-gw")
    n1 = lab.nodes[0]
    lab.start_agent(n1)
    lab.wait_node(n1)
    lab.apply_pod("keep", n1, [*ECHO, "--name", "keep"])
    keep = lab.wait_running("keep")
    # a port with a MAC below the bridge's: a bridge without its own MAC would take it
    veth = bridged.host_if_name("default/keep")
    lab.ns_run(n1, ["ip", "link", "set", veth, "address", "02:00:00:00:00:01"])
    bridge_mac = _mac(n1, "cni0")
    assert bridge_mac != "02:00:00:00:00:01", "cni0 took a port's MAC: it has none of its own"
    lab.apply_pod("old", n1, [*ECHO, "--name", "old"])
    old = lab.wait_running("old")
    ip = old["podIP"]
    for who, run in (("node", lambda: lab.ns_run(n1, tcp_hello(ip, 8080), check=False)),
                     ("keep", lambda: lab.pod_run(n1, keep["netns"], tcp_hello(ip, 8080),
                                                  check=False))):  # fmt: skip
        wait_for(f"{who} → old", lambda run=run: run().stdout.startswith("old"))
    lab.store.delete(pod_key("t1", "default", "old"))
    wait_for("old removed", lambda: lab.pod_status("old") is None, 60)
    lab.apply_pod("new", n1, [*ECHO, "--name", "new"])
    new = lab.wait_running("new")
    assert new["podIP"] == ip, f"the new pod got {new['podIP']}, not the freed {ip}"
    assert _mac(n1, "cni0") == bridge_mac, "cni0's MAC changed as pods came and went"
    wait_for(
        "new listens",
        lambda: lab.pod_run(
            n1, new["netns"], tcp_hello("127.0.0.1", 8080), check=False
        ).stdout.startswith("new"),
        60,
    )
    listening = time.monotonic()
    wait_for("node → new", lambda: lab.ns_run(n1, tcp_hello(ip, 8080), check=False)
             .stdout.startswith("new"), PROMPT_S)  # fmt: skip
    wait_for("keep → new (same bridge)", lambda: lab.pod_run(
        n1, keep["netns"], tcp_hello(ip, 8080), check=False).stdout.startswith("new"),
        PROMPT_S)  # fmt: skip
    took = time.monotonic() - listening
    assert took < 2 * PROMPT_S, (
        f"the new pod answered its neighbours {took:.1f} s after it listened"
    )
