"""podlab load's machinery and the hollow runner's fault behaviour, on one small lab.

One module-scoped AgentLab (etcd, two real vxlan nodes with agents) and a hollow
runner with three nodes on real node n1, as a deployed lab runs it on its
control-plane node (n1's underlay address answers for all of them, docs/hollow.md;
n1's agent must leave the hollow pods' statuses alone). The load run is small (3 pods per node); the
fault test kills the runner with SIGKILL, as a crash would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.api.client import ApiClient
from harness.api.objects import KINDS
from harness.load.probe import observe
from harness.load.report import slis_of
from harness.load.run import LoadConfig, LoadRun, cleaning, dns_lookups, located
from harness.store.keys import kind_prefix
from harness.testlab.agentlab import ETCD_IP, PROJECT, PYTHON, AgentLab
from harness.testlab.wait import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd binary not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
]
HOLLOW = 3
GRACE_S = 8.0  # the agents' node_grace_s here (lease TTL 10 s: a 2.5 s heartbeat)


class Lab:
    def __init__(self, lab: AgentLab) -> None:
        self.lab = lab
        self.client = ApiClient(lab.store, "t1")
        self.runner: subprocess.Popen[bytes] | None = None
        self.log = lab.tmp / "hollow.log"

    def start_runner(self) -> None:
        host = self.lab.nodes[0]  # as deployed: beside a real agent, answering with its address
        argv = ["nsenter", f"--net=/run/netns/{host.ns}", PYTHON, "-m", "harness.hollow",
                "--cluster", "t1", "--etcd", f"http://{ETCD_IP}:2379", "--nodes", str(HOLLOW),
                "--underlay-ip", host.ip, "--pod-cidr", "10.244.0.0/16", "--node-prefix", "24",
                "--mode", "vxlan", "--lease-ttl", "10"]  # fmt: skip
        with open(self.log, "ab") as out:
            self.runner = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                           cwd=str(PROJECT))  # fmt: skip
        wait_for(f"{HOLLOW} hollow nodes", lambda: self.hollow_nodes() == HOLLOW, timeout=60)

    def stop_runner(self, sig: int) -> None:
        if self.runner is not None and self.runner.poll() is None:
            self.runner.send_signal(sig)
            self.runner.wait(timeout=30)
        self.runner = None

    def hollow_nodes(self) -> int:
        return sum(1 for n in self.client.nodes() if n.hollow)

    def ruleset(self) -> str:
        return self.lab.ns_run(self.lab.nodes[0], ["nft", "list", "ruleset"]).stdout


@pytest.fixture(scope="module")
def ld() -> Iterator[Lab]:
    lab = AgentLab(2, "vxlan", node_grace_s=GRACE_S)
    env = Lab(lab)
    try:
        for n in lab.nodes:
            lab.start_agent(n)
        for n in lab.nodes:
            lab.wait_node(n)
        env.start_runner()
        yield env
    finally:
        env.stop_runner(signal.SIGTERM)
        for n in lab.nodes:
            print(f"----- agent {n.name}\n{n.log.read_text()[-3000:]}")
        if env.log.exists():
            print(f"----- hollow runner\n{env.log.read_text()[-3000:]}")
        lab.close()


def test_load_run_measures_every_sli_and_leaves_nothing(ld: Lab) -> None:
    """A small CL2-shaped run over 2 real + 3 hollow nodes: pod startup for both kinds,
    API calls, the agents' programming histogram, the observed probe, DNS; afterwards
    the namespace is empty."""
    cfg = LoadConfig(pods_per_node=3, rate=20.0, group_size=3, timeout_s=120, dns_rounds=2)
    real = {n.name: Path(f"/run/netns/{n.ns}") for n in ld.lab.nodes}
    run = LoadRun(ld.client, cfg, "t-load")
    nodes = ld.client.nodes()
    assert sum(1 for n in nodes if n.hollow) == HOLLOW
    with cleaning(run):
        samples = run.run(
            nodes,
            dns_lookups(sys.executable, list(real.values()), "10.96.0.0/12", 2, run.samples),
            lambda: observe(ld.client, cfg.namespace, "t-load", real, sys.executable, probes=2),
        )
    got = {(s.family, s.labels.get("kind", "")): s for s in slis_of(samples)}
    real_pods = sum(1 for h in samples.hollow.values() if not h)  # created + churned
    assert real_pods >= 2 * 3 and got[("pod_startup", "real")].samples == real_pods
    assert got[("pod_startup", "hollow")].samples == len(samples.hollow) - real_pods
    assert got[("pod_startup", "hollow")].p[99] < 5.0, got
    assert got[("api_mutating", "")].samples >= 5 * 3 * 2
    assert got[("api_list", "")].samples >= 1
    netprog = got[("network_programming", "")]
    assert netprog.samples > 0 and netprog.p[99] < 30.0, netprog
    probe = got[("network_programming_probe", "")]
    assert probe.samples == 2 * len(real) and 0 < probe.p[50] < 30.0, probe
    assert samples.dns_errors == 0 and got[("dns_lookup", "")].samples > 0
    left = ld.lab.store.get_prefix(kind_prefix("t1", "pods", cfg.namespace))[0]
    svcs = ld.lab.store.get_prefix(kind_prefix("t1", "services", cfg.namespace))[0]
    assert left == [] and svcs == [], (left, svcs)


def test_a_killed_runner_drops_its_endpoints_and_a_restart_recovers_them(ld: Lab) -> None:
    """SIGKILL: the hollow nodes go silent, the real agents judge them dead after the
    grace period and their pods leave the Service (a negative control first: the
    hollow pod IP is an endpoint while the runner lives); a restart brings them back."""
    hollow = sorted(n.name for n in ld.client.nodes() if n.hollow)
    meta = {"name": "hp", "namespace": "fault", "labels": {"app": "hp"}}
    spec = {"nodeName": hollow[0], "containers": [{"name": "c", "image": "pause"}]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "hp", "namespace": "fault"},
           "spec": {"selector": {"app": "hp"}, "ports": [{"port": 80}]}}  # fmt: skip
    ld.client.apply(located(svc) + located(pod))
    try:
        ip = wait_for(
            "hollow pod IP",
            lambda: ld.client.get(KINDS["Pod"], "fault", "hp").get("status", {}).get("podIP"),
        )
        wait_for(f"{ip} an endpoint on n1", lambda: ip in ld.ruleset(), timeout=30)
        time.sleep(3)  # past a full pass of n1's agent (resync 2 s): it keeps hollow statuses
        assert ip in ld.ruleset(), "n1's agent swept the hollow pod's status as its own"
        killed = time.monotonic()
        ld.stop_runner(signal.SIGKILL)
        wait_for(f"{ip} gone from n1", lambda: ip not in ld.ruleset(), timeout=GRACE_S + 30)
        took = time.monotonic() - killed
        assert took >= GRACE_S - 3, f"dropped after {took:.1f} s, before the grace period"
        ld.start_runner()
        wait_for(f"{ip} back on n1", lambda: ip in ld.ruleset(), timeout=60)
    finally:
        ld.client.delete(KINDS["Pod"], "fault", "hp", 0)
        ld.client.delete(KINDS["Service"], "fault", "hp")
