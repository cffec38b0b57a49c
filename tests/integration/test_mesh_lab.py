"""A two-cluster mesh on a real netns lab: deploy (and a no-change re-deploy), both
syncers connected over TLS, pods reaching pods of the other cluster by pod IP with
the path MTU, a peer's control-plane outage that removes nothing, and its return.

One module-scoped lab of five nodes (two per cluster and a router), the smallest
that has a mesh; every test reuses it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.deploy.deploy import deploy, request_for, source_root, wheelhouse_cache
from harness.deploy.runner import DeployEvent
from harness.deploy.wheel import Wheelhouse, ensure_wheelhouse
from harness.testlab.deploylab import REPO, podlab

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.timeout(1200)]

LAB = "t-mesh-lab"
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


def ok(*args: str, timeout: float = 120) -> str:
    res = podlab(*args, timeout=timeout)
    assert res.returncode == 0, f"podlab {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def on(node: str, *argv: str, check: bool = True) -> str:
    res = podlab("exec", node, "--lab", LAB, "--", *argv, timeout=60)
    if check:
        assert res.returncode == 0, f"{node}: {' '.join(argv)}: {res.stdout}{res.stderr}"
    return res.stdout


def in_pod(cluster: str, pod: str, *argv: str) -> Any:
    return podlab("exec", f"pod/{pod}", "--lab", LAB, "--cluster", cluster, "--", *argv)


def status(local: str, remote: str) -> dict[str, Any]:
    data = json.loads(ok("mesh", "status", LAB, "--format", "json"))
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
    changed = sorted({(e.host, e.task) for e in events if e.kind == "ok" and e.changed})
    assert changed == [], f"a no-change re-deploy changed: {changed}"


def test_syncers_connect_and_secrets_are_private(lab: Path) -> None:
    for a, b in (("c1", "c2"), ("c2", "c1")):
        st = wait(f"{a} sees {b} connected", lambda a=a, b=b: status(a, b).get("connected"))
        assert st
        assert status(a, b)["counts"]["nodes"] == 2
    modes = on("c1-cp", "stat", "-c", "%a %n", "/etc/podlab/mesh/server.key",
               "/etc/podlab/mesh/client.key", "/etc/podlab/mesh/root.password")  # fmt: skip
    assert all(line.startswith("600 ") for line in modes.splitlines()), modes
    inventory = lab.read_text()
    assert "PRIVATE KEY" not in inventory and "root.password" not in inventory


def _pod(cluster: str, name: str, node: str, tmp: Path) -> str:
    manifest = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "e", "command": [
            "python", "-m", "harness.workloads.echo", "--tcp", "8080", "--http", "8000"]}]},
    }  # fmt: skip
    f = tmp / f"{cluster}-{name}.yaml"
    f.write_text(yaml.safe_dump(manifest))
    ok("apply", "-f", str(f), "--lab", LAB, "--cluster", cluster)

    def ip() -> str | None:
        out = ok("get", "pods", "--lab", LAB, "--cluster", cluster, "-o", "json")
        for item in json.loads(out).get("items", []):
            st = item.get("status", {})
            if item["metadata"]["name"] == name and st.get("phase") == "Running":
                return str(st.get("podIP") or "") or None
        return None

    return str(wait(f"pod {cluster}/{name} running", ip))


def test_pods_reach_each_other_across_clusters(lab: Path, tmp_path: Path) -> None:
    ip1 = _pod("c1", "m1", "c1-w1", tmp_path)
    ip2 = _pod("c2", "m2", "c2-w1", tmp_path)
    probe = "import socket,sys; s=socket.create_connection((sys.argv[1],8080),timeout=3); " \
            "print(s.recv(100).decode())"  # fmt: skip

    def greeting(cluster: str, pod: str, ip: str) -> str:
        return str(in_pod(cluster, pod, "python3", "-c", probe, ip).stdout)

    got = wait("c1 pod answered by c2 pod", lambda: greeting("c1", "m1", ip2), timeout=30)
    assert got.split()[1].rpartition(":")[0] == ip1, f"c2 saw {got!r}: NAT across clusters"
    got = wait("c2 pod answered by c1 pod", lambda: greeting("c2", "m2", ip1), timeout=30)
    assert got.split()[1].rpartition(":")[0] == ip2
    mtu = int(in_pod("c1", "m1", "cat", "/sys/class/net/eth0/mtu").stdout)
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
