"""Helpers of the services, DNS and policy suites: labelled pods, objects, tallies, lookups.

The shared ``PodFactory`` makes unlabelled echo pods in one namespace; services
and policies need pods with labels, named container ports and a readiness
probe, in more than one namespace, and objects (Service, NetworkPolicy,
Namespace) applied and removed around a test. ``Objects`` does both and
deletes everything it made at the end, pods last and waited for.
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import yaml

from harness.api.client import ApiClient
from harness.api.exec import exec_in_pod
from harness.api.objects import KINDS
from harness.api.validate import load_documents, validate_documents
from harness.conformance.labctl import Lab
from harness.conformance.pods import HTTP_PORT, NAMESPACE, TCP_PORT, UDP_PORT, Pod, echo_command
from harness.conformance.remote import Node, output
from harness.errors import LabError, UserError
from harness.probes import echo

SUITE_LABEL = {"app.podlab.io/suite": "conformance"}
CONTAINER_PORTS = [
    {"name": "tcp", "containerPort": TCP_PORT, "protocol": "TCP"},
    {"name": "udp", "containerPort": UDP_PORT, "protocol": "UDP"},
    {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
]
DNS_IP_SUFFIX = 10  # kube-dns: the service CIDR's .10
# χ² critical values at p = 0.001 by degrees of freedom: a fair spread fails 1 run in 1000.
CHI2_CRITICAL = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46}

# One DNS question from inside a pod's netns, answered as JSON: rcode and (type, rdata) pairs.
ASK = (
    "import json, sys\nfrom dnslib import DNSRecord, QTYPE, RCODE\n"
    "q = DNSRecord.question(sys.argv[2], sys.argv[3])\n"
    "r = DNSRecord.parse(q.send(sys.argv[1], 53, timeout=2))\n"
    "print(json.dumps({'rcode': RCODE[r.header.rcode], "
    "'answers': [[QTYPE[x.rtype], str(x.rdata).rstrip('.')] for x in r.rr]}))"
)


def first_word(reply: str) -> str:
    """The answering pod's name: the echo servers start every reply with it."""
    return reply.split()[0] if reply.split() else ""


def chi2(counts: Counter[str], expected_names: Sequence[str]) -> float:
    """Pearson's χ² of ``counts`` against a uniform spread over ``expected_names``."""
    total = sum(counts[n] for n in expected_names)
    mean = total / len(expected_names)
    return sum((counts[n] - mean) ** 2 / mean for n in expected_names)


def tally(
    src: Callable[..., Any], ip: str, port: int, count: int, proto: str = "tcp"
) -> tuple[Counter[str], echo.ProbeReport]:
    """``count`` fresh connections (or datagrams) to ip:port; answers counted by pod name."""
    argv = echo.probe_command(proto, ip, port, count=count, connect_timeout_s=2,
                              budget_s=max(20.0, count * 0.3), wait_s=2)  # fmt: skip
    report = echo.parse_probe(output(src(argv, max(40.0, count * 0.3 + 20))))
    return Counter(first_word(r) for r in report.replies()), report


# A stream's lead before the event it covers: the event starts once the stream's first
# request was answered and LEAD_S more have passed, as the probe itself saw them
# (netcheck --ready-file), no longer after a fixed 3-5 s guessed to cover the ssh round
# trip and the interpreter's start-up as well (docs/conformance.md, "Leads on the
# probe's signal"). Without an answer within READY_WAIT_S the event starts anyway, as
# before, and the check's own control says what was missing.
LEAD_S = 1.0
READY_WAIT_S = 15.0


def ready_file(tag: str) -> str:
    """A fresh node-private path for a probe's ``--ready-file``."""
    return f"/run/podlab-{tag}-{uuid.uuid4().hex[:8]}.ready"


def wait_ready(nodes: Sequence[Node], *paths: str, wait_s: float = READY_WAIT_S) -> bool:
    """Wait until ``paths`` exist on every one of ``nodes`` (all polled at once, each
    node within ``wait_s``); whether they all did."""
    unique = list({n.name: n for n in nodes}.values())
    with ThreadPoolExecutor(len(unique)) as pool:
        return all(pool.map(lambda n: n.wait_files(paths, wait_s), unique))


def until(
    what: str, check: Callable[[], Any], deadline_s: float = 20.0, step_s: float = 0.3
) -> Any:
    """Poll ``check`` until it returns something truthy; LabError naming ``what`` otherwise."""
    end = time.monotonic() + deadline_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= end:
            raise LabError(f"{what}: not true after {deadline_s:.0f} s")
        time.sleep(step_s)


def ipvs_saved(node: Node, wanted: Callable[[str], bool], deadline_s: float = 120.0) -> str:
    """``ipvsadm -Sn`` on ``node``, read every 2 s until ``wanted`` holds of it or the
    deadline passes: the last read, for the caller to judge (and show when it fails)."""
    end = time.monotonic() + deadline_s
    saved = node.check(["ipvsadm", "-Sn"]).stdout
    while not wanted(saved) and time.monotonic() < end:
        time.sleep(2)
        saved = node.check(["ipvsadm", "-Sn"]).stdout
    return saved


def dns_ip(service_cidr: str) -> str:
    """kube-dns's address: the service CIDR's .10, as kubeadm allocates it."""
    return str(ipaddress.ip_network(service_cidr)[DNS_IP_SUFFIX])


def ask(pod: Pod, server: str, name: str, qtype: str = "A") -> dict[str, Any]:
    """Ask the cluster DNS ``server`` one question from inside ``pod``."""
    res = pod.run([echo.NODE_PYTHON, "-c", ASK, server, name, qtype], timeout_s=20)
    text = output(res).strip().splitlines()
    for line in reversed(text):
        if line.startswith("{"):
            return dict(json.loads(line))
    return {"rcode": "NO-ANSWER", "answers": [], "error": " ".join(text)[-200:]}


def resolve_in_pod(lab: Lab, pod: Pod, namespace: str, name: str) -> list[str]:
    """``podlab exec pod/NAME -- getent ahostsv4 NAME``: glibc in the pod, as a user runs it.

    The same path as the CLI (``exec_in_pod``: the pod's node from etcd, ssh,
    the pod's own mount namespace with the resolv.conf the agent wrote for it),
    so search domains and ndots are the pod's own. getent exits 2 for a name
    that does not resolve; any other failure (ssh, the pod gone) is raised.
    """
    argv = ["getent", "ahostsv4", name]
    res = exec_in_pod(lab.client(), lab.lab_dir, namespace, pod.name, argv, timeout_s=20)
    if res.returncode not in (0, 2):
        raise LabError(
            f"podlab exec pod/{pod.name} -n {namespace} -- {' '.join(argv)} failed "
            f"({res.returncode}): {(res.stderr or res.stdout).strip()[:300]}"
        )
    return sorted({ln.split()[0] for ln in res.stdout.splitlines() if ln.strip()})


@dataclass
class Objects:
    """Pods and objects of one test or module, all removed by ``delete_all``."""

    client: ApiClient
    nodes: dict[str, Node]
    pods: list[tuple[str, str]] = field(default_factory=list)
    others: list[tuple[str, str, str]] = field(default_factory=list)  # kind, ns, name

    def apply(self, manifests: Sequence[dict[str, Any]]) -> None:
        """Validate and apply in one transaction; remember what to delete."""
        text = yaml.safe_dump_all(list(manifests), sort_keys=False)
        objects, problems = validate_documents(load_documents(text, "<conformance>"))
        if problems:
            raise UserError(problems)
        self.client.apply(objects)
        for m in manifests:
            kind, meta = m["kind"], m["metadata"]
            ref = (meta.get("namespace", "default"), meta["name"])
            if kind == "Pod" and ref not in self.pods:
                self.pods.append(ref)
            elif kind != "Pod" and (kind, *ref) not in self.others:
                self.others.append((kind, *ref))

    def remove(self, kind: str, namespace: str, name: str) -> None:
        self.client.delete(KINDS[kind], namespace, name)
        if (kind, namespace, name) in self.others:
            self.others.remove((kind, namespace, name))

    def service(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        return self.client.get(KINDS["Service"], namespace, name)

    def echo_pods(
        self,
        specs: Sequence[tuple[str, str, dict[str, str]]],
        namespace: str = NAMESPACE,
        wait_s: float = 60.0,
        pre_stop_s: int = 0,
    ) -> dict[str, Pod]:
        """Echo pods (name, node, labels) with named ports and a readiness probe, once Ready."""
        manifests = [
            pod_manifest(n, node, labels, namespace, pre_stop_s) for n, node, labels in specs
        ]
        self.apply(manifests)
        return {n: self.wait_ready(namespace, n, wait_s) for n, _, _ in specs}

    def wait_ready(self, namespace: str, name: str, wait_s: float) -> Pod:
        def ready() -> Pod | None:
            obj = self.client.get(KINDS["Pod"], namespace, name)
            st, node = obj.get("status", {}), obj.get("spec", {}).get("nodeName", "")
            conds = {c.get("type"): c.get("status") for c in st.get("conditions", [])}
            if conds.get("Ready") == "True" and st.get("podIP") and node in self.nodes:
                return Pod(name, self.nodes[node], st["podIP"], st["netns"])
            return None

        return until(f"pod {namespace}/{name} Ready", ready, wait_s)  # type: ignore[no-any-return]

    def running(self, namespace: str, manifest: dict[str, Any]) -> Pod | None:
        """The pod once Running with an address, Ready or not (for readiness tests)."""
        name = manifest["metadata"]["name"]
        obj = self.client.get(KINDS["Pod"], namespace, name)
        st, node = obj.get("status", {}), obj.get("spec", {}).get("nodeName", "")
        if st.get("phase") == "Running" and st.get("podIP") and node in self.nodes:
            return Pod(name, self.nodes[node], st["podIP"], st["netns"])
        return None

    def delete_all(self, wait_s: float = 60.0) -> list[str]:
        """Delete every object and pod made here; return pods the agents did not remove."""
        for kind, ns, name in reversed(self.others):
            if kind != "Namespace":
                self.client.delete(KINDS[kind], ns, name)
        for ns, name in self.pods:
            self.client.delete(KINDS["Pod"], ns, name)
        left = self.client.wait_gone(list(self.pods), wait_s)
        for kind, ns, name in self.others:
            if kind == "Namespace":
                self.client.delete(KINDS[kind], ns, name)
        self.pods, self.others = [], []
        return left


def pod_manifest(
    name: str, node: str, labels: dict[str, str], namespace: str, pre_stop_s: int = 0
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "command": echo_command(name),
        "ports": CONTAINER_PORTS,
        "readinessProbe": {"tcpSocket": {"port": "tcp"}, "periodSeconds": 1},
    }
    if pre_stop_s:  # what a real Deployment sets so a graceful delete loses nothing
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": pre_stop_s}}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {**SUITE_LABEL, **labels}},
            "spec": {"nodeName": node, "containers": [container]}}  # fmt: skip


def service(
    name: str,
    selector: dict[str, str] | None,
    ports: Sequence[dict[str, Any]],
    namespace: str = NAMESPACE,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": list(ports), **spec}
    if selector is not None:
        body["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}  # fmt: skip


def port(
    name: str, number: int, target: int | str, proto: str = "TCP", **extra: Any
) -> dict[str, Any]:
    return {"name": name, "protocol": proto, "port": number, "targetPort": target, **extra}


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def policy(name: str, spec: dict[str, Any], namespace: str = NAMESPACE) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip
