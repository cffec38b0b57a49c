"""Global services, MCS and remote-node reachability through the real controller and kernel.

One node namespace (svclab) with four backend pods and a client; a real etcd
holds the local cluster ``c1`` and, under ``mesh/c2/``, a remote cluster's
keys written directly in the mesh syncer's layout (the contract; the syncer
itself is tested on its own). Pods ``b2``/``b3`` play c2's backends: their
addresses are reachable from the node like any remote pod's. c2's node record
names the ``outside`` namespace's address as its underlay, so the controller's
data-path probe pings it, and taking that link down is a network cut.
"""

from __future__ import annotations

import collections
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from harness.agent.mesh import globalsvc
from harness.agent.services import ServicesConfig, ServicesController
from harness.exec import run
from harness.store import Store
from harness.store.keys import cluster_prefix
from harness.testlab.etcd import LocalEtcd
from harness.testlab.svclab import SvcLab
from harness.testlab.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]
P = cluster_prefix("c1")
R = f"{P}mesh/c2/"
VIP = "10.96.0.20"
GLOBAL = {globalsvc.ANN_GLOBAL: "true"}
LOCAL_PODS = {"web-0": "b0", "web-1": "b1"}
REMOTE_PODS = {"web-c2-0": "b2", "web-c2-1": "b3"}
ASK = (
    "import sys\nfrom dnslib import DNSRecord\n"
    "r = DNSRecord.parse(DNSRecord.question(sys.argv[1]).send('10.96.0.10', 53, timeout=2))\n"
    "print(' '.join(sorted(str(x.rdata) for x in r.rr)))"
)


def service(ip: str, **ann: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "default", "annotations": ann},
        "spec": {"clusterIP": ip, "selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": 8080}]},
    }  # fmt: skip


def pod(name: str, node: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": "default", "labels": {"app": "web"}}
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [{"name": "c"}]}}


def status(ip: str, ready: bool = True) -> dict[str, Any]:
    cond = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"phase": "Running", "podIP": ip, "conditions": cond}


class Mesh:
    """The controller under test, its etcd, and the one-node lab."""

    def __init__(self, lab: SvcLab, store: Store, ctl: ServicesController) -> None:
        self.lab, self.store, self.ctl = lab, store, ctl
        self.client = lab.pods["c0"].ns

    def backends(self, remote_ready: bool = True, local_ready: bool = True) -> None:
        for name in LOCAL_PODS:
            self.store.put_json(f"{P}pods/default/{name}", pod(name, "n1"))
            self.local(name, local_ready)
        self.store.put_json(f"{R}nodes/c2-n1", {"name": "c2-n1", "underlayIP": SvcLab.OUTSIDE_IP})
        for name, b in REMOTE_PODS.items():
            self.store.put_json(f"{R}pods/default/{name}", pod(name, "c2-n1"))
            self.store.put_json(
                f"{R}podstatus/default/{name}", status(self.lab.pods[b].ip, remote_ready)
            )

    def local(self, name: str, ready: bool) -> None:
        ip = self.lab.pods[LOCAL_PODS[name]].ip
        self.store.put_json(f"{P}podstatus/default/{name}", status(ip, ready))

    def tally(self, ip: str = VIP, n: int = 60) -> collections.Counter[str]:
        return collections.Counter(self.lab.connect(self.client, ip, 80, n))

    def reaches(self, want: set[str], ip: str = VIP, n: int = 60) -> bool:
        return set(self.tally(ip, n)) == want

    def ask(self, name: str) -> str:
        argv = [sys.executable, "-c", ASK, name]
        return run(argv, netns=self.client).stdout.strip()


def start(etcd: LocalEtcd, mode: str, **cfg: Any) -> Iterator[Mesh]:
    lab = SvcLab.create(backends=4)
    store = Store([etcd.url])
    conf = ServicesConfig("c1", "n1", lab.SERVICE_CIDR, lab.CLUSTER_CIDR, proxy_mode=mode,
                          netns=lab.node, resync_s=5, **cfg)  # fmt: skip
    ctl = ServicesController(store, conf)
    stop = threading.Event()
    try:
        ctl.start(stop)
        yield Mesh(lab, store, ctl)
    finally:
        stop.set()
        ctl.close()
        lab.close()


@pytest.fixture(params=["nftables", "iptables", "userspace"])
def mesh(request: pytest.FixtureRequest, etcd: LocalEtcd) -> Iterator[Mesh]:
    yield from start(etcd, request.param)


@pytest.fixture
def mesh_cp(etcd: LocalEtcd) -> Iterator[Mesh]:
    """The control plane's controller: it also stores ServiceImports."""
    yield from start(etcd, "nftables", mcs_writer=True, reach_interval_s=0.2)


def test_global_service_follows_ciliums_rules_in_every_proxy_mode(mesh: Mesh) -> None:
    m = mesh
    m.backends()
    m.store.put_json(f"{R}services/default/web", service("10.96.0.99", **GLOBAL))
    m.store.put_json(f"{P}services/default/web", service(VIP))
    # control: not global here → our two backends only, though c2 offers its own
    wait_for("local backends", lambda: m.reaches({"b0", "b1"}))
    m.store.put_json(f"{P}services/default/web", service(VIP, **GLOBAL))
    wait_for("backends of both clusters", lambda: m.reaches({"b0", "b1", "b2", "b3"}))

    m.store.put_json(f"{R}podstatus/default/web-c2-1", status(m.lab.pods["b3"].ip, False))
    wait_for("b3 (remote, not Ready) out", lambda: m.reaches({"b0", "b1", "b2"}))
    assert m.tally(n=60)["b3"] == 0, "a remote backend that is not Ready got traffic"

    unshared = {**GLOBAL, globalsvc.ANN_SHARED: "false"}
    m.store.put_json(f"{R}services/default/web", service("10.96.0.99", **unshared))
    wait_for("c2 shares nothing", lambda: m.reaches({"b0", "b1"}))

    m.store.put_json(f"{R}services/default/web", service("10.96.0.99", **GLOBAL))
    m.store.put_json(f"{R}podstatus/default/web-c2-1", status(m.lab.pods["b3"].ip))
    local = {**GLOBAL, globalsvc.ANN_AFFINITY: "local"}
    m.store.put_json(f"{P}services/default/web", service(VIP, **local))
    wait_for("affinity local: local only", lambda: m.reaches({"b0", "b1"}))
    for name in LOCAL_PODS:
        m.local(name, False)
    wait_for("no local backend Ready: failover", lambda: m.reaches({"b2", "b3"}))

    # spread flip-back: one of two local backends back → it takes its 1/2, the two
    # remote ones share the other half; Cilium's immediate flip-back is the control
    m.local("web-0", True)
    wait_for("spill-over", lambda: m.reaches({"b0", "b2", "b3"}, n=40))
    got = m.tally(n=300)
    share = got["b0"] / sum(got.values())
    assert 0.38 < share < 0.62, f"the first local backend back should take ~1/2, got {dict(got)}"
    immediate = {**local, globalsvc.ANN_FLIPBACK: "immediate"}
    m.store.put_json(f"{P}services/default/web", service(VIP, **immediate))
    wait_for("immediate flip-back: all on b0", lambda: m.reaches({"b0"}, n=40))


def test_mcs_import_dns_and_remote_reachability(mesh_cp: Mesh) -> None:
    m = mesh_cp
    m.backends()
    export = {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport"}
    for prefix, ts in ((P, "2026-01-01T00:00:02Z"), (R, "2026-01-01T00:00:01Z")):
        meta = {"name": "web", "namespace": "default", "creationTimestamp": ts}
        m.store.put_json(f"{prefix}serviceexports/default/web", {**export, "metadata": meta})
    m.store.put_json(f"{R}services/default/web", service("10.96.0.99"))
    m.store.put_json(f"{P}services/default/web", service(VIP))

    def import_ip() -> str | None:
        kv = m.store.get(f"{P}serviceimports/default/web")
        return kv.json()["spec"]["ips"][0] if kv and kv.json()["spec"]["ips"] else None

    ip = wait_for("the ServiceImport and its ClusterSetIP", import_ip)
    assert ip == "10.96.255.254", f"ClusterSetIPs are taken from the top of the CIDR, got {ip}"
    owner = m.store.get(f"{P}serviceips/{ip}")
    assert owner is not None and owner.value == b"serviceimport:default/web"

    def conditions() -> dict[str, str] | None:
        # the import can appear in the pass that saw the remote Service before the
        # local one: the local export is Valid=False (NoService) until the next pass
        st = m.store.get(f"{P}serviceexportstatus/default/web")
        conds = {c["type"]: c["status"] for c in st.json()["conditions"]} if st else {}
        return conds if conds.get("Valid") == "True" else None

    assert wait_for("the export's Valid condition", conditions) == {
        "Valid": "True", "Conflict": "False"}  # fmt: skip
    wait_for("ClusterSetIP over both clusters", lambda: m.reaches({"b0", "b1", "b2", "b3"}, ip))
    wait_for("clusterset.local", lambda: m.ask("web.default.svc.clusterset.local") == ip)
    assert m.ask("web.default.svc.cluster.local") == VIP  # cluster.local unchanged
    assert m.reaches({"b0", "b1"}), "the plain Service must keep its local backends only"

    # network cut to c2's node (its underlay stops answering) → c2's backends leave
    down = ["ip", "link", "set", "eth0", "down"]
    run(down, netns=m.lab.outside)
    try:
        wait_for("c2 unreachable: its backends leave", lambda: m.reaches({"b0", "b1"}, ip, 30),
                 timeout=15)  # fmt: skip
    finally:
        run(["ip", "link", "set", "eth0", "up"], netns=m.lab.outside)
        run(["ip", "route", "replace", "default", "via", SvcLab.NODE_OUTSIDE_IP],
            netns=m.lab.outside, check=False)  # fmt: skip
    wait_for("c2 reachable again", lambda: m.reaches({"b0", "b1", "b2", "b3"}, ip), timeout=15)

    # the last export goes → the import and its address claim go
    for prefix in (P, R):
        m.store.delete(f"{prefix}serviceexports/default/web")
    wait_for("ServiceImport removed", lambda: m.store.get(f"{P}serviceimports/default/web") is None)
    wait_for("claim released", lambda: m.store.get(f"{P}serviceips/{ip}") is None)
