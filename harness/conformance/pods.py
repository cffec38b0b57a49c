"""Pods for a test: created through the api, waited for, reachable by name, deleted after.

Each pod runs the echo workload (``harness.workloads.echo``: TCP, UDP and HTTP
answers naming the pod). ``create`` applies every pod of a test in one
transaction, waits until the agent reports each Running with an address and
its network ready, then until its echo server listens, so a test's first
probe measures the network and not Python's start-up.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import yaml

from harness.api.client import ApiClient
from harness.api.objects import KINDS
from harness.api.validate import load_documents, validate_documents
from harness.conformance.remote import Node, output
from harness.errors import LabError, UserError
from harness.probes import echo

NAMESPACE = "conformance"
TCP_PORT, UDP_PORT, HTTP_PORT = 8080, 8081, 8000
POD_WAIT_S = 60.0
_serial = itertools.count(1)


@dataclass(frozen=True)
class Pod:
    """A running pod: where it is and how to run a command in it."""

    name: str
    node: Node
    ip: str
    netns: str

    def run(self, argv: Sequence[str], timeout_s: float = 30.0) -> Any:
        return self.node.in_netns(self.netns, argv, timeout_s)

    def __str__(self) -> str:
        return f"{self.name} ({self.node.name})"


def echo_command(name: str) -> list[str]:
    return [echo.NODE_PYTHON, "-m", "harness.workloads.echo", "--name", name,
            "--tcp", str(TCP_PORT), "--udp", str(UDP_PORT), "--http", str(HTTP_PORT)]  # fmt: skip


def pod_manifest(name: str, node: str | None, command: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "command": command}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec,
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "labels": {"app.podlab.io/suite": "conformance"}}}  # fmt: skip


def apply_pods(client: ApiClient, manifests: list[dict[str, Any]]) -> float:
    """Validate and apply pods in one transaction; return the wall-clock time of the apply."""
    text = yaml.safe_dump_all(manifests, sort_keys=False)
    objects, problems = validate_documents(load_documents(text, "<conformance>"))
    if problems:
        raise UserError(problems)
    applied_at = time.time()
    client.apply(objects)
    return applied_at


@dataclass
class PodFactory:
    """Creates pods on chosen nodes and removes every one of them at the end of the test."""

    client: ApiClient
    nodes: dict[str, Node]
    created: list[str] = field(default_factory=list)

    def create(
        self, placement: Sequence[str | None], prefix: str = "echo", wait_s: float = POD_WAIT_S
    ) -> list[Pod]:
        """One echo pod per entry of ``placement`` (a node name, or None to let it schedule)."""
        n = next(_serial)
        names = [f"{prefix}-{n}-{i}" for i in range(len(placement))]
        manifests = [
            pod_manifest(nm, nd, echo_command(nm)) for nm, nd in zip(names, placement, strict=True)
        ]
        self.created += names
        apply_pods(self.client, manifests)
        pods = self.wait_running(names, wait_s)
        with ThreadPoolExecutor(max_workers=max(1, len(pods))) as pool:
            list(pool.map(lambda pod: self.wait_listening(pod, wait_s), pods))
        return pods

    def wait_running(self, names: list[str], wait_s: float) -> list[Pod]:
        """Poll the api until each pod is Running with an IP and NetworkReady."""
        deadline = time.monotonic() + wait_s
        pending: dict[str, str] = {}
        while True:
            ready, pending = {}, {}
            for name in names:
                status = self.client.get(KINDS["Pod"], NAMESPACE, name)
                st = status.get("status", {})
                node = status.get("spec", {}).get("nodeName", "")
                if _running(st) and node in self.nodes:
                    ready[name] = Pod(name, self.nodes[node], st["podIP"], st["netns"])
                else:
                    pending[name] = f"{st.get('phase', 'Pending')} {st.get('message', '')}".strip()
            if not pending:
                return [ready[n] for n in names]
            if time.monotonic() >= deadline:
                break
            time.sleep(0.3)
        raise LabError(
            f"pods not Running after {wait_s:.0f} s: "
            + ", ".join(f"{k} ({v})" for k, v in sorted(pending.items()))
        )

    def wait_listening(self, pod: Pod, wait_s: float) -> None:
        """Wait until the pod's echo server listens, then answers once on its own loopback.

        The answer matters: a fresh Python server can take a second or two to
        answer its first connection on a busy machine, which a test's first
        probe would otherwise misread as a slow network.
        """
        argv = echo.reach_command([("127.0.0.1", TCP_PORT)], deadline_s=min(wait_s, 20))
        res = pod.run(argv, timeout_s=wait_s)
        first = echo.parse_reach(output(res)) if res.returncode == 0 else {}
        if not any(first.values()):
            raise LabError(f"pod {pod}: echo server never listened on :{TCP_PORT}: {res.stderr}")
        argv = echo.probe_command("tcp", "127.0.0.1", TCP_PORT, count=1, budget_s=20, wait_s=15)
        report = echo.parse_probe(output(pod.run(argv, timeout_s=30)))
        if not report.all_ok:
            raise LabError(f"pod {pod}: echo server does not answer on :{TCP_PORT}: "
                           f"{report.describe()}")  # fmt: skip

    def delete_all(self, wait_s: float = 60.0) -> list[str]:
        """Delete every pod this factory created; return those the agent did not remove."""
        for name in self.created:
            self.client.delete(KINDS["Pod"], NAMESPACE, name)
        left = self.client.wait_gone([(NAMESPACE, n) for n in self.created], wait_s)
        self.created = []
        return left


def _running(st: dict[str, Any]) -> bool:
    if st.get("phase") != "Running" or not st.get("podIP") or not st.get("netns"):
        return False
    conds = {c.get("type"): c.get("status") for c in st.get("conditions", [])}
    return conds.get("NetworkReady", "True") == "True"
