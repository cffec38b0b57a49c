"""Hollow nodes against REAL agents: datapath peers, Service endpoints, death and recovery.

agentlab in vxlan mode: real agents on n1 and n2; n3 runs no agent but hosts the
hollow-node runner (``python -m harness.hollow`` in n3's namespace, against the
lab's etcd), so n3's underlay address answers for every hollow node. Checks:

- every real node programs, per hollow peer, the onlink route, the permanent
  neighbour and the FDB entry (VTEP MAC → n3's address) from the hollow lease;
- a Service selecting a real pod (n2) and two hollow pods gets all three as
  endpoints in n1's nftables proxy;
- SIGKILL of the runner: the control first (hollow endpoints present just
  before), then the hollow endpoints leave n1's proxy after the grace while the
  real one stays, and the peers' routes go with the expired leases;
- a restarted runner recovers its nodes, pods and endpoints (same pod IPs);
  SIGTERM (what ``podlab hollow --nodes 0`` sends) releases every lease at once.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.store.keys import cluster_prefix, nodes_prefix, pod_key, podstatus_key
from harness.testlab.agentlab import ETCD_IP, PROJECT, PYTHON, AgentLab
from harness.testlab.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]
GRACE_S = 3.0  # node_grace_s; lease_ttl_s 4 gives agents and hollow nodes a 1 s heartbeat
HOLLOW = 4
VIP = "10.96.0.30"
ECHO = ["python", "-m", "harness.workloads.echo", "--tcp", "8080"]


def start_runner(lab: AgentLab, log: Path, count: Path | None = None) -> subprocess.Popen[bytes]:
    host = lab.nodes[2]
    size = ["--nodes-file", str(count)] if count else ["--nodes", str(HOLLOW)]
    argv = [
        *("nsenter", f"--net=/run/netns/{host.ns}", PYTHON, "-m", "harness.hollow"),
        *("--cluster", "t1", "--etcd", f"http://{ETCD_IP}:2379", *size),
        *("--underlay-ip", host.ip, "--mode", "vxlan", "--lease-ttl", "4"),
        *("--pending-s", "0.2", "--running-s", "0.3"),
    ]
    out = open(log, "ab")  # noqa: SIM115 (kept open for the child)
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=str(PROJECT))


def put_pod(lab: AgentLab, name: str, node: str, real: bool) -> None:
    container: dict = {"name": "c", "command": [*ECHO, "--name", name]}
    if real:
        container["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {"nodeName": node, "containers": [container]},
    }
    obj["metadata"]["labels"] = {"app": "web"}
    lab.store.put(pod_key("t1", "default", name), json.dumps(obj))


def ready_ip(lab: AgentLab, name: str) -> str | None:
    st = lab.pod_status(name) or {}
    ok = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
    return st.get("podIP") if ok else None


def hollow_nodes(lab: AgentLab) -> dict[str, dict]:
    recs = {
        kv.key.rsplit("/", 1)[1]: kv.json() for kv in lab.store.get_prefix(nodes_prefix("t1"))[0]
    }
    return {n: r for n, r in recs.items() if r.get("hollow")}


def endpoints(lab: AgentLab) -> str:
    """n1's proxy endpoint map (kube-proxy's nftables design: one element per endpoint)."""
    argv = ["nft", "list", "map", "ip", "podlab-proxy", "endpoints"]
    return lab.ns_run(lab.nodes[0], argv, check=False).stdout


def has(text: str, ip: str) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(ip)}(?![\d])", text) is not None


def peer_objects(lab: AgentLab) -> tuple[str, str, str]:
    n1 = lab.nodes[0]
    run = lambda *a: lab.ns_run(n1, list(a)).stdout  # noqa: E731
    return (
        run("ip", "-j", "route", "show", "dev", "flannel.1"),
        run("ip", "-j", "neigh", "show", "dev", "flannel.1"),
        run("bridge", "-j", "fdb", "show", "dev", "flannel.1"),
    )


@pytest.fixture
def hollow_lab(agent_lab, tmp_path) -> Iterator[tuple[AgentLab, list]]:
    lab: AgentLab = agent_lab(3, "vxlan", lease_ttl_s=4, node_grace_s=GRACE_S)
    for n in lab.nodes[:2]:
        lab.start_agent(n)
    for n in lab.nodes[:2]:
        lab.wait_node(n)
    runners: list[subprocess.Popen[bytes]] = []
    try:
        yield lab, runners
    finally:
        for p in runners:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


def test_hollow_nodes_load_real_agents_and_die_like_nodes(hollow_lab, tmp_path) -> None:
    lab, runners = hollow_lab
    t_start = time.monotonic()
    log = tmp_path / "hollow.log"
    runners.append(start_runner(lab, log))
    try:
        nodes = wait_for(
            f"{HOLLOW} hollow nodes",
            lambda: len(hollow_nodes(lab)) == HOLLOW and hollow_nodes(lab),
            timeout=60,
        )

        # the real datapath: one route + neighbour + FDB entry per hollow peer, on n1
        def programmed() -> bool:
            routes, neighs, fdbs = peer_objects(lab)
            return all(
                r["podCIDR"] in routes
                and r["backend"]["VtepMAC"] in neighs
                and re.search(
                    rf'"mac":"{r["backend"]["VtepMAC"]}".*?"dst":"{lab.nodes[2].ip}"', fdbs
                )
                for r in nodes.values()
            )

        wait_for("n1 programs every hollow peer", programmed, timeout=30)
        names = sorted(nodes)
        put_pod(lab, "web-real", lab.nodes[1].name, real=True)
        put_pod(lab, "web-h0", names[0], real=False)
        put_pod(lab, "web-h1", names[1], real=False)
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "clusterIP": VIP,
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080}],
            },
        }
        lab.store.put(f"{cluster_prefix('t1')}services/default/web", json.dumps(svc))
        ips = {
            n: wait_for(f"{n} Ready", lambda n=n: ready_ip(lab, n), timeout=60)
            for n in ("web-real", "web-h0", "web-h1")
        }
        sub0 = ipaddress.ip_network(nodes[names[0]]["podCIDR"])
        assert ipaddress.ip_address(ips["web-h0"]) in sub0, (ips, sub0)
        wait_for(
            "all three endpoints in n1's proxy",
            lambda: all(has(endpoints(lab), ip) for ip in ips.values()),
            timeout=30,
        )

        # SIGKILL the runner: the control just before, then the grace
        assert has(endpoints(lab), ips["web-h0"]) and has(endpoints(lab), ips["web-h1"])
        t0 = time.monotonic()
        runners[0].send_signal(signal.SIGKILL)
        runners[0].wait(timeout=10)
        wait_for(
            "hollow endpoints leave n1's proxy",
            lambda: (
                not has(endpoints(lab), ips["web-h0"]) and not has(endpoints(lab), ips["web-h1"])
            ),
            timeout=GRACE_S + 10,
        )
        t_gone = time.monotonic() - t0
        assert has(endpoints(lab), ips["web-real"]), "the real endpoint stays"
        assert t_gone >= GRACE_S - 1.5, f"hollow endpoints left after only {t_gone:.2f} s"
        verdict = f"node {names[0]} is dead"
        wait_for("n1 logs the verdict", lambda: verdict in lab.nodes[0].log.read_text(), 10)
        wait_for(
            "hollow routes leave with the expired leases",
            lambda: nodes[names[0]]["podCIDR"] not in peer_objects(lab)[0],
            timeout=15,
        )
        t_routes = time.monotonic() - t0

        # restart: same nodes, same pod IPs, endpoints back
        count = tmp_path / "count"
        count.write_text(f"{HOLLOW}\n")
        runners.append(start_runner(lab, log, count))
        wait_for(
            "hollow endpoints back",
            lambda: has(endpoints(lab), ips["web-h0"]) and has(endpoints(lab), ips["web-h1"]),
            timeout=60,
        )
        assert ready_ip(lab, "web-h0") == ips["web-h0"], "a restarted runner keeps pod IPs"
        back = hollow_nodes(lab)
        cidrs = lambda recs: [recs[n]["podCIDR"] for n in names[:2]]  # noqa: E731
        assert cidrs(back) == cidrs(nodes), "nodes with pods take their subnets back"

        # resize through the count file: nodes kept are untouched, the surplus released
        count.write_text("6\n")
        wait_for("6 hollow nodes", lambda: len(hollow_nodes(lab)) == 6, timeout=30)
        assert cidrs(hollow_nodes(lab)) == cidrs(nodes), "a grow leaves the kept nodes alone"
        count.write_text("2\n")
        wait_for("2 hollow nodes", lambda: sorted(hollow_nodes(lab)) == names[:2], timeout=30)
        assert has(endpoints(lab), ips["web-h0"]) and has(endpoints(lab), ips["web-h1"])
        assert ready_ip(lab, "web-h1") == ips["web-h1"]

        # a graceful delete (what `podlab delete` writes): the delete stage removes the
        # status, then the object; the endpoint goes
        kv = lab.store.get(pod_key("t1", "default", "web-h1"))
        assert kv is not None
        obj = kv.json()
        obj["metadata"] |= {"deletionTimestamp": "2026-01-01T00:00:00Z"}
        obj["metadata"] |= {"deletionGracePeriodSeconds": 30}
        lab.store.put(kv.key, json.dumps(obj))
        wait_for("web-h1 deleted", lambda: lab.store.get(kv.key) is None, timeout=15)
        assert lab.pod_status("web-h1") is None
        wait_for("web-h1 leaves the proxy", lambda: not has(endpoints(lab), ips["web-h1"]), 15)

        # SIGTERM (podlab hollow --nodes 0): every lease revoked, statuses gone
        runners[1].send_signal(signal.SIGTERM)
        assert runners[1].wait(timeout=30) == 0
        assert hollow_nodes(lab) == {}
        assert lab.store.get(podstatus_key("t1", "default", "web-h0")) is None
        wait_for(
            "hollow endpoints gone after the release",
            lambda: not has(endpoints(lab), ips["web-h0"]),
            timeout=15,
        )
        print(
            f"\n{HOLLOW} hollow nodes: endpoints left n1's proxy {t_gone:.2f} s after SIGKILL "
            f"(grace {GRACE_S:g} s, heartbeat 1 s), routes {t_routes:.2f} s; "
            f"test body {time.monotonic() - t_start:.1f} s"
        )
    finally:
        print(f"----- hollow runner log\n{log.read_text()[-3000:] if log.exists() else ''}")
