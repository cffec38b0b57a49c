"""Graceful pod deletion with real agents: out of the Service at once, then stopped.

Two real node agents (agentlab, host-gw) each run the services controller; the
delete goes through ``ApiClient.delete`` exactly as ``podlab delete pod`` does
it. Proves: the deleted backend gets no new connection after its endpoint is
gone on every node, no request of a steady stream fails (the preStop sleep
covers the time the other node needs to reprogram), the pod's process gets
SIGTERM only after the preStop sleep, a process that ignores SIGTERM is killed
when the grace period ends, and the object disappears once the pod is gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from harness.agent.store import cluster_prefix, pod_key
from harness.api.client import ApiClient
from harness.api.kv import KV
from harness.api.objects import KINDS
from harness.probes import echo
from tests.agent.agentlab import AgentLab, wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]
VIP = "10.96.0.30"
ECHO = ["python", "-m", "harness.workloads.echo", "--tcp", "8080"]
NETCHECK = (sys.executable, "-m", "harness.probes.netcheck")


def stream(netns: str, seconds: float, rate: float) -> list[str]:
    """A steady stream to the VIP from ``netns``: a new TCP connection every 1/rate s."""
    argv = echo.stream_command(VIP, 80, seconds, 1 / rate, timeout_s=1.0, runner=NETCHECK)
    return ["nsenter", f"--net={netns}", "--", *argv]


def _pod(name: str, node: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "c",
        "command": command,
        "ports": [{"name": "echo", "containerPort": 8080}],
        "readinessProbe": {"tcpSocket": {"port": "echo"}, "periodSeconds": 1},
    }
    if "pre_stop" in spec:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": spec.pop("pre_stop")}}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                     "labels": {"app": "web"} if name.startswith("web") else {}},
        "spec": {"nodeName": node, "containers": [container], **spec},
    }  # fmt: skip


def _ready(lab: AgentLab, name: str) -> bool:
    st = lab.pod_status(name) or {}
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions", [])
    )


def three_backends(lab: AgentLab, pre_stop: int) -> str:
    """web-0 on n1, web-1 and web-2 on n2 behind VIP:80, and a client pod on n1;
    returns the client's netns once its stream reaches all three."""
    n1, n2 = lab.nodes[0], lab.nodes[1]
    for name, node in (("web-0", n1), ("web-1", n2), ("web-2", n2)):
        obj = _pod(name, node.name, [*ECHO, "--name", name], pre_stop=pre_stop)
        lab.store.put(pod_key("t1", "default", name), json.dumps(obj))
    client = _pod("client", n1.name, ["sleep", "infinity"])
    lab.store.put(pod_key("t1", "default", "client"), json.dumps(client))
    for name in ("web-0", "web-1", "web-2"):
        wait_for(f"{name} Ready", lambda name=name: _ready(lab, name), timeout=60)
    svc = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": VIP, "selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": 8080}]},
    }  # fmt: skip
    lab.store.put(f"{cluster_prefix('t1')}services/default/web", json.dumps(svc))
    netns = n1.pod_netns(lab.wait_running("client")["netns"])

    def backends() -> set[str]:
        res = subprocess.run(stream(netns, 1, 50), capture_output=True, text=True)
        return {w for _, w in echo.parse_stream(res.stdout).samples}

    wait_for("all three backends answer", lambda: backends() == {"web-0", "web-1", "web-2"})
    return netns


@pytest.fixture
def two_nodes(agent_lab) -> tuple[AgentLab, ApiClient]:
    lab: AgentLab = agent_lab(2, "host-gw")
    for n in lab.nodes:
        lab.start_agent(n)
    for n in lab.nodes:
        lab.wait_node(n)
    return lab, ApiClient(KV(lab.store.endpoints[0]), "t1")


def test_graceful_delete_loses_no_request(two_nodes) -> None:
    lab, api = two_nodes
    n2 = lab.nodes[1]
    netns = three_backends(lab, pre_stop=2)
    proc = subprocess.Popen(stream(netns, 7, 100), stdout=subprocess.PIPE, text=True)
    time.sleep(2.0)
    t_del = time.time()
    assert api.delete(KINDS["Pod"], "default", "web-1")  # graceful: 30 s grace, 2 s preStop
    samples = echo.parse_stream(proc.communicate(timeout=60)[0]).samples
    obj = (
        api.get(KINDS["Pod"], "default", "web-1")
        if lab.store.get(pod_key("t1", "default", "web-1"))
        else None
    )
    failed = [s for s in samples if not s[1].startswith("web-")]
    hits = [s[0] - t_del for s in samples if s[1] == "web-1" and s[0] >= t_del]
    print(f"graceful delete: {len(samples)} requests, {len(failed)} failed, last request to "
          f"web-1 {max(hits, default=0) * 1000:.0f} ms after the delete")  # fmt: skip
    assert not failed, f"requests failed during a graceful delete: {failed[:5]}"
    assert any(s[1] == "web-1" for s in samples if s[0] < t_del), "control: web-1 served before"
    assert max(hits, default=0.0) < 1.0, f"web-1 still got requests {max(hits):.2f} s after"
    # the pod went only after its preStop sleep; then the object itself is removed
    assert obj is None or obj["metadata"].get("deletionTimestamp")
    wait_for(
        "web-1 object removed", lambda: lab.store.get(pod_key("t1", "default", "web-1")) is None
    )
    wait_for("web-1 status removed", lambda: lab.pod_status("web-1") is None)
    log = n2.log.read_text()
    assert "pod default/web-1: terminating (preStop sleep 2s, grace period 30s)" in log


def test_grace_period_ends_in_sigkill(two_nodes) -> None:
    lab, api = two_nodes
    n1 = lab.nodes[0]
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
    ]
    lab.store.put(
        pod_key("t1", "default", "stubborn"),
        json.dumps(_pod("stubborn", n1.name, stubborn, terminationGracePeriodSeconds=2)),
    )
    lab.wait_running("stubborn")
    time.sleep(1.0)  # the interpreter has installed its SIGTERM handler
    started = time.monotonic()
    assert api.delete(KINDS["Pod"], "default", "stubborn")
    stored = json.loads(lab.store.get(pod_key("t1", "default", "stubborn")).value)
    assert stored["metadata"]["deletionGracePeriodSeconds"] == 2
    assert api.get(KINDS["Pod"], "default", "stubborn")["status"]["phase"] == "Running"
    wait_for(
        "stubborn object removed",
        lambda: lab.store.get(pod_key("t1", "default", "stubborn")) is None,
        timeout=20,
    )
    took = time.monotonic() - started
    assert 1.5 <= took < 6.0, f"a SIGTERM-ignoring pod with a 2 s grace period took {took:.1f} s"
    # an immediate delete (grace 0) of a fresh pod is still immediate
    lab.store.put(pod_key("t1", "default", "quick"), json.dumps(_pod("quick", n1.name, stubborn)))
    lab.wait_running("quick")
    assert api.delete(KINDS["Pod"], "default", "quick", grace_s=0)
    assert lab.store.get(pod_key("t1", "default", "quick")) is None
    wait_for("quick status removed", lambda: lab.pod_status("quick") is None)
