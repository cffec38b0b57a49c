"""Agent robustness: kill -9 and restart, drift repair, nodes leaving, pod deletion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from harness.agent.datapath.base import RTPROT_PODLAB
from harness.store.keys import pod_key
from harness.testlab.agentlab import PYTHON, AgentLab, Node
from harness.testlab.wait import wait_for
from tests.agent.probes import TCP_HOLD, tcp_hello

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

ECHO = ["python", "-m", "harness.workloads.echo", "--tcp", "8080"]


def _start(lab: AgentLab) -> None:
    for n in lab.nodes:
        lab.start_agent(n)
    for n in lab.nodes:
        lab.wait_node(n)


def _kernel(node: Node) -> dict[str, list]:
    """Our routes (proto 77), permanent neighbours and FDB entries on the node."""
    with IPRoute(netns=f"/run/netns/{node.ns}") as ipr:
        routes = sorted(
            f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
            for r in ipr.get_routes(table=254, family=2)
            if r["proto"] == RTPROT_PODLAB
        )
        neighs = sorted(
            n.get_attr("NDA_DST") for n in ipr.get_neighbours(family=2) if n["state"] & 0x80
        )
        idx = ipr.link_lookup(ifname="flannel.1")
        fdb = sorted(
            f"{f.get_attr('NDA_LLADDR')}>{f.get_attr('NDA_DST')}"
            for f in (ipr.fdb("dump", ifindex=idx[0]) if idx else [])
            if f.get_attr("NDA_DST") and f["ifindex"] == idx[0]
        )
        addrs = sorted(
            f"{a.get_attr('IFA_LABEL')}:{a.get_attr('IFA_ADDRESS')}" for a in ipr.get_addr(family=2)
        )
    return {"routes": routes, "neighs": neighs, "fdb": fdb, "addrs": addrs}


def _describe(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError as exc:
        return f"gone now ({exc})"
    keep = [ln for ln in status if ln.split(":")[0] in ("Name", "State", "PPid")]
    ppid = keep[-1].split()[-1]
    parent = Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    return f"{cmd!r} {keep} parent {parent!r}"


def _check(node: Node) -> list[str]:
    return [PYTHON, "-m", "harness.agent.main", "--check", "--config", str(node.dir / "agent.yaml")]


def _pod_pid(node: Node, name: str) -> int:
    state = json.loads((node.dir / "state" / "pods" / f"default_{name}.json").read_text())
    return int(state["pid"])


@pytest.mark.parametrize("mode", ["vxlan", "udp"])
def test_kill9_restart_keeps_pods_and_flows_and_reconciles(agent_lab, mode: str) -> None:
    lab = agent_lab(2, mode)
    _start(lab)
    n1, n2 = lab.nodes
    born = lab.wait_node(n1)["creationTimestamp"]
    lab.apply_pod("a", n1, ECHO)
    lab.apply_pod("b", n2, ECHO)
    a, b = lab.wait_running("a"), lab.wait_running("b")
    wait_for(
        "b's echo server reachable from a",
        lambda: (
            lab.pod_run(n1, a["netns"], tcp_hello(b["podIP"], 8080), check=False).returncode == 0
        ),
    )
    before = _kernel(n1)
    pid_a = _pod_pid(n1, "a")
    # a long-lived TCP flow from pod a to pod b, across the agent's death
    flow = subprocess.Popen(
        [
            "nsenter",
            f"--net={n1.pod_netns(a['netns'])}",
            PYTHON,
            "-c",
            TCP_HOLD,
            b["podIP"],
            "8080",
            "8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1)
    lab.stop_agent(n1, signal.SIGKILL)
    time.sleep(1)
    lab.start_agent(n1)
    out, _ = flow.communicate(timeout=90)
    assert out.startswith("ok"), f"flow a→b across kill -9 of n1's agent: {out}"
    wait_for("n1 heartbeat after restart", lambda: "reusing etcd lease" in n1.log.read_text())
    assert lab.wait_node(n1)["creationTimestamp"] == born, "a restart keeps the node's AGE"
    assert _pod_pid(n1, "a") == pid_a and os.path.exists(f"/proc/{pid_a}")
    assert lab.pod_status("a")["podIP"] == a["podIP"]
    assert _kernel(n1) == before, "restart changed or duplicated kernel state"
    # drift: someone deletes our route and adds a stale one of ours; resync repairs both
    with IPRoute(netns=f"/run/netns/{n1.ns}") as ipr:
        dst = b["podIP"].rsplit(".", 1)[0] + ".0"
        ipr.route("del", dst=dst, dst_len=24, proto=RTPROT_PODLAB)
        # 10.244.0.0/24 is never leased (the first subnet is skipped), so it is surely stale
        ipr.route("add", dst="10.244.0.0", dst_len=24, gateway="10.199.0.2", proto=RTPROT_PODLAB)
    wait_for("drift repaired", lambda: _kernel(n1) == before)


def test_node_that_leaves_disappears_from_peers(agent_lab) -> None:
    lab = agent_lab(3, "vxlan", lease_ttl_s=4)
    _start(lab)
    n1, n2, n3 = lab.nodes
    sub3 = lab.wait_node(n3)["podCIDR"]
    wait_for("n1 has n2 and n3", lambda: len(_kernel(n1)["routes"]) == 2)
    lab.apply_pod("c", n3, ECHO)
    c = lab.wait_running("c")
    pid_c = _pod_pid(n3, "c")
    health = lab.ns_run(n3, _check(n3), check=False)
    assert (health.returncode, health.stdout.split()[:2]) == (0, ["ok:", "n3"]), health
    lab.stop_agent(n3, signal.SIGTERM)
    assert "stopped; pods, routes and devices left in place" in n3.log.read_text()
    assert os.path.exists(f"/proc/{pid_c}"), "SIGTERM of the agent must not stop its pods"
    assert len(_kernel(n3)["routes"]) == 2, "a stopped agent must leave its routes in place"
    wait_for(
        "n3 gone from n1 and n2",
        lambda: all(
            sub3 not in _kernel(n)["routes"] and len(_kernel(n)["fdb"]) == 1 for n in (n1, n2)
        ),
        timeout=60,
    )
    assert lab.store.get("/podlab/v1/t1/nodes/n3") is None
    health = lab.ns_run(n3, _check(n3), check=False)
    assert health.returncode == 1 and "no node record for n3" in health.stdout, health
    assert c["podIP"]


def test_pod_delete_removes_everything_and_frees_the_address(agent_lab) -> None:
    lab = agent_lab(1, "vxlan")
    _start(lab)
    n1 = lab.nodes[0]
    lab.apply_pod("x", n1, ECHO)
    x = lab.wait_running("x")
    pid = _pod_pid(n1, "x")
    host_if = json.loads((n1.dir / "state/pods/default_x.json").read_text())["host_if"]
    lab.store.delete(pod_key("t1", "default", "x"))
    wait_for("status removed", lambda: lab.pod_status("x") is None)
    podlog = (n1.dir / "log/pods/default_x.log").read_text()[-500:]
    assert not os.path.exists(f"/proc/{pid}"), f"pod still running: {_describe(pid)} {podlog}"
    assert not os.path.exists(n1.pod_netns(x["netns"])), "pod netns still there"
    with IPRoute(netns=f"/run/netns/{n1.ns}") as ipr:
        assert not ipr.link_lookup(ifname=host_if), f"veth {host_if} still there"
    lab.apply_pod("y", n1, ECHO)
    assert lab.wait_running("y")["podIP"] == x["podIP"], "released address not reused"


def test_restart_policy_and_readiness(agent_lab) -> None:
    lab = agent_lab(1, "host-gw")
    _start(lab)
    n1 = lab.nodes[0]
    lab.apply_pod("once", n1, ["sh", "-c", "exit 3"], spec={"restartPolicy": "Never"})
    lab.apply_pod("loop", n1, ["sh", "-c", "sleep 0.2"])  # restartPolicy Always (default)
    go = lab.tmp / "slow-may-listen"  # the server starts only once the test says so
    slow = [
        "sh",
        "-c",
        f"while [ ! -e {go} ]; do sleep 0.1; done; "
        "exec python -m harness.workloads.echo --tcp 8080",
    ]
    probe = {
        "readinessProbe": {"tcpSocket": {"port": "web"}},
        "ports": [{"name": "web", "containerPort": 8080}],
    }
    lab.apply_pod("slow", n1, slow, container=probe)

    def status(name: str) -> dict:
        return lab.pod_status(name) or {}

    def cond(name: str, kind: str) -> str:
        return {c["type"]: c["status"] for c in status(name).get("conditions", [])}.get(kind, "")

    failed = wait_for(
        "once Failed", lambda: status("once").get("phase") == "Failed" and status("once")
    )
    assert failed["containerStatuses"][0]["lastExitCode"] == 3, failed
    assert "status 3" in failed["message"]
    assert lab.wait_running("slow") and cond("slow", "Ready") == "False"
    time.sleep(1)  # several probe periods with nothing listening
    assert cond("slow", "Ready") == "False", "Ready before the readiness probe could pass"
    go.touch()
    wait_for("slow Ready after its probe passes", lambda: cond("slow", "Ready") == "True")
    wait_for(
        "loop restarted",
        lambda: status("loop").get("containerStatuses", [{}])[0].get("restartCount", 0) >= 1,
    )
    assert status("loop")["phase"] == "Running"


def test_agent_refuses_the_hosts_own_namespace(tmp_path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "node: x\ncluster: t\netcd_endpoints: ['http://127.0.0.1:1']\n"
        "pod_cidr: 10.244.0.0/16\nunderlay_interface: eth1\nunderlay_address: 10.0.0.1\n"
        f"state_dir: {tmp_path}/s\nrun_dir: {tmp_path}/r\nlog_dir: {tmp_path}/l\n"
    )
    out = subprocess.run(
        [PYTHON, "-m", "harness.agent.main", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        out.returncode == 2
        and "refusing to run in the host's initial network namespace" in out.stdout
    )
    assert not (tmp_path / "r").exists(), "it must refuse before touching anything"


def test_orphans_from_a_lost_state_dir_are_removed(agent_lab) -> None:
    lab = agent_lab(1, "vxlan")
    _start(lab)
    n1 = lab.nodes[0]
    lab.apply_pod("x", n1, ECHO)
    x = lab.wait_running("x")
    pid = _pod_pid(n1, "x")
    host_if = json.loads((n1.dir / "state/pods/default_x.json").read_text())["host_if"]
    lab.stop_agent(n1, signal.SIGKILL)
    (n1.dir / "state/pods/default_x.json").unlink()  # the agent forgets pod x...
    lab.store.delete(pod_key("t1", "default", "x"))  # ...which is deleted meanwhile
    lab.start_agent(n1)
    wait_for("orphaned netns removed", lambda: not os.path.exists(n1.pod_netns(x["netns"])))
    wait_for("orphaned process stopped", lambda: not os.path.exists(f"/proc/{pid}"))
    with IPRoute(netns=f"/run/netns/{n1.ns}") as ipr:
        assert not ipr.link_lookup(ifname=host_if), f"orphaned veth {host_if} still there"
