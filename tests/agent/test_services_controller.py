"""The services controller end to end: etcd objects → proxy, DNS and policy in a node.

A real etcd (LocalEtcd) holds what ``podlab apply`` and the agents would write;
the controller watches it and programs a real node namespace (svclab). Checks:
ClusterIP reaches every ready backend, a pod turning unready stops getting
traffic, DNS answers from a pod, a policy applied and removed takes effect, a
deleted service refuses.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import pytest

from harness.agent.services import ServicesConfig, ServicesController
from harness.exec import run
from harness.store import Store
from harness.store.keys import cluster_prefix
from harness.testlab.etcd import LocalEtcd
from harness.testlab.svclab import SvcLab
from harness.testlab.wait import wait_for

pytestmark = pytest.mark.root
C = "c1"
P = cluster_prefix(C)
VIP = "10.96.0.20"
ASK = (
    "import sys\nfrom dnslib import DNSRecord\n"
    "r = DNSRecord.parse(DNSRecord.question(sys.argv[1]).send('10.96.0.10', 53, timeout=2))\n"
    "print(' '.join(str(x.rdata) for x in r.rr))"
)


def pod(name: str) -> dict:
    c = {"name": "c", "command": ["x"], "ports": [{"name": "http", "containerPort": 8080}]}
    meta = {"name": name, "namespace": "default", "labels": {"app": "web"}}
    return {"metadata": meta, "spec": {"nodeName": "n1", "containers": [c]}}


def status(ip: str, ready: bool = True) -> dict:
    cond = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"phase": "Running", "podIP": ip, "conditions": cond}


@pytest.fixture
def setup(etcd: LocalEtcd) -> Iterator[tuple[SvcLab, Store, ServicesController]]:
    lab = SvcLab.create(backends=3)
    store = Store([etcd.url])
    cfg = ServicesConfig(C, "n1", lab.SERVICE_CIDR, lab.CLUSTER_CIDR, netns=lab.node, resync_s=5)
    ctl = ServicesController(store, cfg)
    stop = threading.Event()
    try:
        ctl.start(stop)
        yield lab, store, ctl
    finally:
        stop.set()
        ctl.close()
        lab.close()


def test_objects_in_etcd_become_datapath(setup) -> None:
    lab, store, ctl = setup
    svc = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "clusterIP": VIP,
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    for name in ("b0", "b1", "b2"):
        store.put_json(f"{P}pods/default/{name}", pod(name))
        store.put_json(f"{P}podstatus/default/{name}", status(lab.pods[name].ip))
    store.put_json(f"{P}services/default/web", svc)
    c0 = lab.pods["c0"].ns
    wait_for(
        "web's three backends", lambda: set(lab.connect(c0, VIP, 80, 30)) == {"b0", "b1", "b2"}
    )

    out = lab_ask(lab, "web.default.svc.cluster.local")
    assert out == VIP, f"DNS from c0: {out!r}"

    start = time.monotonic()
    store.put_json(f"{P}podstatus/default/b2", status(lab.pods["b2"].ip, ready=False))
    # one answer that is not b2's proves nothing (2 in 3 before any change): ten in a row
    wait_for("b2 out of rotation", lambda: "b2" not in lab.connect(c0, VIP, 80, 10), every=0.01)
    latency = time.monotonic() - start
    got = set(lab.connect(c0, VIP, 80, 40))
    assert got == {"b0", "b1"}, f"unready b2 still gets traffic: {got}"
    print(f"endpoint removal programmed in {latency * 1000:.0f} ms")

    deny = {
        "metadata": {"name": "deny", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
    }
    store.put_json(f"{P}policies/default/deny", deny)
    wait_for("deny-all applied", lambda: lab.connect(c0, lab.pods["b0"].ip, 8080, 1) == ["timeout"])
    store.delete(f"{P}policies/default/deny")
    wait_for("deny-all removed", lambda: lab.connect(c0, lab.pods["b0"].ip, 8080, 1) == ["b0"])

    store.delete(f"{P}services/default/web")
    wait_for("deleted service refuses", lambda: lab.connect(c0, VIP, 80, 1) == ["refused"])
    assert ctl.passes >= 4


def lab_ask(lab: SvcLab, name: str) -> str:
    return run([sys.executable, "-c", ASK, name], netns=lab.pods["c0"].ns).stdout.strip()
