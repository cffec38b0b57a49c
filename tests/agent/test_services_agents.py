"""Services across real agents: ClusterIP to backends on every node, NodePort everywhere.

Real node agents (agentlab: host-gw pod networking, real etcd) run the pods and,
each in its node, the services controller (proxy, DNS, policy). Checks the
scenarios a one-node lab cannot: a ClusterIP spreading over backends on two
nodes (χ² over 300 connections), NodePort on every node's address from every
node and from outside the cluster (the fabric namespace, 10.199.0.254: the
backends must not see that address, i.e. NodePort traffic is masqueraded),
DNS from a pod on each node (dnslib, and glibc through the resolv.conf the
agent gives pods), a NetworkPolicy enforced by the agents, and a stopped node
(agent SIGKILLed, underlay down) whose backend leaves the other nodes'
endpoints within the node grace and returns with the node.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import pytest

from harness.exec import run
from harness.store.keys import cluster_prefix, pod_key
from harness.testlab.agentlab import ETCD_IP, AgentLab
from harness.testlab.svclab import CLIENT
from harness.testlab.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]
VIP, NODE_PORT = "10.96.0.20", 30080
ECHO = ["python", "-m", "harness.workloads.echo", "--tcp", "8080"]
ASK = (
    "import sys\nfrom dnslib import DNSRecord\n"
    "r = DNSRecord.parse(DNSRecord.question(sys.argv[1]).send('10.96.0.10', 53, timeout=2))\n"
    "print(' '.join(str(x.rdata) for x in r.rr))"
)
# Connections until a deadline, each with a short timeout: [[start time, outcome], …]
PROBE = r"""
import json, socket, sys, time
ip, port, until = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
out = []
while time.time() < until:
    t = time.time()
    try:
        s = socket.create_connection((ip, port), timeout=1)
        s.settimeout(1)
        words = s.makefile().readline().split()
        s.close()
        got = words[0] if words else "empty"
    except ConnectionRefusedError:
        got = "refused"
    except OSError:
        got = "timeout"
    out.append([t, got])
    time.sleep(0.02)
print(json.dumps(out))
"""
GRACE_S = 3.0  # node_grace_s of the node-failure lab (lease_ttl_s 4: heartbeat 1 s)


def put_pod(lab: AgentLab, name: str, node: str, labels: dict[str, str]) -> None:
    container = {
        "name": "c",
        "command": [*ECHO, "--name", name],
        "ports": [{"name": "echo", "containerPort": 8080}],
        "readinessProbe": {"tcpSocket": {"port": "echo"}, "periodSeconds": 1},
    }
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels},
        "spec": {"nodeName": node, "containers": [container]},
    }
    lab.store.put(pod_key("t1", "default", name), json.dumps(obj))


@pytest.fixture
def cluster(agent_lab) -> Iterator[tuple[AgentLab, dict[str, dict]]]:
    lab: AgentLab = agent_lab(2, "host-gw")
    for n in lab.nodes:
        lab.start_agent(n)
    for n in lab.nodes:
        lab.wait_node(n)
    n1, n2 = lab.nodes
    for name, node in (("web-0", n1), ("web-1", n2), ("web-2", n2)):
        put_pod(lab, name, node.name, {"app": "web"})
    put_pod(lab, "client", n1.name, {"role": "client"})
    put_pod(lab, "client2", n2.name, {"role": "client"})
    names = ("web-0", "web-1", "web-2", "client", "client2")
    ready = lambda n: any(  # noqa: E731
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (lab.pod_status(n) or {}).get("conditions", [])
    )
    for name in names:
        wait_for(f"{name} Ready", lambda name=name: ready(name), timeout=60)
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "NodePort",
            "clusterIP": VIP,
            "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": "echo", "nodePort": NODE_PORT}],
        },
    }
    lab.store.put(f"{cluster_prefix('t1')}services/default/web", json.dumps(svc))
    yield lab, {n: lab.pod_status(n) or {} for n in names}


def outcomes(lab: AgentLab, netns_argv: list[str], ip: str, port: int, n: int) -> list[str]:
    argv = [*netns_argv, sys.executable, "-c", CLIENT, ip, str(port), str(n)]
    return [o.split()[0] if o else o for o in json.loads(run(argv, timeout=60 + 3 * n).stdout)]


def in_pod(lab: AgentLab, st: dict) -> list[str]:
    node = next(n for n in lab.nodes if n.ip == st["hostIP"])
    return ["nsenter", f"--net={node.pod_netns(st['netns'])}", "--"]


def test_cluster_ip_spreads_across_nodes(cluster) -> None:
    lab, pods = cluster
    webs = ["web-0", "web-1", "web-2"]
    for client in ("client", "client2"):
        src = in_pod(lab, pods[client])
        wait_for(
            f"{client} reaches all three backends",
            lambda src=src: set(outcomes(lab, src, VIP, 80, 30)) == set(webs),
        )
        got = Counter(outcomes(lab, src, VIP, 80, 300))
        chi2 = sum((got[w] - 100) ** 2 / 100 for w in webs)
        assert set(got) == set(webs) and chi2 < 13.82, f"{client}: {dict(got)} (χ² {chi2:.1f})"


def test_node_port_from_every_node_and_outside(cluster) -> None:
    lab, _ = cluster
    webs = {"web-0", "web-1", "web-2"}
    sources = {n.name: ["nsenter", f"--net=/run/netns/{n.ns}", "--"] for n in lab.nodes}
    sources["outside"] = ["nsenter", f"--net=/run/netns/{lab.fab}", "--"]
    for src_name, src in sources.items():
        for target in lab.nodes:
            got = wait_for(
                f"{src_name} → {target.ip}:{NODE_PORT}",
                lambda src=src, target=target: (lambda o: o if set(o) == webs else None)(
                    outcomes(lab, src, target.ip, NODE_PORT, 30)
                ),
            )
            assert set(got) == webs
    # masquerade: from outside, backends see a node address, not the fabric's
    argv = [*sources["outside"], sys.executable, "-c", CLIENT, lab.nodes[0].ip, str(NODE_PORT), "5"]
    peers = {o.split()[1].split(":")[0] for o in json.loads(run(argv, timeout=60).stdout)}
    assert peers and ETCD_IP not in peers, f"backends saw the outside address: {peers}"
    # control: a port that is no NodePort is refused at once
    assert outcomes(lab, sources["outside"], lab.nodes[0].ip, NODE_PORT + 1, 1) == ["refused"]


def test_dns_from_pods_on_each_node(cluster) -> None:
    lab, pods = cluster
    for client in ("client", "client2"):
        argv = [
            *in_pod(lab, pods[client]),
            sys.executable,
            "-c",
            ASK,
            "web.default.svc.cluster.local",
        ]
        got = wait_for(f"DNS from {client}", lambda argv=argv: run(argv).stdout.strip() == VIP)
        assert got


def test_pod_resolves_short_names_with_its_resolv_conf(cluster) -> None:
    lab, _ = cluster
    n2 = lab.nodes[1]
    script = "sleep 1; getent ahostsv4 web; getent ahostsv4 web.default; cat /etc/resolv.conf"
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dnsprobe", "namespace": "default", "uid": "uid-dnsprobe"},
        "spec": {
            "nodeName": n2.name,
            "containers": [{"name": "c", "command": ["sh", "-c", script]}],
            "restartPolicy": "Never",
        },
    }
    lab.store.put(pod_key("t1", "default", "dnsprobe"), json.dumps(obj))
    log = n2.dir / "log" / "pods" / "default_dnsprobe.log"
    text = wait_for(
        "dnsprobe output",
        lambda: log.exists() and "options ndots:5" in log.read_text() and log.read_text(),
    )
    lines = [ln.split()[0] for ln in text.splitlines() if ln.strip()]
    assert lines[0] == VIP and VIP in lines[1:4], text
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in text


def test_policy_enforced_by_the_agents(cluster) -> None:
    lab, pods = cluster
    src = in_pod(lab, pods["client"])
    web0 = pods["web-0"]["podIP"]
    assert outcomes(lab, src, web0, 8080, 1) == ["web-0"]
    deny = {
        "metadata": {"name": "deny", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
    }
    key = f"{cluster_prefix('t1')}policies/default/deny"
    lab.store.put(key, json.dumps(deny))
    wait_for("deny-all on web", lambda: outcomes(lab, src, web0, 8080, 1) == ["timeout"])
    web1 = pods["web-1"]["podIP"]  # cross-node: enforced on web-1's node
    assert outcomes(lab, src, web1, 8080, 1) == ["timeout"]
    lab.store.delete(key)
    wait_for("policy removed", lambda: outcomes(lab, src, web1, 8080, 1) == ["web-1"])


def ready(lab: AgentLab, name: str) -> bool:
    conds = (lab.pod_status(name) or {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


@pytest.fixture
def three_nodes(agent_lab) -> Iterator[tuple[AgentLab, dict[str, dict]]]:
    """Fast heartbeats (1 s) and a short grace; web-N on node n(N+1), client on n1."""
    lab: AgentLab = agent_lab(3, "host-gw", lease_ttl_s=4, node_grace_s=GRACE_S)
    for n in lab.nodes:
        lab.start_agent(n)
    for n in lab.nodes:
        lab.wait_node(n)
    for i, node in enumerate(lab.nodes):
        put_pod(lab, f"web-{i}", node.name, {"app": "web"})
    put_pod(lab, "client", lab.nodes[0].name, {"role": "client"})
    names = ("web-0", "web-1", "web-2", "client")
    for name in names:
        wait_for(f"{name} Ready", lambda name=name: ready(lab, name), timeout=60)
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "clusterIP": VIP,
            "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": "echo"}],
        },
    }
    lab.store.put(f"{cluster_prefix('t1')}services/default/web", json.dumps(svc))
    yield lab, {n: lab.pod_status(n) or {} for n in names}


def test_stopped_node_leaves_endpoints_within_the_grace(three_nodes) -> None:
    lab, pods = three_nodes
    n1, _, n3 = lab.nodes
    src = in_pod(lab, pods["client"])
    webs = {"web-0", "web-1", "web-2"}
    # control: before the stop, n1's proxy does send connections to n3's backend
    wait_for("client reaches all three", lambda: set(outcomes(lab, src, VIP, 80, 30)) == webs)

    deadline_s = GRACE_S + 2  # from the stop until every new connection avoids n3
    until = time.time() + 1 + deadline_s + 3
    probe = subprocess.Popen(
        [*src, sys.executable, "-c", PROBE, VIP, "80", str(until)], stdout=subprocess.PIPE
    )
    time.sleep(1.0)
    t0 = time.time()
    lab.stop_agent(n3, signal.SIGKILL)  # a stopped node: no agent, no underlay
    lab.ns_run(n3, ["ip", "link", "set", "eth1", "down"])
    out, _ = probe.communicate(timeout=60)
    conns = [(t - t0, got) for t, got in json.loads(out)]  # start (s after the stop), outcome

    assert any(got == "web-2" for t, got in conns if t < 0), "control: web-2 served before"
    late = [got for t, got in conns if t >= deadline_s]
    assert len(late) >= 20 and set(late) == {"web-0", "web-1"}, (Counter(late), conns)
    # when exactly: between the start of the last connection that failed or reached
    # web-2 and the start of the next one; and when n1's controller logged the verdict
    last_bad = max(t for t, got in conns if got not in ("web-0", "web-1"))
    settled = next(t for t, _ in conns if t > last_bad)
    verdicts = [ln for ln in n1.log.read_text().splitlines() if "node n3 is dead" in ln]
    assert len(verdicts) == 1, verdicts
    stamp = datetime.strptime(verdicts[0][:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    print(
        f"\nnode n3 stopped (SIGKILL + eth1 down; heartbeat 1 s, grace {GRACE_S:g} s): "
        f"n1 declared it dead after {stamp - t0:.2f} s; the last connection to fail or "
        f"reach web-2 started at {last_bad:.2f} s, the next at {settled:.2f} s; "
        f"all {len(late)} connections from {deadline_s:g} s on reached web-0/web-1"
    )
    # the dead node's status record still says Ready: liveness, not status, removed it
    assert ready(lab, "web-2")

    # the node comes back: its backend is an endpoint again
    lab.ns_run(n3, ["ip", "link", "set", "eth1", "up"])
    lab.start_agent(n3)
    lab.wait_node(n3)
    wait_for(
        "web-2 gets traffic again",
        lambda: "web-2" in outcomes(lab, src, VIP, 80, 30),
        timeout=60,
    )
    assert "node n3 is alive again" in n1.log.read_text()
