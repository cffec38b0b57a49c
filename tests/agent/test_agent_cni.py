"""The agent as a CNI runtime: a burst of pods survives a kill -9, exactly once, no leaks.

30 pods are applied at once to one node; the agent is killed with SIGKILL while
it sets them up (some attached, some ADDs in flight, some not started) and
restarted. Every pod must end up Running with its own address, attached once
(one reservation, one cached result, one veth each), and after the pods are
deleted nothing may remain: no reservation, cache file, veth or namespace. An
attachment made through the runtime-facing network (as podman would) must
survive the agent's garbage collection throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from pyroute2 import IPRoute

from harness.cni import nsutil
from harness.store.keys import pod_key
from harness.testlab.agentlab import Node
from harness.testlab.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.integration]

COUNT = 30


def _pod(name: str, node: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "command": ["sleep", "infinity"]}]},
    })  # fmt: skip


def _state(n: Node) -> dict[str, list[str]]:
    """What the node holds for the pods network: reservations, cache files, veths, netns."""
    ipam = n.dir / "state" / "cni" / "ipam"
    with IPRoute(netns=f"/run/netns/{n.ns}") as ipr:
        aliases = [str(m.get_attr("IFLA_IFALIAS") or "") for m in ipr.get_links()]
    return {
        "reserved": sorted(p.name for p in ipam.glob("*/10.*")),
        "cached": sorted(p.name for p in (n.dir / "cni-cache" / "results").glob("podlab-pods-*")),
        "veths": sorted(a for a in aliases if a.startswith("podlab-cni podlab-pods ")),
        "netns": sorted(p.name for p in n.netns_dir.glob("pod-*")),
        "other": sorted(a for a in aliases if a.startswith("podlab-cni podlab ")),
    }


def _runtime_attach(n: Node, command: str) -> subprocess.CompletedProcess[bytes]:
    """ADD/DEL through the runtime-facing conflist (network "podlab"), as podman would."""
    conflist = json.loads((n.dir / "cni-conf" / "10-podlab.conflist").read_text())
    conf = {**conflist["plugins"][0], "cniVersion": "1.0.0", "name": conflist["name"]}
    netns = str(n.netns_dir / "podman-like")
    if command == "ADD":
        nsutil.create(netns, lo_up=True)
    bin_dir = n.dir / "cni-bin"
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": "podman-like",
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": str(bin_dir)}  # fmt: skip
    argv = ["nsenter", f"--net=/run/netns/{n.ns}", str(bin_dir / "podlab-cni")]
    res = subprocess.run(argv, input=json.dumps(conf).encode(), env=env, capture_output=True,
                         timeout=60)  # fmt: skip
    if command == "DEL":
        nsutil.remove(netns)
    return res


def test_a_burst_survives_kill9_exactly_once_and_leaves_nothing(agent_lab) -> None:
    lab = agent_lab(1, "vxlan", resync_s=2.0)
    n1 = lab.nodes[0]
    lab.start_agent(n1)
    lab.wait_node(n1)
    other = _runtime_attach(n1, "ADD")
    assert other.returncode == 0, other
    names = [f"k{i:02d}" for i in range(COUNT)]
    lab.store.put_many([(pod_key("t1", "default", p), _pod(p, n1.name)) for p in names])
    wait_for("a third of the pods attached", lambda: len(_state(n1)["cached"]) >= COUNT // 3,
             timeout=120, every=0.02)  # fmt: skip
    lab.stop_agent(n1, signal.SIGKILL)
    mid = _state(n1)
    lab.start_agent(n1)

    def running() -> list[dict]:  # type: ignore[type-arg]
        s = [lab.pod_status(p) for p in names]
        bad = {p: x for p, x in zip(names, s, strict=True)
               if not (x and x.get("phase") == "Running" and x.get("podIP"))}  # fmt: skip
        if bad:  # wait_for reports the last one
            raise AssertionError(f"not Running: {bad}")
        return s  # type: ignore[return-value]

    statuses = wait_for("every pod Running", running, timeout=180)
    ips = [s["podIP"] for s in statuses]
    assert len(set(ips)) == COUNT, f"duplicate pod addresses after the kill: {sorted(ips)}"
    time.sleep(5)  # two full passes (resync 2 s): GC has run
    held = _state(n1)
    assert held["other"], "the agent's GC removed another runtime's attachment"
    pod_ips = sorted(ips)
    other_ip = json.loads(other.stdout)["ips"][0]["address"].split("/")[0]
    assert sorted(held["reserved"]) == sorted([*pod_ips, other_ip]), (
        f"reservations {held['reserved']} != pods' {pod_ips} + {other_ip} (mid-kill: {mid})"
    )
    assert (len(held["cached"]), len(held["veths"]), len(held["netns"])) == (COUNT,) * 3, held
    for name, st in zip(names, statuses, strict=True):
        with IPRoute(netns=n1.pod_netns(st["netns"])) as ipr:
            addrs = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(label="eth0")]
        assert addrs == [st["podIP"]], f"pod {name}: eth0 has {addrs}, status says {st['podIP']}"
    for p in names:
        lab.store.delete(pod_key("t1", "default", p))
    wait_for("pods gone", lambda: all(lab.pod_status(p) is None for p in names), timeout=120)
    wait_for("nothing of the pods left", lambda: (s := _state(n1))["cached"] == [] and s,
             timeout=30)  # fmt: skip
    left = _state(n1)
    assert (left["reserved"], left["veths"], left["netns"]) == ([other_ip], [], []), left
    assert _runtime_attach(n1, "DEL").returncode == 0
    assert _state(n1)["reserved"] == []
