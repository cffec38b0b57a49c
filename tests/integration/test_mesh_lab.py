"""A two-cluster mesh on a real netns lab: deploy (and a no-change re-deploy), both
syncers connected over TLS, pods reaching pods of the other cluster by pod IP with
the path MTU, a peer's control-plane outage that removes nothing, and its return.
Then the same lab re-deployed in bgp: native routing through the router over BGP
(sessions, routes, no encapsulation, no NAT, MTU 1500, a lost node's routes gone
within the hold time); and a second lab (one node and a router) joined to the
mesh with `podlab mesh join` — refused first (another CA, another routing), then
joined, pods reaching across the labs, and `podlab mesh leave` undoing it all.

One module-scoped lab of five nodes (two per cluster and a router), the smallest
that has a mesh, and one two-node lab for the join; the tests run in file order
and each builds on the state the previous left.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.deploy.deploy import deploy, request_for, source_root, wheelhouse_cache
from harness.deploy.runner import DeployEvent, changed_tasks
from harness.deploy.wheel import Wheelhouse, ensure_wheelhouse
from harness.testlab.deploylab import PODLAB, REPO, podlab

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.timeout(1200)]

LAB = "t-mesh-lab"
LAB2 = "t-mesh-lab2"
SUPERVISORCTL = ["supervisorctl", "-c", "/etc/podlab/supervisor/supervisord.conf"]

TOPOLOGY = {
    "name": LAB,
    "mgmt": {"ipv4-subnet": "172.31.214.0/24"},
    "topology": {
        "defaults": {"kind": "linux"},
        "groups": {
            "c1": {
                "labels": {
                    "podlab.cluster": "c1",
                    "podlab.cluster-id": "1",
                    "podlab.mesh": "tmesh",
                    "podlab.pod-cidr": "10.244.0.0/16",
                    "podlab.service-cidr": "10.96.0.0/16",
                }
            },
            "c2": {
                "labels": {
                    "podlab.cluster": "c2",
                    "podlab.cluster-id": "2",
                    "podlab.mesh": "tmesh",
                    "podlab.pod-cidr": "10.245.0.0/16",
                    "podlab.service-cidr": "10.96.0.0/16",
                }
            },
        },
        "nodes": {
            "c1-cp": {"group": "c1", "labels": {"podlab.role": "control-plane"}},
            "c1-w1": {"group": "c1"},
            "c2-cp": {"group": "c2", "labels": {"podlab.role": "control-plane"}},
            "c2-w1": {"group": "c2"},
            "router": {"labels": {"podlab.role": "router"}},
            "f1": {"kind": "bridge"},
            "f2": {"kind": "bridge"},
        },
        "links": [
            {"endpoints": ["router:eth1", "f1:p0"], "ipv4": ["10.100.1.1/24"]},
            {"endpoints": ["c1-cp:eth1", "f1:p1"]},
            {"endpoints": ["c1-w1:eth1", "f1:p2"]},
            {"endpoints": ["router:eth2", "f2:p0"], "ipv4": ["10.100.2.1/24"]},
            {"endpoints": ["c2-cp:eth1", "f2:p1"]},
            {"endpoints": ["c2-w1:eth1", "f2:p2"]},
        ],
    },
}


# The lab to join: one cluster (one node) in the same mesh, behind its own router.
TOPOLOGY2 = {
    "name": LAB2,
    "mgmt": {"ipv4-subnet": "172.31.215.0/24"},
    "topology": {
        "defaults": {"kind": "linux"},
        "nodes": {
            "c3-cp": {
                "labels": {
                    "podlab.cluster": "c3",
                    "podlab.cluster-id": "3",
                    "podlab.mesh": "tmesh",
                    "podlab.pod-cidr": "10.246.0.0/16",
                    "podlab.service-cidr": "10.96.0.0/16",
                    "podlab.role": "control-plane",
                }
            },
            "router": {"labels": {"podlab.role": "router"}},
        },
        "links": [
            {"endpoints": ["router:eth1", "c3-cp:eth1"], "ipv4": ["10.200.1.1/24", "10.200.1.2/24"]}
        ],
    },
}


def ok(*args: str, timeout: float = 120) -> str:
    res = podlab(*args, timeout=timeout)
    assert res.returncode == 0, f"podlab {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def on(node: str, *argv: str, check: bool = True, lab: str = LAB) -> str:
    res = podlab("exec", node, "--lab", lab, "--", *argv, timeout=60)
    if check:
        assert res.returncode == 0, f"{node}: {' '.join(argv)}: {res.stdout}{res.stderr}"
    return res.stdout


def in_pod(cluster: str, pod: str, *argv: str, lab: str = LAB) -> Any:
    return podlab("exec", f"pod/{pod}", "--lab", lab, "--cluster", cluster, "--", *argv)


def status(local: str, remote: str, lab: str = LAB) -> dict[str, Any]:
    data = json.loads(ok("mesh", "status", lab, "--format", "json"))
    return dict(data["clusters"][local]["peers"].get(remote) or {})


def wait(what: str, fn: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def wheelhouse() -> Wheelhouse:
    return ensure_wheelhouse(source_root(), wheelhouse_cache())


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Wheelhouse) -> Iterator[Path]:
    topo = tmp_path_factory.mktemp("mesh") / f"{LAB}.clab.yml"
    topo.write_text(yaml.safe_dump(TOPOLOGY, sort_keys=False))
    inventory = REPO / "inventories" / f"{LAB}.yml"
    up = podlab("up", str(topo), timeout=300)
    try:
        assert up.returncode == 0, f"podlab up failed:\n{up.stdout}\n{up.stderr}"
        result = deploy(request_for(LAB, str(inventory), {}), wheelhouse=wheelhouse)
        assert result.ok, "\n".join(str(f) for f in result.failures)
        yield inventory
    finally:
        podlab("down", LAB, timeout=300)
        inventory.unlink(missing_ok=True)


def test_second_deploy_changes_nothing(lab: Path, wheelhouse: Wheelhouse) -> None:
    events: list[DeployEvent] = []
    result = deploy(request_for(LAB, str(lab), {}), on_event=events.append, wheelhouse=wheelhouse)
    assert result.ok, "\n".join(str(f) for f in result.failures)
    changed = changed_tasks(events)
    assert changed == [], f"a no-change re-deploy changed: {changed}"


def test_syncers_connect_and_secrets_are_private(lab: Path) -> None:
    for a, b in (("c1", "c2"), ("c2", "c1")):
        st = wait(f"{a} sees {b} connected", lambda a=a, b=b: status(a, b).get("connected"))
        assert st
        assert status(a, b)["counts"]["nodes"] == 2
    modes = on("c1-cp", "stat", "-c", "%a %n", "/etc/podlab/mesh/server.key",
               "/etc/podlab/mesh/client.key", "/etc/podlab/mesh/root.password",
               "/etc/podlab/mesh.tar")  # fmt: skip
    assert all(line.startswith("600 ") for line in modes.splitlines()), modes
    assert on("c1-cp", "stat", "-c", "%a", "/etc/podlab/mesh").strip() == "700"
    assert "ca.key" not in on("c1-cp", "tar", "-tf", "/etc/podlab/mesh.tar")
    # the text form: kubectl's plain columns, nothing cut to a pipe's width
    lines = ok("mesh", "status", LAB).splitlines()
    assert lines[0].split()[:4] == ["CLUSTER", "MESH", "PEER", "STATE"], lines
    assert any(line.split()[2:4] == ["c2", "connected"] for line in lines[1:]), lines
    inventory = lab.read_text()
    assert "PRIVATE KEY" not in inventory and "root.password" not in inventory


def _pod(cluster: str, name: str, node: str, tmp: Path, lab: str = LAB) -> str:
    manifest = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "e", "command": [
            "python", "-m", "harness.workloads.echo", "--tcp", "8080", "--http", "8000"]}]},
    }  # fmt: skip
    f = tmp / f"{cluster}-{name}.yaml"
    f.write_text(yaml.safe_dump(manifest))
    ok("apply", "-f", str(f), "--lab", lab, "--cluster", cluster)

    def ip() -> str | None:
        out = ok("get", "pods", "--lab", lab, "--cluster", cluster, "-o", "json")
        for item in json.loads(out).get("items", []):
            st = item.get("status", {})
            if item["metadata"]["name"] == name and st.get("phase") == "Running":
                return str(st.get("podIP") or "") or None
        return None

    return str(wait(f"pod {cluster}/{name} running", ip))


PROBE = (
    "import socket,sys; s=socket.create_connection((sys.argv[1],8080),timeout=3); "
    "print(s.recv(100).decode())"
)


# The pod's eth0 MTU by ioctl in its network namespace: ``podlab exec pod/`` also joins
# the pod's mount namespace, whose /sys is the node's sysfs (the node's eth0, not the pod's).
MTU = (
    "import fcntl,socket,struct; s=socket.socket(); q=struct.pack('16si', b'eth0', 0); "
    "print(struct.unpack('16si', fcntl.ioctl(s.fileno(), 0x8921, q))[1])"  # SIOCGIFMTU
)


def pod_mtu(cluster: str, pod: str) -> int:
    return int(in_pod(cluster, pod, "python3", "-c", MTU).stdout)


def greeting(cluster: str, pod: str, ip: str, lab: str = LAB) -> str:
    """What the echo pod at ``ip`` answers a pod: its name and the client address it saw."""
    return str(in_pod(cluster, pod, "python3", "-c", PROBE, ip, lab=lab).stdout)


def test_pods_reach_each_other_across_clusters(lab: Path, tmp_path: Path) -> None:
    ip1 = _pod("c1", "m1", "c1-w1", tmp_path)
    ip2 = _pod("c2", "m2", "c2-w1", tmp_path)
    got = wait("c1 pod answered by c2 pod", lambda: greeting("c1", "m1", ip2), timeout=60)
    assert got.split()[1].rpartition(":")[0] == ip1, f"c2 saw {got!r}: NAT across clusters"
    got = wait("c2 pod answered by c1 pod", lambda: greeting("c2", "m2", ip1), timeout=30)
    assert got.split()[1].rpartition(":")[0] == ip2
    mtu = pod_mtu("c1", "m1")
    assert mtu == 1450  # vxlan, and the mesh's VXLAN path
    fits = in_pod("c1", "m1", "ping", "-c1", "-W2", "-M", "do", "-s", str(mtu - 28), ip2)
    over = in_pod("c1", "m1", "ping", "-c1", "-W2", "-M", "do", "-s", str(mtu - 27), ip2)
    assert fits.returncode == 0, fits.stdout + fits.stderr
    assert over.returncode != 0, "one byte over the pod MTU crossed with DF set"


def test_peer_outage_removes_nothing_and_it_comes_back(lab: Path) -> None:
    before = on("c1-w1", "ip", "-o", "route", "show", "proto", "77", "dev", "vxlan.mesh")
    assert "10.245." in before, f"no route to c2's pods on c1-w1: {before}"
    on("c2-cp", *SUPERVISORCTL, "stop", "mesh-etcd")
    try:
        t0 = time.monotonic()
        wait("c1 sees c2 disconnected", lambda: status("c1", "c2").get("state") == "disconnected")
        print(f"outage seen after {time.monotonic() - t0:.1f} s")
        during = on("c1-w1", "ip", "-o", "route", "show", "proto", "77", "dev", "vxlan.mesh")
        assert during == before, "routes to the unreachable cluster's pods changed"
        assert status("c1", "c2")["counts"]["nodes"] == 2  # the mirror is intact
    finally:
        on("c2-cp", *SUPERVISORCTL, "start", "mesh-etcd")
    wait("c1 sees c2 connected again", lambda: status("c1", "c2").get("connected"), timeout=90)


# -- native routing: the same lab, re-deployed in bgp -------------------------------------------
def pod_ip(cluster: str, name: str, lab: str = LAB) -> str:
    out = ok("get", "pods", "--lab", lab, "--cluster", cluster, "-o", "json")
    (item,) = [i for i in json.loads(out)["items"] if i["metadata"]["name"] == name]
    return str(item["status"]["podIP"])


def test_native_routing_through_the_router(lab: Path, wheelhouse: Wheelhouse) -> None:
    """Re-deployed in bgp: the router's BIRD peers with every node (no flags to birdc),
    c1's pods are routed to c2's via the router, unencapsulated, not NATed, MTU 1500."""
    result = deploy(request_for(LAB, str(lab), {"podlab_mode": "bgp"}), wheelhouse=wheelhouse)
    assert result.ok, "\n".join(str(f) for f in result.failures)

    def established() -> set[str]:
        out = on("router", "birdc", "show", "protocols", check=False)
        return {ln.split()[0] for ln in out.splitlines() if "Established" in ln}

    want = {"node_c1_cp", "node_c1_w1", "node_c2_cp", "node_c2_w1"}
    wait("router sessions Established", lambda: want <= established(), timeout=60)
    ip1, ip2 = pod_ip("c1", "m1"), pod_ip("c2", "m2")
    subnet2 = ip2.rsplit(".", 1)[0] + ".0/24"
    show = ("c1-w1", "ip", "-o", "route", "show", subnet2, "proto", "bird")
    route = wait("c1-w1 learns c2-w1's pod subnet", lambda: on(*show).strip(), timeout=60)
    assert "via 10.100.1.1 " in route, route  # the router, not a tunnel
    assert not on("c1-w1", "ip", "-o", "link", "show", "vxlan.mesh", check=False).strip()
    got = wait("c1 pod answered by c2 pod natively", lambda: greeting("c1", "m1", ip2), 60)
    assert got.split()[1].rpartition(":")[0] == ip1, f"c2 saw {got!r}: NAT across clusters"
    assert pod_mtu("c1", "m1") == 1500
    fits = in_pod("c1", "m1", "ping", "-c1", "-W2", "-M", "do", "-s", "1472", ip2)
    over = in_pod("c1", "m1", "ping", "-c1", "-W2", "-M", "do", "-s", "1473", ip2)
    assert fits.returncode == 0, fits.stdout + fits.stderr
    assert over.returncode != 0, "one byte over the pod MTU crossed with DF set"
    # on the router's c2 leg: the pod addresses as they are, and no mesh VXLAN
    capture = ["timeout", "8", "tcpdump", "-i", "eth2", "-n", "-l", f"host {ip2} or udp port 8473"]
    argv = [*PODLAB, "exec", "router", "--lab", LAB, "--", *capture]
    cap = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    time.sleep(3.0)
    ping = in_pod("c1", "m1", "ping", "-c3", "-i0.3", ip2)
    assert ping.returncode == 0, ping.stdout
    seen = cap.communicate(timeout=30)[0]
    assert f"{ip1} > {ip2}: ICMP echo request" in seen, f"not plain on the router: {seen}"
    assert ".8473" not in seen, f"VXLAN on a native mesh: {seen}"


def test_native_node_loss_withdraws_routes_within_hold_time(lab: Path) -> None:
    """c1-w1 goes silent (agent stopped, link down): its pod subnet leaves c1-cp (same
    cluster) and c2-w1 (the other) within the BGP hold time (3 s), and comes back."""
    subnet = pod_ip("c1", "m1").rsplit(".", 1)[0] + ".0/24"
    for node in ("c1-cp", "c2-w1"):  # the control
        assert on(node, "ip", "-o", "route", "show", subnet).strip(), f"{node}: no route"
    gone = "while ip -o route show $0 | grep -q .; do sleep 0.05; done; date +%s.%N"
    watchers = [subprocess.Popen([*PODLAB, "exec", node, "--lab", LAB, "--", "timeout", "30",
                                  "sh", "-c", gone, subnet], cwd=REPO, stdout=subprocess.PIPE,
                                 text=True) for node in ("c1-cp", "c2-w1")]  # fmt: skip
    time.sleep(2.0)
    on("c1-w1", *SUPERVISORCTL, "stop", "podlab-agent")
    try:
        t_down = float(on("c1-w1", "sh", "-c", "ip link set eth1 down && date +%s.%N"))
        after = [float(w.communicate(timeout=40)[0]) - t_down for w in watchers]
    finally:
        on("c1-w1", "ip", "link", "set", "eth1", "up")
        on("c1-w1", "ip", "route", "replace", "10.100.2.0/24", "via", "10.100.1.1", "dev", "eth1")
        on("c1-w1", *SUPERVISORCTL, "start", "podlab-agent")
    print(f"route withdrawn after {after[0]:.2f} s (c1-cp), {after[1]:.2f} s (c2-w1)")
    assert all(a <= 3.0 + 1.0 for a in after), f"withdrawn after {after} s (hold time 3 s)"
    wait("the route back on c2-w1", lambda: on("c2-w1", "ip", "-o", "route", "show", subnet)
         .strip(), timeout=60)  # fmt: skip


# -- podlab mesh join / leave: a second lab -------------------------------------------------------
@pytest.fixture(scope="module")
def lab2(tmp_path_factory: pytest.TempPathFactory, lab: Path) -> Iterator[Path]:
    topo = tmp_path_factory.mktemp("mesh2") / f"{LAB2}.clab.yml"
    topo.write_text(yaml.safe_dump(TOPOLOGY2, sort_keys=False))
    inventory = REPO / "inventories" / f"{LAB2}.yml"
    up = podlab("up", str(topo), timeout=300)
    try:
        assert up.returncode == 0, f"podlab up failed:\n{up.stdout}\n{up.stderr}"
        yield inventory
    finally:
        podlab("mesh", "leave", LAB, LAB2, timeout=120)  # a failed test's join, if any
        podlab("down", LAB2, timeout=300)
        inventory.unlink(missing_ok=True)


def test_join_refuses_another_ca_and_routing_and_changes_nothing(
    lab: Path, lab2: Path, wheelhouse: Wheelhouse
) -> None:
    """lab2 deployed on its own (its own CA) in vxlan: refused with one line per problem,
    each naming c3 and the fix; no link, no record, no remotes file made. Also a lab
    joining itself."""
    result = deploy(request_for(LAB2, str(lab2), {"podlab_mode": "vxlan"}), wheelhouse=wheelhouse)
    assert result.ok, "\n".join(str(f) for f in result.failures)
    res = podlab("mesh", "join", LAB, LAB2, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert any("another mesh CA" in ln and "--mesh-ca" in ln and "c3" in ln for ln in lines)
    assert any("tunnel routing" in ln and "c3" in ln for ln in lines), lines
    assert all(ln.startswith("error: ") and "fix:" in ln for ln in lines), lines
    assert "pj" not in on("router", "ip", "-br", "link"), "a join link was left behind"
    assert not list((REPO / ".podlab" / LAB / "mesh").glob("joins/*.json"))
    assert "c3" not in on("c1-cp", "ls", "/etc/podlab/mesh/remotes")
    self_join = podlab("mesh", "join", LAB, LAB, timeout=60)
    assert self_join.returncode == 2 and "cannot join itself" in self_join.stderr


def test_join_and_leave(lab: Path, lab2: Path, wheelhouse: Wheelhouse, tmp_path: Path) -> None:
    """Re-deployed with lab 1's mesh CA, in bgp: joined (a link between the routers, an
    eBGP session over it), c3 and c1/c2 see each other connected, a c3 pod reaches a c1
    pod by pod IP; leave removes the mirrors, routes, session and link (a c3 pod no
    longer reaches c1's)."""
    ca = REPO / ".podlab" / LAB / "mesh" / "tmesh"
    req = dataclasses.replace(
        request_for(LAB2, str(lab2), {"podlab_mode": "bgp"}), mesh_ca=ca.resolve()
    )
    result = deploy(req, wheelhouse=wheelhouse)
    assert result.ok, "\n".join(str(f) for f in result.failures)
    t0 = time.monotonic()
    joined = podlab("mesh", "join", LAB, LAB2, timeout=180)
    print(f"join took {time.monotonic() - t0:.1f} s")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    for a, b, where in (("c3", "c1", LAB2), ("c3", "c2", LAB2), ("c1", "c3", LAB)):
        assert status(a, b, lab=where).get("state") == "connected", (a, b)
    # what leave must remove, present now (the controls of the checks after leave)
    for where in (LAB, LAB2):
        assert "Established" in on("router", "sh", "-c", "birdc show protocols | grep join_",
                                   lab=where), where  # fmt: skip
        assert "pj" in on("router", "ip", "-br", "link", lab=where), f"{where}: no join link"
    assert "c3" in on("c1-cp", "ls", "/etc/podlab/mesh/remotes")
    assert on("c1-w1", "ip", "route", "show", "proto", "79").strip(), "no route to lab2"
    assert list((REPO / ".podlab" / LAB / "mesh").glob("joins/*.json")), "no join record"
    ip1 = pod_ip("c1", "m1")
    _pod("c3", "m3", "c3-cp", tmp_path, lab=LAB2)
    ip3 = pod_ip("c3", "m3", lab=LAB2)
    got = wait("c3 pod answered by c1 pod", lambda: greeting("c3", "m3", ip1, lab=LAB2), 60)
    assert got.split()[1].rpartition(":")[0] == ip3, f"c1 saw {got!r}: NAT across labs"
    t0 = time.monotonic()
    left = podlab("mesh", "leave", LAB, LAB2, timeout=180)
    print(f"leave took {time.monotonic() - t0:.1f} s")
    assert left.returncode == 0, left.stdout + left.stderr
    assert "c3" not in on("c1-cp", "ls", "/etc/podlab/mesh/remotes")
    assert "c3" not in json.loads(ok("mesh", "status", LAB, "--format", "json"))["clusters"][
        "c1"]["peers"]  # fmt: skip
    for where in (LAB, LAB2):
        assert "pj" not in on("router", "ip", "-br", "link", lab=where), where
    assert not on("c1-w1", "ip", "route", "show", "proto", "79").strip()
    assert not list((REPO / ".podlab" / LAB / "mesh").glob("joins/*.json"))
    assert not on("router", "birdc", "show", "protocols", lab=LAB2).count("join_")
    assert not greeting("c3", "m3", ip1, lab=LAB2).strip(), "c3 still reaches c1 after leave"
