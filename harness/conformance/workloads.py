"""What the workload scenarios (31–33) share: the echo Deployment, its watchers, open-loop
streams, and the ``podlab`` CLI as a user runs it.

The scenarios judge what a user sees, so the verbs a user types (``rollout
status``, ``rollout undo``, a refused ``apply``) run as the real command in a
child process against the cluster's etcd; the Deployment and its pods are
read back through the API client.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from harness.api.objects import KINDS
from harness.conformance import services as svc
from harness.conformance.labctl import Lab, emulated
from harness.conformance.pods import HTTP_PORT, NAMESPACE, TCP_PORT, UDP_PORT
from harness.conformance.remote import output
from harness.kube import apps
from harness.probes import echo

APP = {"app": "roll-web"}
NAME = "roll-web"
REPLICAS = 4
PRE_STOP_S = 2
STREAM_INTERVAL_S = 0.05  # 20 new connections per second from each client
# the echo workload, named by $POD_NAME (the agent sets it)
COMMAND = [echo.NODE_PYTHON, "-m", "harness.workloads.echo", "--tcp", str(TCP_PORT),
           "--udp", str(UDP_PORT), "--http", str(HTTP_PORT)]  # fmt: skip
# a broken new version: it never listens on the port its readiness probe checks
BROKEN_COMMAND = [echo.NODE_PYTHON, "-m", "harness.workloads.echo", "--http", str(HTTP_PORT)]
Job = tuple[Callable[..., Any], str, int]  # runner, ip, port
Obj = dict[str, Any]


@dataclass(frozen=True)
class Pace:
    """How hard the streams push and how long a rollout may take (scenarios 13 and 31).

    Native nodes: 20 connections a second per stream. An emulated (TCG) guest has
    one vCPU for every replica's echo server, the client streams and the agent: at
    that rate, with no rollout at all, 20–90 % of vm-lab's requests timed out at 1 s
    while the same pods, idle, answered in 6–10 ms, and a saturated readiness probe
    took a replica out of the Service. So there the streams send 4 a second (still
    several per second of any stale window), and the rollout, whose pod starts are
    emulated too (79–84 s against 60 s of streams), gets three times the time.
    A terminating pod's preStop is what a Deployment gives the proxies to move on.
    On an emulated control plane (etcd, the controllers and the agent on one vCPU)
    a services pass for one endpoint change took up to 5.4 s, a removal can wait
    behind a running pass, and an old pod still answered 10.3 s into a 12 s
    preStop (VM runs 5 and 6): so there the preStop is 20 s, not 2. A request
    there may also connect and then wait past 1 s for a reply (5 of 1,232 in run
    6): the echo server shares that vCPU with every replica. So there scenario
    31's requests get 5 s; scenario 13 keeps 1 s, since its stopped-node verdict
    is built on when requests to the stopped node's backend stop timing out.
    """

    interval_s: float = STREAM_INTERVAL_S
    scale: float = 1.0
    pre_stop_s: int = PRE_STOP_S
    timeout_s: float = 1.0  # scenario 31's per-request bound

    @classmethod
    def of(cls, lab: Lab) -> Pace:
        return cls(0.25, 3.0, 20, 5.0) if emulated(lab) else cls()


def deployment(revision: str, command: list[str] | None = None,
               max_unavailable: int = 0, pre_stop_s: int = PRE_STOP_S) -> Obj:  # fmt: skip
    """The Deployment as a user writes it; ``revision`` changes the template (a rollout)."""
    container = {
        "name": "main",
        "command": command or COMMAND,
        "ports": svc.CONTAINER_PORTS,
        "readinessProbe": {"tcpSocket": {"port": "tcp"}, "periodSeconds": 1},
        "lifecycle": {"preStop": {"sleep": {"seconds": pre_stop_s}}},
        "resources": {"requests": {"cpu": "10m", "memory": "24Mi"}},
    }
    strategy = {"maxSurge": 1, "maxUnavailable": max_unavailable}
    return apps.deployment_manifest(
        NAME, NAMESPACE, REPLICAS, container, selector=APP, labels={**svc.SUITE_LABEL, **APP},
        annotations={"podlab.io/revision": revision}, strategy={"rollingUpdate": strategy},
    )  # fmt: skip


def live_pods(objs: svc.Objects, app: str = APP["app"], ns: str = NAMESPACE) -> list[Obj]:
    """The pods labelled ``app`` (terminating ones included)."""
    return [
        p
        for p in objs.client.list_objects(KINDS["Pod"], ns)
        if p["metadata"].get("labels", {}).get("app") == app
    ]


def deployment_status(objs: svc.Objects, name: str = NAME, ns: str = NAMESPACE) -> Obj:
    """The Deployment with its status (as ``podlab get -o yaml`` shows it)."""
    return objs.client.get(KINDS["Deployment"], ns, name)


def rolled_out(objs: svc.Objects) -> bool:
    """What ``podlab rollout status`` calls done: every replica updated and available."""
    d = deployment_status(objs)
    st = d.get("status", {})
    return bool(
        st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
        and st.get("updatedReplicas") == REPLICAS
        and st.get("availableReplicas") == REPLICAS
        and st.get("replicas") == REPLICAS
    )


def template_hashes(objs: svc.Objects) -> set[str]:
    """The ``pod-template-hash`` of every live (not terminating) pod of the Deployment."""
    return {
        p["metadata"]["labels"].get("pod-template-hash", "")
        for p in live_pods(objs)
        if not p["metadata"].get("deletionTimestamp")
    }


class Terminations:
    """When each pod of the Deployment was first seen terminating, and Ready pods over time
    (polled every 0.2 s)."""

    def __init__(self, objs: svc.Objects) -> None:
        self.objs = objs
        self.seen: dict[str, float] = {}
        self.replicas: list[tuple[float, float]] = []  # (epoch, Ready pods)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop.is_set():
            now, ready = time.time(), 0
            for p in live_pods(self.objs):
                name = p["metadata"]["name"]
                if p["metadata"].get("deletionTimestamp"):
                    self.seen.setdefault(name, now)
                st = p.get("status", {})
                conds = {c.get("type"): c.get("status") for c in st.get("conditions", [])}
                ready += conds.get("Ready") == "True" and name not in self.seen
            self.replicas.append((now, float(ready)))
            self.stop.wait(0.2)

    def __enter__(self) -> Terminations:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def streams(
    jobs: dict[str, Job],
    duration_s: float,
    event: Callable[[], Any],
    stop_file: str,
    pace: Pace,
) -> tuple[float, Any, dict[str, echo.Stream]]:
    """Open-loop streams (label → runner, ip, port) at ``pace``; ``event`` runs 2 s in.

    ``stop_file``: the streams end early once it exists on their node (``event``
    creates it when it knows how long the streams need to be).
    """
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {
            label: pool.submit(
                run,
                echo.stream_command(
                    ip, port, duration_s, pace.interval_s, pace.timeout_s, stop_file=stop_file
                ),
                duration_s + 30,
            )
            for label, (run, ip, port) in jobs.items()
        }
        time.sleep(2.0)
        t_event = time.time()
        got = event()
        return t_event, got, {k: echo.parse_stream(output(f.result())) for k, f in futures.items()}


@dataclass(frozen=True)
class Cli:
    """One ``podlab`` command's outcome."""

    rc: int
    out: str
    err: str
    took_s: float


def podlab(lab: Lab, *argv: str, timeout_s: float = 120.0) -> Cli:
    """Run ``podlab ARGV --etcd … --cluster …`` as a user would, against the run's cluster."""
    cluster = lab.first_cluster
    full = [*argv, "--etcd", lab.endpoints[cluster], "--cluster", cluster]
    code = "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))"
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code, *full], capture_output=True, text=True,
                         timeout=timeout_s, check=False)  # fmt: skip
    return Cli(res.returncode, res.stdout, res.stderr, time.monotonic() - started)
