"""Scenarios 31 and 32: a rolling update behind a Service loses no request; the HPA reacts.

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

Scenario 32 (same module, same client pods): a 1-replica Deployment with an
autoscaling/v2 HPA (CPU 50 % of a 100m request, 1–3 replicas, scale-down
window 20 s) gets a step of 10 requests/s of 20 ms of CPU each. Judged: the
autoscaler adds replicas, a new one answers requests, and it scales back to 1
no sooner than the window after the load stops. Recorded: time to scale up,
to the first answer from a new replica, to scale down; failed requests and
p99 latency under the step (not judged: the single replica is overloaded on
purpose until the autoscaler acts); a timeline of answers per second.
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


# -- scenario 32: the autoscaler ----------------------------------------------------------

HPA_APP = {"app": "hpa-web"}
HPA_NAME = "hpa-web"
HPA_MAX = 3
# 10 requests/s × 20 ms of CPU: 0.2 cores against a 100m request (200 % of it, target 50 %),
# light enough that the one replica still answers its readiness probe on a busy machine
# (an unready pod has no metrics for the autoscaler, as in Kubernetes)
BURN = "/burn?ms=20"
BURN_INTERVAL_S = 0.1
SCALE_DOWN_WINDOW_S = 20
TARGET = {"type": "Utilization", "averageUtilization": 50}
HPA_BUDGET_S = 90.0  # load step → new replicas serving: sync period (15 s) + start-up, with room


def hpa_objects() -> list[dict[str, Any]]:
    """A 1-replica echo Deployment (100m CPU requested), its Service, and its HPA (50 %)."""
    d = deployment("1")
    d["metadata"]["name"] = HPA_NAME
    d["spec"]["replicas"] = 1
    d["spec"]["selector"] = {"matchLabels": HPA_APP}
    d["spec"]["template"]["metadata"]["labels"] = {**svc.SUITE_LABEL, **HPA_APP}
    c = d["spec"]["template"]["spec"]["containers"][0]
    c["resources"] = {"requests": {"cpu": "100m", "memory": "24Mi"}, "limits": {"cpu": "1"}}
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": HPA_NAME, "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": HPA_NAME},
            "minReplicas": 1,
            "maxReplicas": HPA_MAX,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": TARGET}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S}},
        },
    }
    ports = [svc.port("http", 80, "http")]
    return [d, svc.service(HPA_NAME, HPA_APP, ports), hpa]


def _replicas(objs: svc.Objects) -> tuple[int, int]:
    """(spec.replicas, availableReplicas) of the autoscaled Deployment."""
    d = objs.client.get(KINDS["Deployment"], NAMESPACE, HPA_NAME)
    return int(d["spec"]["replicas"]), int(d.get("status", {}).get("availableReplicas") or 0)


@pytest.mark.scenario(32)
def test_the_autoscaler_adds_serving_replicas_under_load_and_waits_its_window(
    lab: Lab, rollout: dict[str, Any], record: Any
) -> None:
    objs: svc.Objects = rollout["objs"]
    client = sorted(rollout["clients"].values(), key=lambda p: p.node.name)[0]
    objs.apply(hpa_objects())
    try:
        svc.until(f"deployment {HPA_NAME} available", lambda: _replicas(objs) == (1, 1), 90)
        vip = objs.service(HPA_NAME)["spec"]["clusterIP"]
        first = {p["metadata"]["name"] for p in _hpa_pods(objs)}
        stop = f"/tmp/podlab-hpa-stop-{client.name}"
        client.node.run(["rm", "-f", stop])
        argv = [*echo.NODE_NETCHECK, "hstream", "--target", vip, "--port", "80", "--path", BURN,
                "--interval", f"{BURN_INTERVAL_S:g}", "--duration", f"{HPA_BUDGET_S + 30:g}",
                "--timeout", "5", "--stop-file", stop]  # fmt: skip
        samples_seen: list[tuple[float, float]] = []  # (t, spec replicas)
        with ThreadPoolExecutor(1) as pool:
            t_load = time.time()
            load = pool.submit(client.run, argv, HPA_BUDGET_S + 90)
            try:

                def scaled() -> bool:
                    _, avail = _replicas(objs)
                    samples_seen.append((time.time() - t_load, float(avail)))
                    return avail > 1

                svc.until("the autoscaler's scale-up, its replicas available", scaled,
                          HPA_BUDGET_S, 0.5)  # fmt: skip
                t_up = time.time() - t_load
                time.sleep(4.0)  # let the new replicas take their share of the load
            finally:
                client.node.run(["touch", stop])
                t_stop = time.time()
                out = load.result()
        data = echo._load(output(out))
        start = float(data["start"])
        answers = [(start + float(o), str(w), float(lat)) for o, w, lat in data["samples"]]
        new_serving = [t for t, w, _ in answers if w.startswith(f"{HPA_NAME}-") and w not in first]
        assert new_serving, f"no request was answered by a new replica (first: {sorted(first)})"
        record("hpa_scale_up_s", t_up, "s")
        record("hpa_new_replica_first_answer_s", min(new_serving) - t_load, "s")
        downs: list[tuple[float, int]] = []

        def down() -> bool:
            spec, _ = _replicas(objs)
            downs.append((time.time() - t_stop, spec))
            return spec == 1

        svc.until("the scale-down to minReplicas", down, SCALE_DOWN_WINDOW_S + 60, 0.5)
        t_down = time.time() - t_stop
        record("hpa_scale_down_after_load_s", t_down, "s")
        failed = [(round(t - t_load, 1), w) for t, w, _ in answers if not w.startswith(HPA_NAME)]
        lat = sorted(x for _, w, x in answers if w.startswith(HPA_NAME))
        record("hpa_load_failed_requests_count", len(failed), "count")
        if lat:
            record("hpa_load_latency_p99_s", lat[min(len(lat) - 1, int(0.99 * len(lat)))], "s")
        per_s = Counter(int(t - t_load) for t, w, _ in answers if w.startswith(HPA_NAME))
        record.timeline(
            "autoscaler",
            events=[(0.0, "load on"), (t_up, "new replicas available"),
                    (t_stop - t_load, "load off"), (t_stop - t_load + t_down, "back to 1")],
            samples=[(float(s), float(c)) for s, c in sorted(per_s.items()) if s >= 0],
            sample_name="answered_per_s", sample_unit="1/s",
        )  # fmt: skip
        # the window: no scale-down sooner than it (less one sync period of slack)
        assert t_down >= SCALE_DOWN_WINDOW_S - 1, (
            f"scaled down {t_down:.1f} s after the load stopped, inside the "
            f"{SCALE_DOWN_WINDOW_S} s stabilization window"
        )
    finally:
        for kind in ("HorizontalPodAutoscaler", "Service", "Deployment"):
            objs.remove(kind, NAMESPACE, HPA_NAME)
        svc.until(f"pods of {HPA_NAME} removed", lambda: not _hpa_pods(objs), 90)


def _hpa_pods(objs: svc.Objects) -> list[dict[str, Any]]:
    return [
        p
        for p in objs.client.list_objects(KINDS["Pod"], NAMESPACE)
        if p["metadata"].get("labels", {}).get("app") == HPA_APP["app"]
    ]
