"""Network programming latency observed: backend Ready → first answer through the ClusterIP.

The second of issue 15's two measurements (the first is the agents' own
histogram, harness/agent/netprog.py). For each of a few probe Services with no
backend yet, a prober in every real node's network namespace connects to the
ClusterIP every 10 ms; then one real pod that answers with a banner is created
behind it. Before that pod is an endpoint the connection is refused (the proxy
rejects a Service without endpoints) or times out, so only the banner counts.
The latency per node is its first banner's time minus the pod's Ready
``lastTransitionTime``, as written by its agent — a netns lab has one clock, so
the difference is exact.
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.api.client import ApiClient
from harness.api.objects import KINDS
from harness.errors import LabError
from harness.load.run import located

POD, SERVICE = KINDS["Pod"], KINDS["Service"]
BANNER = "podlab-probe"
PORT = 8080
# The backend: answers every connection with the banner.
SERVER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('', {PORT})); s.listen(64)\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    f"    c.sendall(b'{BANNER}\\n'); c.close()\n"
)
# The prober: connects to argv[1]:argv[2] every 10 ms until it reads the banner.
PROBER = (
    "import socket, sys, time\n"
    "ip, port, limit = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])\n"
    "while time.time() < limit:\n"
    "    s = socket.socket(); s.settimeout(0.2)\n"
    "    try:\n"
    "        s.connect((ip, port))\n"
    f"        if s.recv(64).startswith(b'{BANNER}'):\n"
    "            print(repr(time.time())); sys.exit(0)\n"
    "    except OSError:\n"
    "        pass\n"
    "    finally:\n"
    "        s.close()\n"
    "    time.sleep(0.01)\n"
    "sys.exit(1)\n"
)


def probe_service(name: str, namespace: str, run_id: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "labels": {"podlab.load/run": run_id}}
    spec = {"selector": {"probe": name}, "ports": [{"port": 80, "targetPort": PORT}]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def probe_pod(name: str, namespace: str, run_id: str, node: str, python: str) -> dict[str, Any]:
    labels = {"probe": name, "podlab.load/run": run_id}
    container = {"name": "c", "image": "probe", "command": [python, "-c", SERVER]}
    spec = {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [container]}
    meta = {"name": name, "namespace": namespace, "labels": labels}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _ready_at(status: dict[str, Any]) -> float | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            text = cond.get("lastTransitionTime")
            if text:
                return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    return None


def observe(
    client: ApiClient,
    namespace: str,
    run_id: str,
    nodes: dict[str, Path],
    python: str,
    probes: int = 3,
    timeout_s: float = 60.0,
    workers: list[str] | None = None,
) -> list[float]:
    """Seconds from each probe backend's Ready to its first answer, per real node in
    ``nodes``; the backends go to ``workers`` in turn (default: every node probing)."""
    out: list[float] = []
    names = workers or sorted(nodes)
    for i in range(probes):
        name = f"probe-{i}"
        client.apply(located(probe_service(name, namespace, run_id)))
        try:
            on = names[i % len(names)]
            out += _one(client, namespace, run_id, name, nodes, on, python, timeout_s)
        finally:
            client.delete(POD, namespace, name, 0)
            client.delete(SERVICE, namespace, name)
    return out


def _one(
    client: ApiClient,
    namespace: str,
    run_id: str,
    name: str,
    nodes: dict[str, Path],
    on: str,
    python: str,
    timeout_s: float,
) -> list[float]:
    ip = str(client.get(SERVICE, namespace, name)["spec"]["clusterIP"])
    probers = {
        n: subprocess.Popen(
            ["nsenter", f"--net={path}", python, "-c", PROBER, ip, "80", str(timeout_s)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, path in nodes.items()
    }
    try:
        time.sleep(0.3)  # every prober is refused at least once before the backend exists
        client.apply(located(probe_pod(name, namespace, run_id, on, python)))
        answered = {}
        for n, p in probers.items():
            stdout, _ = p.communicate(timeout=timeout_s + 5)
            if p.returncode != 0:
                raise LabError(f"{n} got no answer through {name} ({ip}) in {timeout_s:g} s")
            answered[n] = float(stdout.strip())
        ready = _ready_at(client.get(POD, namespace, name).get("status", {}))
        if ready is None:
            raise LabError(f"probe pod {name} answered but its status has no Ready time")
        return [t - ready for t in answered.values()]
    finally:
        for p in probers.values():
            if p.poll() is None:
                p.kill()
                p.wait()
