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

import pytest

from harness.api.client import ApiClient
from harness.api.objects import KINDS
from harness.probes import echo
from harness.store.keys import pod_key
from harness.testlab.agentlab import AgentLab
from harness.testlab.failover import pod as _pod
from harness.testlab.failover import stream, three_backends
from harness.testlab.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]


@pytest.fixture
def two_nodes(agent_lab) -> tuple[AgentLab, ApiClient]:
    lab: AgentLab = agent_lab(2, "host-gw")
    for n in lab.nodes:
        lab.start_agent(n)
    for n in lab.nodes:
        lab.wait_node(n)
    return lab, ApiClient(lab.store, "t1")


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
