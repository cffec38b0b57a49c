"""Workloads: a 10-replica rolling update under load, the HPA's reaction, a 100-replica scale-up.

``sudo .venv/bin/python bench/bench_workloads.py [--only rollout,hpa,scale] [--rounds 3]
[--nodes 3] [--replicas 10] [--rate 50] [--sync 15] [--scale 100]``

One throwaway lab (harness/testlab: real node agents, etcd, and the real
controller manager ``podlab-controllers`` with kube-controller-manager's
defaults except ``--sync``), a client pod on every node; objects are admitted
and written as ``podlab apply`` does. Each round uses fresh object names (an
autoscaler's memory, a ReplicaSet's history do not carry over). Issue 14's goals:

- ``rollout``: a Deployment of ``--replicas`` echo pods (tcpSocket readiness, a
  2 s preStop sleep, the 25 %/25 % default strategy) behind a ClusterIP,
  rolled to a new template while every client opens ``--rate`` new
  connections per second to it (open loop, 1 s connect budget). Printed: the
  rollout time (template applied → every replica updated and available, no
  old one left) and the failed requests. Goal: 0 failed.
- ``hpa``: a 1-replica Deployment (100m CPU requested) with an autoscaling/v2
  HPA (CPU 50 %, 1–4 replicas) gets a step of 10 requests/s of 20 ms of CPU
  (200 % of the request). Printed: load on → the autoscaler raises replicas,
  → a new replica available, → the first request a new replica answers
  ("new pods serving"). Goal: serving ≤ sync period + 5 s.
- ``scale``: a Deployment of 0 ``sleep infinity`` pods scaled to ``--scale``.
  Printed: scale applied → every pod Ready and reached (the goal's figure),
  → every pod Ready, → every pod reached from every node (a TCP connect from
  each node's namespace answered, a refusal counting: the path works;
  bench_pod_burst's prober), and the median pod's reach. Goal: ≤ 10 s.

Every round prints the load average beside its figures (a shared machine's
figures are indicative); the summary gives median, min and max over the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from bench_pod_burst import PROBER

from harness.api.client import ApiClient
from harness.api.objects import KINDS
from harness.api.validate import load_documents, validate_documents
from harness.conformance import services as svc
from harness.errors import UserError
from harness.kube import apps, autoscaling
from harness.probes import echo
from harness.testlab.agentlab import PROJECT, PYTHON, AgentLab
from harness.testlab.controllers import Controllers
from harness.testlab.wait import wait_for

NS = "default"
NETCHECK = (PYTHON, "-m", "harness.probes.netcheck")
ECHO = [PYTHON, "-m", "harness.workloads.echo", "--tcp", "8080", "--http", "8081"]
Obj = dict[str, Any]


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def apply(api: ApiClient, *docs: Obj) -> None:
    """Validate and admit as ``podlab apply`` does (quota, defaults, the apiserver's checks)."""
    objects, problems = validate_documents(load_documents(yaml.safe_dump_all(docs), "<bench>"))
    if problems:
        raise UserError(problems)
    api.apply(objects)


def deployment(name: str, replicas: int, revision: str = "1", **container: Any) -> Obj:
    c = {
        "name": "main",
        "command": ECHO,
        "ports": [{"name": "tcp", "containerPort": 8080}, {"name": "http", "containerPort": 8081}],
        "readinessProbe": {"tcpSocket": {"port": "tcp"}, "periodSeconds": 1},
        "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
        "resources": {"requests": {"cpu": "10m", "memory": "24Mi"}},
        **container,
    }
    return apps.deployment_manifest(name, NS, replicas, c, annotations={"bench/revision": revision})


def service(name: str, target: str) -> Obj:
    return svc.service(name, {"app": name}, [svc.port("p", 80, target)], NS)


def status(api: ApiClient, name: str) -> Obj:
    d = api.get(KINDS["Deployment"], NS, name)
    return {
        "spec": d["spec"],
        "generation": d["metadata"].get("generation", 0),
        **(d.get("status") or {}),
    }


def rolled_out(api: ApiClient, name: str) -> bool:
    st = status(api, name)
    want = int(st["spec"]["replicas"])
    counts = [int(st.get(k) or 0) for k in ("updatedReplicas", "availableReplicas", "replicas")]
    return int(st.get("observedGeneration") or 0) >= st["generation"] and counts == [want] * 3


def pods(api: ApiClient, app: str) -> list[Obj]:
    return [
        p
        for p in api.list_objects(KINDS["Pod"], NS)
        if p["metadata"].get("labels", {}).get("app") == app
    ]


def remove(api: ApiClient, app: str, *kinds: str) -> None:
    for kind in kinds:
        api.delete(KINDS[kind], NS, app)
    wait_for(f"pods of {app} gone", lambda: not pods(api, app), timeout=180)


def in_netns(netns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={netns}", "--", *argv]


class Bench:
    """The lab, its controller manager, and one client pod per node (netns paths)."""

    def __init__(self, nodes: int, sync_s: float) -> None:
        self.lab = AgentLab(nodes, "host-gw", capacity={"cpu": "16", "memory": "32Gi"})
        # the deployed leadership lease (15 s), not testlab's 3 s: on a machine at load 40 a
        # 3 s lease lapses, and without a supervisor here the controller manager stays down
        self.ctl = Controllers(self.lab, hpa_sync_period_s=sync_s, leader_ttl_s=15)
        self.api = ApiClient(self.lab.store, "t1")
        self.clients: list[str] = []
        try:
            for n in self.lab.nodes:
                self.lab.start_agent(n)
            for n in self.lab.nodes:
                self.lab.wait_node(n)
            self.ctl.start()
            for n in self.lab.nodes:
                self.lab.apply_pod(f"client-{n.name}", n, ["sleep", "infinity"])
            for n in self.lab.nodes:
                netns = self.lab.wait_running(f"client-{n.name}")["netns"]
                self.clients.append(n.pod_netns(netns))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.ctl.stop()
        self.lab.close()

    def vip(self, name: str) -> str:
        return str(self.api.get(KINDS["Service"], NS, name)["spec"]["clusterIP"])

    def reach(self, vip: str, app: str, path: str = "") -> None:
        """Every client gets an answer from ``app`` (its Service is programmed)."""

        def ok() -> bool:
            for netns in self.clients:
                kind = "hstream" if path else "stream"
                argv = [
                    *NETCHECK,
                    kind,
                    "--target",
                    vip,
                    "--port",
                    "80",
                    "--duration",
                    "0.5",
                    "--interval",
                    "0.1",
                    "--timeout",
                    "1",
                    *(["--path", path] if path else []),
                ]
                out = subprocess.run(
                    in_netns(netns, argv),
                    capture_output=True,
                    text=True,
                    timeout=30,
                    cwd=PROJECT,
                    check=False,
                ).stdout
                whos = [s[1] for s in echo._load(out)["samples"]]
                if not whos or not all(w.startswith(f"{app}-") for w in whos):
                    return False
            return True

        wait_for(f"{app} answering every client", ok, timeout=60)


def rollout_round(b: Bench, r: int, replicas: int, rate: float) -> dict[str, float]:
    name = f"roll{r}"
    apply(b.api, deployment(name, replicas), service(name, "tcp"))
    try:
        wait_for(f"{name} rolled out", lambda: rolled_out(b.api, name), timeout=180)
        vip = b.vip(name)
        b.reach(vip, name)
        stop = Path(f"/tmp/podlab-bench-wl-{os.getpid()}-{r}")
        stop.unlink(missing_ok=True)
        argv = echo.stream_command(
            vip, 80, 300, 1 / rate, timeout_s=1.0, stop_file=str(stop), runner=NETCHECK
        )
        procs = [
            subprocess.Popen(in_netns(n, argv), stdout=subprocess.PIPE, text=True, cwd=PROJECT)
            for n in b.clients
        ]
        try:
            time.sleep(2.0)
            started = time.time()
            apply(b.api, deployment(name, replicas, revision="2"))
            wait_for(
                f"{name} rolled out again", lambda: rolled_out(b.api, name), timeout=180, every=0.1
            )
            took = time.time() - started
            time.sleep(3.0)  # the last old pods' grace periods end; the streams see it
        finally:
            stop.touch()
            outs = [p.communicate(timeout=60)[0] for p in procs]
            stop.unlink(missing_ok=True)
        samples = [s for out in outs for s in echo.parse_stream(out).samples]
        failed = [w for _, w in samples if not w.startswith(f"{name}-")]
        return {"rollout_s": took, "requests": len(samples), "failed": len(failed)}
    finally:
        remove(b.api, name, "Service", "Deployment")


def hpa_round(b: Bench, r: int) -> dict[str, float]:
    name = f"hpa{r}"
    d = deployment(
        name, 1, resources={"requests": {"cpu": "100m", "memory": "24Mi"}, "limits": {"cpu": "1"}}
    )
    hpa = autoscaling.cpu_hpa_manifest(name, NS, 1, 4, 50)
    apply(b.api, d, service(name, "http"), hpa)
    try:
        wait_for(f"{name} available", lambda: rolled_out(b.api, name), timeout=120)
        vip = b.vip(name)
        b.reach(vip, name, "/")
        first = {p["metadata"]["name"] for p in pods(b.api, name)}
        stop = Path(f"/tmp/podlab-bench-hpa-{os.getpid()}-{r}")
        stop.unlink(missing_ok=True)
        argv = [
            *NETCHECK,
            "hstream",
            "--target",
            vip,
            "--port",
            "80",
            "--path",
            "/burn?ms=20",
            "--interval",
            "0.1",
            "--duration",
            "300",
            "--timeout",
            "5",
            "--stop-file",
            str(stop),
        ]
        proc = subprocess.Popen(
            in_netns(b.clients[0], argv), stdout=subprocess.PIPE, text=True, cwd=PROJECT
        )
        marks: dict[str, float] = {}
        try:

            def up() -> bool:
                st = status(b.api, name)
                if st["spec"]["replicas"] > 1:
                    marks.setdefault("decided_s", time.time())
                if int(st.get("availableReplicas") or 0) > 1:
                    marks.setdefault("available_s", time.time())
                return "available_s" in marks

            wait_for(f"{name} scaled up", up, timeout=180, every=0.2)
            time.sleep(5.0)  # the new replicas take their share; the stream sees it
        finally:
            stop.touch()
            out = proc.communicate(timeout=60)[0]
            stop.unlink(missing_ok=True)
        data = echo._load(out)
        start = float(data["start"])
        new = [
            start + float(o)
            for o, w, _ in data["samples"]
            if str(w).startswith(f"{name}-") and w not in first
        ]
        # from the first request of the step (the stream's own clock, not its start-up)
        marks["serving_s"] = min(new) if new else float("nan")
        return {k: v - start for k, v in marks.items()}
    finally:
        remove(b.api, name, "HorizontalPodAutoscaler", "Service", "Deployment")


class Probers:
    """One bench_pod_burst prober per node namespace: the first answer from each pod IP."""

    def __init__(self, b: Bench) -> None:
        self.reached: dict[str, dict[str, float]] = {n.name: {} for n in b.lab.nodes}
        self.procs: list[subprocess.Popen[str]] = []
        for n in b.lab.nodes:
            p = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{n.ns}", PYTHON, "-c", PROBER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(p)
            threading.Thread(target=self._read, args=(p, self.reached[n.name]), daemon=True).start()

    @staticmethod
    def _read(p: subprocess.Popen[str], into: dict[str, float]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            name, t = line.split()
            into[name] = float(t)

    def probe(self, name: str, ip: str) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(f"{name} {ip}\n")
            p.stdin.flush()

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(timeout=10)


def scale_round(b: Bench, r: int, replicas: int) -> dict[str, float]:
    name = f"fleet{r}"
    tmpl = deployment(name, 0)
    sleeper = {
        "name": "main",
        "command": ["sleep", "infinity"],
        "resources": {"requests": {"cpu": "5m", "memory": "4Mi"}},
    }
    tmpl["spec"]["template"]["spec"]["containers"] = [sleeper]
    # sleep ignores SIGTERM as its namespace's init: without this each pod would hold its
    # node for the default 30 s grace period when the round removes it
    tmpl["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    apply(b.api, tmpl)
    probers = Probers(b)
    try:
        wait_for(f"{name} observed", lambda: rolled_out(b.api, name), timeout=60)
        tmpl["spec"]["replicas"] = replicas
        t0 = time.time()
        apply(b.api, tmpl)
        ready: dict[str, float] = {}
        fed: set[str] = set()

        def done() -> bool:
            now = time.time()
            for p in pods(b.api, name):
                pname, st = p["metadata"]["name"], p.get("status") or {}
                if st.get("podIP") and pname not in fed:
                    probers.probe(pname, st["podIP"])
                    fed.add(pname)
                conds = {c.get("type"): c.get("status") for c in st.get("conditions", [])}
                if conds.get("Ready") == "True":
                    ready.setdefault(pname, now)
            reached = all(len(v) >= replicas for v in probers.reached.values())
            return len(ready) >= replicas and reached

        wait_for(f"{replicas} pods of {name} Ready and reached", done, timeout=300, every=0.2)
        last = [max(v[p] for v in probers.reached.values()) for p in ready]
        all_ready, all_reached = max(ready.values()) - t0, max(last) - t0
        return {
            "ready_and_reached_s": max(all_ready, all_reached),
            "all_ready_s": all_ready,
            "all_reached_s": all_reached,
            "reached_p50_s": statistics.median(last) - t0,
        }
    finally:
        probers.close()
        remove(b.api, name, "Deployment")


def summary(what: str, rows: list[dict[str, float]]) -> None:
    for key in rows[0]:
        vals = [row[key] for row in rows]
        print(
            f"  {what} {key}: median {statistics.median(vals):.2f}  min {min(vals):.2f}  "
            f"max {max(vals):.2f}  ({len(vals)} rounds)"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="rollout,hpa,scale")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=10)
    ap.add_argument("--rate", type=float, default=50.0, help="new connections/s per client")
    ap.add_argument("--sync", type=float, default=15.0, help="the HPA sync period, s")
    ap.add_argument("--scale", type=int, default=100)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_workloads: needs root (network namespaces); run it with sudo")
        return 2
    runs: dict[str, Callable[[Bench, int], dict[str, float]]] = {
        "rollout": lambda b, r: rollout_round(b, r, a.replicas, a.rate),
        "hpa": hpa_round,
        "scale": lambda b, r: scale_round(b, r, a.scale),
    }
    only = [w for w in a.only.split(",") if w]
    unknown = [w for w in only if w not in runs]
    if unknown:
        print(f"bench_workloads: --only {','.join(unknown)}: not one of {', '.join(runs)}")
        return 2
    print(
        f"bench_workloads: {a.nodes} nodes (host-gw), HPA sync {a.sync:g} s, load average {load()}",
        flush=True,
    )
    b = Bench(a.nodes, a.sync)
    try:
        for what in only:
            rows = []
            for r in range(1, a.rounds + 1):
                before = load()
                row = runs[what](b, r)
                rows.append(row)
                figures = "  ".join(f"{k} {v:.2f}" for k, v in row.items())
                print(f"{what} round {r}: {figures}  (load {before} → {load()})", flush=True)
            summary(what, rows)
            goal = {
                "rollout": "failed = 0",
                "hpa": f"serving_s <= {a.sync + 5:g} s",
                "scale": "ready_and_reached_s <= 10 s",
            }[what]
            print(f"  {what} goal (issue 14): {goal}", flush=True)
    finally:
        b.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
