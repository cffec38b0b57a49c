"""Scenario 31: a rolling update of a Deployment behind a ClusterIP and a NodePort loses no request.

A Deployment of 4 echo replicas (readiness probe, a 2 s preStop sleep as real
Deployments set so the proxies move on before SIGTERM; ``maxSurge`` 1,
``maxUnavailable`` 0) behind a NodePort Service, rolled to a new template
while a client pod on every cluster node opens 20 new connections a second to
the ClusterIP, and the first client as many to another node's NodePort (open
loop, 1 s connect budget, 25 s). The deployed controller manager does the rollout.

Judged: 0 failed requests over every stream. Measured: the rollout time
(template applied → ``podlab rollout status`` would say rolled out: every
replica updated and available, no old one left) and the stale-endpoint window
(an old pod marked terminating → the last request any node sent it), with a
timeline of replicas and answers per second. Catalogue cost "once": the default
matrix runs it in one mode (the rollout is the controller manager's and
kube-proxy's work, not the datapath's), MATRIX=full in every mode.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from harness.api.objects import KINDS
from harness.conformance import services as svc
from harness.conformance.labctl import Lab
from harness.conformance.pods import HTTP_PORT, NAMESPACE, TCP_PORT, UDP_PORT, Pod
from harness.conformance.remote import Node, output
from harness.probes import echo

APP = {"app": "roll-web"}
NAME = "roll-web"
REPLICAS = 4
NODE_PORT = 30881
PRE_STOP_S = 2
STREAM_INTERVAL_S = 0.05  # 20 new connections per second from each client
ROLLOUT_BUDGET_S = 90.0
STREAM_S = 25.0  # the rollout (about 5 s here) and the last old pod's grace period, with room
TAIL_S = 5.0  # streams must go on at least this long after the rollout ends
# the echo workload, named by $POD_NAME (the agent sets it)
COMMAND = [echo.NODE_PYTHON, "-m", "harness.workloads.echo", "--tcp", str(TCP_PORT),
           "--udp", str(UDP_PORT), "--http", str(HTTP_PORT)]  # fmt: skip
Job = tuple[Callable[..., Any], str, int]  # runner, ip, port


def deployment(revision: str) -> dict[str, Any]:
    """The Deployment as a user writes it; ``revision`` changes the template (a rollout)."""
    container = {
        "name": "main",
        "command": COMMAND,
        "ports": svc.CONTAINER_PORTS,
        "readinessProbe": {"tcpSocket": {"port": "tcp"}, "periodSeconds": 1},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_S}}},
        "resources": {"requests": {"cpu": "10m", "memory": "24Mi"}},
    }
    labels = {**svc.SUITE_LABEL, **APP}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": APP},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"podlab.io/revision": revision}},
                "spec": {"containers": [container]},
            },
        },
    }


def _live_pods(objs: svc.Objects) -> list[dict[str, Any]]:
    return [
        p
        for p in objs.client.list_objects(KINDS["Pod"], NAMESPACE)
        if p["metadata"].get("labels", {}).get("app") == APP["app"]
    ]


def _rolled_out(objs: svc.Objects) -> bool:
    d = objs.client.get(KINDS["Deployment"], NAMESPACE, NAME)
    st = d.get("status", {})
    return bool(
        st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
        and st.get("updatedReplicas") == REPLICAS
        and st.get("availableReplicas") == REPLICAS
        and st.get("replicas") == REPLICAS
    )


@pytest.fixture(scope="module")
def rollout(lab: Lab, mode: str, nodes: dict[str, Node]) -> Iterator[dict[str, Any]]:
    """The Deployment rolled out, its NodePort Service, and a client pod on every node."""
    objs = svc.Objects(lab.client(), nodes)
    names = [n.name for n in lab.cluster_nodes()]
    try:
        clients = objs.echo_pods(
            [(f"roll-client-{i}", n, {"role": "roll-client"}) for i, n in enumerate(names)]
        )
        objs.apply([deployment("1")])
        ports = [svc.port("tcp", 80, "tcp", nodePort=NODE_PORT)]
        objs.apply([svc.service(NAME, APP, ports, type="NodePort")])
        svc.until(f"deployment {NAME} rolled out", lambda: _rolled_out(objs), ROLLOUT_BUDGET_S)
        vip = objs.service(NAME)["spec"]["clusterIP"]
        first = sorted(clients.values(), key=lambda p: p.node.name)[0]
        svc.until(
            f"{first} reaches every replica of {NAME} {vip}:80",
            lambda: len(svc.tally(first.run, vip, 80, 40)[0]) == REPLICAS,
        )
        yield {"objs": objs, "vip": vip, "clients": clients}
    finally:
        objs.delete_all()
        # the garbage collector removes the ReplicaSets' pods once the Deployment is gone
        svc.until(f"pods of {NAME} removed", lambda: not _live_pods(objs), 90)


class Terminations:
    """When each pod of the Deployment was first seen terminating (polled every 0.2 s)."""

    def __init__(self, objs: svc.Objects) -> None:
        self.objs = objs
        self.seen: dict[str, float] = {}
        self.replicas: list[tuple[float, float]] = []  # (epoch, Ready pods)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop.is_set():
            now, ready = time.time(), 0
            for p in _live_pods(self.objs):
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


def _streams(
    jobs: dict[str, Job], duration_s: float, event: Callable[[], Any]
) -> tuple[float, Any, dict[str, echo.Stream]]:
    """Open-loop streams (label → runner, ip, port); ``event`` runs 2 s in."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {
            label: pool.submit(
                run,
                echo.stream_command(ip, port, duration_s, STREAM_INTERVAL_S, timeout_s=1.0),
                duration_s + 30,
            )
            for label, (run, ip, port) in jobs.items()
        }
        time.sleep(2.0)
        t_event = time.time()
        got = event()
        return t_event, got, {k: echo.parse_stream(output(f.result())) for k, f in futures.items()}


@pytest.mark.scenario(31)
def test_a_rolling_update_behind_a_service_loses_no_request(
    lab: Lab, rollout: dict[str, Any], record: Any
) -> None:
    objs: svc.Objects = rollout["objs"]
    clients: dict[str, Pod] = rollout["clients"]
    vip = rollout["vip"]
    ordered = sorted(clients.values(), key=lambda p: p.node.name)
    other = ordered[-1].node.underlay_ip
    jobs: dict[str, Job] = {f"clusterip-from-{c.node.name}": (c.run, vip, 80) for c in ordered}
    jobs[f"nodeport-{other}-from-{ordered[0].node.name}"] = (ordered[0].run, other, NODE_PORT)
    before = {p["metadata"]["name"] for p in _live_pods(objs)}

    def roll() -> float:
        objs.apply([deployment("2")])
        started = time.time()
        svc.until("the rollout to revision 2", lambda: _rolled_out(objs), ROLLOUT_BUDGET_S, 0.2)
        return time.time() - started

    with Terminations(objs) as term:
        t_roll, took, streams = _streams(jobs, STREAM_S, roll)
        time.sleep(1.0)
    samples = [s for st in streams.values() for s in st.samples]
    failed = [(round(t - t_roll, 2), w) for t, w in samples if not w.startswith(f"{NAME}-")]
    old = {n: t for n, t in term.seen.items() if n in before}
    stale = {
        n: max(0.0, max((t for t, w in samples if w == n), default=t0) - t0)
        for n, t0 in old.items()
    }
    record("rolling_update_failed_requests_count", len(failed), "count", threshold=0)
    record("rolling_update_requests_count", len(samples), "count")
    record("rolling_update_rollout_s", took, "s")
    if stale:
        record("rolling_update_stale_endpoint_window_max_s", max(stale.values()), "s")
    per_second = Counter(
        int(t - t_roll) for t, w in samples if w.startswith(f"{NAME}-") and t >= t_roll
    )
    events = [(0.0, "template changed (revision 2)"), (took, "rolled out")]
    events += [(t - t_roll, f"{n} terminating") for n, t in sorted(old.items(), key=lambda x: x[1])]
    record.timeline(
        "rolling_update",
        events=events,
        samples=[(float(s), float(c)) for s, c in sorted(per_second.items())],
        sample_name="answered_per_s",
        sample_unit="1/s",
    )
    record.timeline(
        "rolling_update_ready_replicas",
        events=[],
        samples=[(t - t_roll, r) for t, r in term.replicas if t >= t_roll],
        sample_name="ready_replicas",
        sample_unit="pods",
    )
    assert 2.0 + took + TAIL_S <= STREAM_S, (
        f"the rollout took {took:.1f} s: too long for {STREAM_S:.0f} s of streams to see its end"
    )
    assert len(samples) > 0.5 * len(jobs) * STREAM_S / STREAM_INTERVAL_S, (
        f"only {len(samples)} requests were sent: the streams did not run open loop"
    )
    assert set(old) == before, f"old pods never seen terminating: {sorted(before - set(old))}"
    assert not failed, (
        f"{len(failed)} of {len(samples)} requests failed during the rollout "
        f"(seconds after the template change, outcome): {failed[:20]}"
    )
