"""Service failover setup on an AgentLab: three backends behind a VIP, a steady stream.

Shared by ``tests/agent/test_graceful_delete.py`` and ``bench/bench_svc_failover.py``:
web-0 on n1, web-1 and web-2 on n2 behind ``VIP:80`` (each answering its pod
name), and a client pod on n1 from which ``stream`` opens a new TCP connection
every 1/rate s (``netcheck stream``), so a test can count failed requests and
the last one a deleted backend answered.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Any

from harness.probes import echo
from harness.store.keys import pod_key, service_key
from harness.testlab.agentlab import AgentLab
from harness.testlab.wait import wait_for

VIP = "10.96.0.30"
ECHO = ["python", "-m", "harness.workloads.echo", "--tcp", "8080"]
NETCHECK = (sys.executable, "-m", "harness.probes.netcheck")


def stream(netns: str, seconds: float, rate: float) -> list[str]:
    """A steady stream to the VIP from ``netns``: a new TCP connection every 1/rate s."""
    argv = echo.stream_command(VIP, 80, seconds, 1 / rate, timeout_s=1.0, runner=NETCHECK)
    return ["nsenter", f"--net={netns}", "--", *argv]


def pod(name: str, node: str, command: list[str], **spec: Any) -> dict[str, Any]:
    """A Pod as ``podlab apply`` stores it: an echo port named ``echo`` with a TCP
    readiness probe; ``pre_stop=S`` adds a preStop sleep, other keywords go to spec."""
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


def ready(lab: AgentLab, name: str) -> bool:
    """Whether the pod's agent reports it Ready."""
    st = lab.pod_status(name) or {}
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions", [])
    )


def three_backends(lab: AgentLab, pre_stop: int) -> str:
    """web-0 on n1, web-1 and web-2 on n2 behind VIP:80, and a client pod on n1;
    returns the client's netns once its stream reaches all three."""
    n1, n2 = lab.nodes[0], lab.nodes[1]
    for name, node in (("web-0", n1), ("web-1", n2), ("web-2", n2)):
        obj = pod(name, node.name, [*ECHO, "--name", name], pre_stop=pre_stop)
        lab.store.put(pod_key("t1", "default", name), json.dumps(obj))
    client = pod("client", n1.name, ["sleep", "infinity"])
    lab.store.put(pod_key("t1", "default", "client"), json.dumps(client))
    for name in ("web-0", "web-1", "web-2"):
        wait_for(f"{name} Ready", functools.partial(ready, lab, name), timeout=60)
    svc = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": VIP, "selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": 8080}]},
    }  # fmt: skip
    lab.store.put(service_key("t1", "default", "web"), json.dumps(svc))
    netns = n1.pod_netns(lab.wait_running("client")["netns"])

    def backends() -> set[str]:
        res = subprocess.run(stream(netns, 1, 50), capture_output=True, text=True)
        return {w for _, w in echo.parse_stream(res.stdout).samples}

    wait_for("all three backends answer", lambda: backends() == {"web-0", "web-1", "web-2"})
    return netns
