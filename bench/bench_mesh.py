"""Cluster mesh: failover, flip-back, stale remote backends, control-plane outage, programming.

``sudo .venv/bin/python bench/bench_mesh.py [--reps 20] [--only graceful,kill,cut,etcd,prog]
[--rate 50] [--etcd-outage 30] [--backends 1,1000] [--kill-baseline]
[--mirror process|thread|syncer|syncer,process]``

Two clusters of real agents (tests/agent/meshsvclab.py: t1 = n1 with the
client pod, n2 with 3 local backends; t2 = n11 with 3 remote backends; host-gw,
nftables, each cluster its own etcd, the fabric namespace routing between
them). The client opens ``--rate`` new TCP connections per second to t1's
ClusterIP of the global service ``web`` (``netcheck stream``, open loop, 1 s
timeout), every reply naming its backend. Side by side in one run:

- graceful: every local backend deleted gracefully (preStop 2 s) with
  ``affinity: local`` → failed requests (goal 0) and the first remote answer
  after the last local backend left (goal p99 ≤ 1 s);
- flip-back: the local backends come back (all created at once, Ready one every
  4 s); per second and per
  backend, its share of requests ÷ the share each local backend carries at
  full strength (1/3); the peak over the 10 s after the first one returns
  (goal ≤ 2) — for ``flip-back: spread`` (ours) and ``immediate`` (Cilium's),
  alternating reps;
- kill: every local backend SIGKILLed → failed requests and how long failures
  last (bound: readiness detection + 1 s); the agent learns of the exit from a
  pidfd (harness/agent/supervise.py). ``--kill-baseline`` alternates each rep
  with one where the backends' agent runs ``pod_exit_watch: false`` (a dead
  process noticed at its full pass, ``resync_s`` 2 s in these labs; 10 s
  deployed) and prints the per-round ratio of their detection times;
- cut: the link between the clusters cut for 6 s (affinity none) → how long
  t2's backends still get new connections (goal ≤ 5 s) and how soon they
  return after the link does (goal ≤ 5 s);
- etcd: t2's etcd down ``--etcd-outage`` s (affinity remote) → established
  cross-cluster flows broken (goal 0), new connections failed, mirrored keys
  removed (goal 0);
- prog: N hollow backends in t1 (addresses of a free /22 on n2's
  loopback, statuses written as a hollow node's agent would) turn Ready
  at t0; first success through t1's ClusterIP from t1 (in-cluster) and
  through t2's from t2 (cross-cluster), at N = 1 and 1,000 (goal
  cross-cluster p99 ≤ 1 s). Each rep prints its hops (seconds after t0,
  each step's end): statuses written to t1, the mirror's first batch in
  and out, the programming agent's watch got it, its pass started,
  computed, had the proxy programmed (the agents' ``pass trace`` lines),
  first success. ``--mirror`` picks what carries t1's keys into t2:
  ``syncer`` is the product's path — each cluster's real ``podlab-mesh``
  (harness/mesh) beside its export etcd (TLS, client certificates of a
  per-mesh CA made by the deploy's code, RBAC) on its control-plane node;
  t1's syncer exports to t1's export etcd, t2's reads it with ``etcdctl
  watch`` over TLS across the router and writes t2's mirror (hops
  ``export_in/out``, ``import_in/out`` from the syncers' ``trace`` lines).
  ``process`` and ``thread`` are the lab's stand-in ``Mirror`` (one plain
  watch + write, no export etcd) in a process of its own or in this one
  (hops ``mirror_in/out``). Several kinds (``syncer,process``) alternate rep
  by rep in the same lab, printing the per-round ratio of their
  cross-cluster figures; ``--agent-ab DIR`` adds a node per cluster
  whose agent runs from the source tree DIR, programming the same events
  side by side (``t1b``, ``t2b``).

Latencies print as p50/p99 over ``--reps``. Scenarios other than prog run
with the first ``--mirror`` kind (default ``process``). Print
``cat /proc/loadavg`` beside the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from harness.agent.mesh import globalsvc
from harness.agent.procs import pids_in_netns
from harness.api.client import ApiClient
from harness.api.objects import KINDS
from harness.conformance import meshsvc
from harness.probes import echo
from harness.store import StoreError
from harness.testlab.meshsvclab import MeshSvcLab, SyncerProcess
from harness.testlab.wait import wait_for

ECHO = ["python", "-m", "harness.workloads.echo", "--tcp", "8080"]
NETCHECK = (sys.executable, "-m", "harness.probes.netcheck")
VIP = {"t1": "10.96.0.40", "t2": "10.96.0.41"}
PROG_VIP = {"t1": "10.96.0.50", "t2": "10.96.0.51"}
LOCAL = [f"web-t1-{i}" for i in range(3)]
REMOTE = [f"web-t2-{i}" for i in range(3)]
G = {globalsvc.ANN_GLOBAL: "true"}
TRACE = re.compile(
    r"pass trace: events ([\d.]+) \((\d+)\) start ([\d.]+) derived ([\d.]+) "
    r"proxied ([\d.]+) done ([\d.]+)"
)
HOPS = (
    "written",
    *("mirror_in", "mirror_out"),  # the stand-in Mirror (process, thread)
    *("export_in", "export_out", "import_in", "import_out"),  # the real syncers
    *("events", "start", "derived", "proxied", "first"),
)
STAGGER_S = 4.0  # the local backends turn Ready one every STAGGER_S when they return


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")


def quantiles(values: list[float], unit: str = "s") -> str:
    return f"p50 {pct(values, 50):.3f} {unit}, p99 {pct(values, 99):.3f} {unit} (n={len(values)})"


class Mesh:
    """The lab, its pods and services, and the client's stream."""

    def __init__(self, rate: float, mirror: str = "process", ab_src: Path | None = None) -> None:
        """``ab_src``: one more node per cluster (n3 in t1, n12 in t2), each with a client
        pod, whose agent runs from that source tree — the same events programmed by
        both agents at once, side by side (prog's ``t1b``/``t2b`` figures)."""
        self.rate = rate
        extra = 1 if ab_src else 0
        self.lab = MeshSvcLab(2 + extra, 1 + extra, trace_services=True)  # pass traces: hops
        self.mirror = mirror
        t1, t2 = self.lab.nodes_of("t1"), self.lab.nodes_of("t2")
        self.n1, self.n2, self.n11 = t1[0], t1[1], t2[0]
        # prog's probing clients: key → (cluster, the node whose agent programs it)
        self.probes: dict[str, tuple[str, Any]] = {"t1": ("t1", self.n1), "t2": ("t2", self.n11)}
        if ab_src:
            self.probes |= {"t1b": ("t1", t1[2]), "t2b": ("t2", t2[1])}
            t1[2].src = t2[1].src = ab_src
        self.lab.start_mesh(mirror)
        self.api = ApiClient(self.lab.stores["t1"], "t1")
        for key, (c, node) in self.probes.items():
            self.lab.pod(c, f"client-{key}", node, ["sleep", "infinity"])
        for name in LOCAL:
            self.backend("t1", name)
        for name in REMOTE:
            self.backend("t2", name)
        self.clients = {k: self.netns_of(c, f"client-{k}", n) for k, (c, n) in self.probes.items()}
        self.wait_ready(LOCAL, REMOTE)
        self.service(affinity="local")

    def netns_of(self, cluster: str, pod: str, node: Any) -> str:
        st = wait_for(
            f"{pod} in {cluster}",
            lambda: (self.lab.status(cluster, pod) or {}).get("netns"),
            timeout=90,
        )
        return str(node.pod_netns(st))

    def backend(self, cluster: str, name: str, start_after_s: float = 0.0) -> None:
        """An echo backend; ``start_after_s``: its server listens (and it turns Ready)
        only that long after the pod starts — replicas coming up at different speeds."""
        node = self.n2 if cluster == "t1" else self.n11
        container = {
            "ports": [{"name": "echo", "containerPort": 8080}],
            "readinessProbe": {"tcpSocket": {"port": "echo"}, "periodSeconds": 1},
            "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
        }
        command = [*ECHO, "--name", name]
        if start_after_s:
            command = ["sh", "-c", f"sleep {start_after_s:g}; exec {' '.join(command)}"]
        self.lab.pod(cluster, name, node, command, labels={"app": "web"}, container=container)

    def wait_ready(self, local: list[str], remote: list[str] | None = None) -> None:
        for c, names in (("t1", local), ("t2", remote or [])):
            for name in names:
                wait_for(f"{name} Ready", lambda c=c, name=name: self.lab.ready(c, name), 120)

    def service(self, affinity: str = "none", flipback: str = "spread") -> None:
        ann = {**G, globalsvc.ANN_AFFINITY: affinity, globalsvc.ANN_FLIPBACK: flipback}
        for c, a in (("t1", ann), ("t2", G)):
            self.lab.put(
                c,
                "services/default/web",
                {
                    "metadata": {"name": "web", "namespace": "default", "annotations": a},
                    "spec": {
                        "clusterIP": VIP[c],
                        "selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": 8080}],
                    },
                },
            )

    def stream(
        self, seconds: float, cluster: str = "t1", vip: str | None = None
    ) -> subprocess.Popen[str]:
        argv = echo.stream_command(
            vip or VIP[cluster], 80, seconds, 1 / self.rate, timeout_s=1.0, runner=NETCHECK
        )
        return subprocess.Popen(
            ["nsenter", f"--net={self.clients[cluster]}", "--", *argv],
            stdout=subprocess.PIPE,
            text=True,
        )

    def answers(self) -> set[str]:
        out = self.stream(1.0).communicate(timeout=60)[0]
        return {w for _, w in echo.parse_stream(out).samples}

    def settle(self, want: set[str]) -> None:
        wait_for(f"the client reaches {sorted(want)}", lambda: self.answers() == want, 60)

    def close(self) -> None:
        self.lab.close()


def per_second(samples: tuple[tuple[float, str], ...], t0: float) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for t, w in samples:
        sec = int(t - t0) if t >= t0 else -1 - int(t0 - t)
        out.setdefault(sec, {})
        out[sec][w] = out[sec].get(w, 0) + 1
    return dict(sorted(out.items()))


def timeline(samples: tuple[tuple[float, str], ...], t0: float, title: str) -> str:
    """Per second: requests per backend and per cluster, failures marked (!)."""
    lines = [f"  {title} (s from the event: requests per backend | per cluster | failed)"]
    for sec, counts in per_second(samples, t0).items():
        by_c = {"t1": 0, "t2": 0}
        failed = 0
        for w, n in counts.items():
            if w.startswith(("web-t1", "fk-t1")):  # fk-*: the hard-kill scenario's backends
                by_c["t1"] += n
            elif w.startswith(("web-t2", "fk-t2")):
                by_c["t2"] += n
            else:
                failed += n
        backs = " ".join(
            f"{w[4:] if w.startswith('web-') else w}={n}"
            for w, n in sorted(counts.items())
            if w.startswith(("web-", "fk-"))
        )
        mark = f" !{failed} failed" if failed else ""
        lines.append(f"  {sec:+4d}  {backs:46s} | t1 {by_c['t1']:3d} t2 {by_c['t2']:3d}{mark}")
    return "\n".join(lines)


def graceful_flipback(m: Mesh, flipback: str) -> dict[str, Any]:
    """Delete every local backend gracefully, then recreate them all at once (as a
    Deployment does), Ready one every STAGGER_S."""
    m.service(affinity="local", flipback=flipback)
    m.settle(set(LOCAL))
    proc = m.stream(34.0)
    time.sleep(2.0)
    for name in LOCAL:
        m.api.delete(KINDS["Pod"], "default", name)
    t_left = time.time()
    for name in LOCAL:
        wait_for(f"{name} gone", lambda name=name: m.lab.status("t1", name) is None, 60)
    time.sleep(1.0)
    for i, name in enumerate(LOCAL):
        m.backend("t1", name, start_after_s=i * STAGGER_S)
    samples = echo.parse_stream(proc.communicate(timeout=90)[0]).samples
    m.wait_ready(LOCAL)
    failed = [s for s in samples if not s[1].startswith("web-")]
    first_remote = min((t for t, w in samples if t >= t_left and w in REMOTE), default=None)
    t_ret = min((t for t, w in samples if t > t_left + 2 and w in LOCAL), default=None)
    out: dict[str, Any] = {
        "requests": len(samples),
        "failed": len(failed),
        "first_remote_s": (first_remote - t_left) if first_remote else None,
    }
    if t_ret is not None:
        out.update(spread(samples, t_ret))
        out["timeline"] = timeline(samples, t_ret, f"flip-back ({flipback}), t=0 first local back")
    out["failover_timeline"] = timeline(samples, t_left, "graceful failover, t=0 last delete")
    return out


def spread(samples: tuple[tuple[float, str], ...], t_ret: float) -> dict[str, float]:
    """Peak per-second and whole-window share of one backend ÷ 1/3 (a local backend's
    share at full strength), over the 10 s after the first local backend returned
    (the suite's definition: harness/conformance/meshsvc.py)."""
    peak, whole = meshsvc.flipback_spread(samples, t_ret, len(LOCAL), {*LOCAL, *REMOTE})
    return {"peak_ratio": peak, "window_ratio": whole}


KILLED = [f"fk-t1-{i}" for i in range(3)]
KILL_VIP = "10.96.0.42"


def not_ready_times(m: Mesh, names: list[str], stop: threading.Event) -> dict[str, float]:
    """When each pod's status in etcd first says not Ready (polled every 20 ms)."""
    seen: dict[str, float] = {}

    def poll() -> None:
        while not stop.is_set() and len(seen) < len(names):
            for name in names:
                if name not in seen and not m.lab.ready("t1", name):
                    seen[name] = time.time()
            time.sleep(0.02)

    threading.Thread(target=poll, daemon=True).start()
    return seen


def hard_kill(m: Mesh) -> dict[str, Any]:
    """Three local backends (restartPolicy Never: they stay dead) of the global service
    ``fk`` (affinity local; t2's copy selects t2's web pods) SIGKILLed under the stream.
    Readiness detection = until the last one's status says not Ready in etcd."""
    container = {
        "ports": [{"name": "echo", "containerPort": 8080}],
        "readinessProbe": {"tcpSocket": {"port": "echo"}, "periodSeconds": 1},
    }
    for name in KILLED:
        m.lab.pod(
            "t1",
            name,
            m.n2,
            [*ECHO, "--name", name],
            labels={"app": "fk"},
            container=container,
            restartPolicy="Never",
        )
    m.wait_ready(KILLED)
    ann = {**G, globalsvc.ANN_AFFINITY: "local"}
    for c, sel, ip, a in (("t1", "fk", KILL_VIP, ann), ("t2", "web", "10.96.0.43", G)):
        m.lab.put(
            c,
            "services/default/fk",
            {
                "metadata": {"name": "fk", "namespace": "default", "annotations": a},
                "spec": {
                    "clusterIP": ip,
                    "selector": {"app": sel},
                    "ports": [{"port": 80, "targetPort": 8080}],
                },
            },
        )
    wait_for(
        "fk reaches its local backends",
        lambda: (
            {
                w
                for _, w in echo.parse_stream(
                    m.stream(1.0, vip=KILL_VIP).communicate(timeout=60)[0]
                ).samples
            }
            == set(KILLED)
        ),
        60,
    )
    proc = m.stream(16.0, vip=KILL_VIP)
    time.sleep(2.0)
    stop = threading.Event()
    t_kill = time.time()
    for name in KILLED:
        st = m.lab.status("t1", name) or {}
        for pid in pids_in_netns(str(m.n2.pod_netns(st["netns"]))):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    detected = not_ready_times(m, KILLED, stop)
    samples = echo.parse_stream(proc.communicate(timeout=60)[0]).samples
    stop.set()
    for name in KILLED:
        m.lab.delete("t1", f"pods/default/{name}")
    for name in KILLED:
        wait_for(f"{name} gone", lambda name=name: m.lab.status("t1", name) is None, 60)
    failed = [t for t, w in samples if not w.startswith(("web-", "fk-"))]
    detect = max(detected.values()) - t_kill if len(detected) == len(KILLED) else float("nan")
    window = (max(failed) - t_kill) if failed else 0.0
    return {
        "requests": len(samples),
        "failed": len(failed),
        "detection_s": detect,
        "failure_window_s": window,
        "beyond_detection_s": window - detect,
        # a stray failure long after (a slow remote answer on a loaded machine) would
        # stretch the window: count what failed later than detection + 1 s, too
        "failed_after_detection_1s": sum(1 for t in failed if t - t_kill > detect + 1.0),
        "timeline": timeline(samples, t_kill, "hard kill, t=0 SIGKILL"),
    }


def cut(m: Mesh) -> dict[str, Any]:
    m.service(affinity="none")
    m.settle(set(LOCAL) | set(REMOTE))
    proc = m.stream(16.0)
    time.sleep(2.0)
    m.lab.cut()
    t_cut = time.time()
    try:
        time.sleep(6.0)
    finally:
        m.lab.heal()
    t_heal = time.time()
    samples = echo.parse_stream(proc.communicate(timeout=60)[0]).samples
    for line in m.n1.log.read_text().splitlines()[-400:]:
        if "over the data path" in line or "reachable again" in line:
            print("   n1:", line[:160])
    dead = set(REMOTE) | {echo.CONNECT_TIMEOUT, "timeout", "unreachable"}
    stale = [t - t_cut for t, w in samples if t_cut <= t < t_heal and w in dead]
    back = [t - t_heal for t, w in samples if t >= t_heal and w in REMOTE]
    return {
        "stale_s": max(stale, default=0.0),
        "return_s": min(back) if back else None,
        "failed": sum(1 for _, w in samples if not w.startswith("web-")),
        "timeline": timeline(samples, t_cut, "network cut, t=0 cut (healed at +6 s)"),
    }


def etcd_outage(m: Mesh, outage_s: float) -> dict[str, Any]:
    m.service(affinity="remote")
    m.settle(set(REMOTE))
    c = m.clients["t1"]
    flows = [
        subprocess.Popen(
            [
                "nsenter",
                f"--net={c}",
                "--",
                *NETCHECK,
                "flow",
                "--target",
                VIP["t1"],
                "--port",
                "80",
                "--proto",
                "tcp",
                "--duration",
                str(outage_s + 6),
                "--interval",
                "0.2",
                "--timeout",
                "1",
                "--bucket",
                "1",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    news = m.stream(outage_s + 4)
    mirrored = len(m.lab.stores["t1"].get_prefix("/podlab/v1/t1/mesh/t2/")[0])
    time.sleep(2.0)
    m.lab.stop_etcd("t2")
    try:
        time.sleep(outage_s)
        kept = len(m.lab.stores["t1"].get_prefix("/podlab/v1/t1/mesh/t2/")[0])
    finally:
        m.lab.start_etcd("t2")
    results = [echo.parse_flow(f.communicate(timeout=120)[0]) for f in flows]
    samples = echo.parse_stream(news.communicate(timeout=120)[0]).samples
    m.lab.wait_records("t2", 60)
    return {
        "flows": len(results),
        "flows_broken": sum(1 for r in results if any(ok < s for _, s, ok in r.samples)),
        "requests": len(samples),
        "failed": sum(1 for _, w in samples if w not in REMOTE),
        "mirrored_keys_removed": mirrored - kept,
    }


class Hollow:
    """N backends of t1 on a hollow node: addresses on n2's loopback answered by
    one echo server in n2's namespace; pod objects and statuses written as a hollow
    node's agent would, its node record kept fresh."""

    def __init__(self, m: Mesh, n: int) -> None:
        self.m, self.n = m, n
        self.stop = threading.Event()
        self.log_pos: dict[str, int] = {}  # how far each agent's log was read (hops)
        lab = m.lab
        self.base = self._free_block()
        self.addrs = [f"10.244.{self.base + k // 250}.{k % 250 + 1}" for k in range(n)]
        with IPRoute(netns=m.n2.ns) as ipr:  # local addresses of n2 (on lo: no dummy here)
            lo = ipr.link_lookup(ifname="lo")[0]
            for a in self.addrs:
                ipr.addr("replace", index=lo, address=a, prefixlen=32)
        self.routed = [lab.fab, *(n.ns for c, n in m.probes.values() if c == "t1")]
        for ns in self.routed:
            with IPRoute(netns=ns) as ipr:
                ipr.route("replace", dst=f"10.244.{self.base}.0", dst_len=22, gateway=m.n2.ip)
        self.server = lab.ns_run_bg(
            m.n2,
            [sys.executable, "-m", "harness.workloads.echo", "--tcp", "8080", "--name", "hollow"],
        )
        self._record()  # before any pod: a pod on a node without a record is not served
        threading.Thread(target=self._beat, daemon=True).start()
        for i in range(n):
            meta = {"name": f"prog-{i}", "namespace": "default", "labels": {"app": "prog"}}
            spec = {"nodeName": "t1-hollow", "containers": [{"name": "c"}]}
            lab.stores["t1"].put_json(
                f"/podlab/v1/t1/pods/default/prog-{i}", {"metadata": meta, "spec": spec}
            )
        for c in ("t1", "t2"):
            lab.put(
                c,
                "services/default/prog",
                {
                    "metadata": {"name": "prog", "namespace": "default", "annotations": G},
                    "spec": {
                        "clusterIP": PROG_VIP[c],
                        "selector": {"app": "prog"},
                        "ports": [{"port": 80, "targetPort": 8080}],
                    },
                },
            )

    def _free_block(self) -> int:
        """A /22 of t1's pod CIDR that no node leased (the third octet it starts at)."""
        kvs, _ = self.m.lab.stores["t1"].get_prefix("/podlab/v1/t1/nodes/")
        used = {int(kv.json()["podCIDR"].split(".")[2]) for kv in kvs if kv.json().get("podCIDR")}
        return next(b for b in range(200, 252, 4) if not used & set(range(b, b + 4)))

    def _record(self) -> None:
        rec = {"name": "t1-hollow", "underlayIP": self.m.n2.ip, "heartbeat": time.time()}
        self.m.lab.stores["t1"].put_json("/podlab/v1/t1/nodes/t1-hollow", rec)

    def _beat(self) -> None:
        """Keep the hollow node's record fresh. A write that fails (etcd timing out on a
        saturated machine) must not end the thread: a hollow node without heartbeats is
        judged dead by t1's agents and every in-cluster probe after it fails."""
        while not self.stop.wait(2.0):
            try:
                self._record()
            except StoreError as exc:
                print(f"hollow node heartbeat not written ({exc}); retrying", flush=True)

    def statuses(self, ready: bool) -> None:
        cond = [{"type": "Ready", "status": "True" if ready else "False"}]
        items: list[tuple[str, str | bytes]] = [
            (
                f"/podlab/v1/t1/podstatus/default/prog-{i}",
                json.dumps({"phase": "Running", "podIP": a, "conditions": cond}),
            )
            for i, a in enumerate(self.addrs)
        ]
        self.m.lab.stores["t1"].put_many(items)

    def refused(self, key: str) -> bool:
        argv = [
            *NETCHECK,
            "probe",
            "--proto",
            "tcp",
            "--target",
            PROG_VIP[self.m.probes[key][0]],
            "--port",
            "80",
            "--count",
            "1",
            "--timeout",
            "1",
        ]
        out = subprocess.run(
            ["nsenter", f"--net={self.m.clients[key]}", "--", *argv],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return echo.parse_probe(out).outcomes().get("refused", 0) > 0

    def one(self) -> dict[str, Any]:
        """Not Ready (both ClusterIPs refuse), then Ready at t0: first success per client
        (t1, t2; with --agent-ab also t1b, t2b)."""
        self.statuses(False)
        for c in self.m.probes:
            wait_for(f"prog refused from {c}", lambda c=c: self.refused(c), 60, every=0.2)
        pollers = {}
        for c, (cluster, _node) in self.m.probes.items():
            argv = [
                *echo.reach_command([(PROG_VIP[cluster], 80)], deadline_s=30, runner=NETCHECK),
                "--interval",
                "0.01",
            ]
            pollers[c] = subprocess.Popen(
                ["nsenter", f"--net={self.m.clients[c]}", "--", *argv],
                stdout=subprocess.PIPE,
                text=True,
            )
        time.sleep(1.5)
        t0 = time.time()
        self.statuses(True)
        written = time.time()
        out: dict[str, Any] = {}
        for c, p in pollers.items():
            text = p.communicate(timeout=60)[0]
            started = echo.reach_started(text)
            if started is None or started > t0:  # began after the change: no figure
                return self.one()
            first = echo.parse_reach(text).get(f"{PROG_VIP[self.m.probes[c][0]]}:80")
            out[c] = (first - t0) if first else float("nan")
        out["hops"] = self.hops(t0, written, out)
        return out

    def hops(self, t0: float, written: float, first: dict[str, float]) -> dict[str, Any]:
        """Where the time of one rep went, per cluster, in seconds after t0 (each
        step's end): the statuses written to t1 (all N), the mirror's first batch
        arrived from t1 and written to t2 (cross-cluster only), the programming
        agent's services watch got it, its pass started, computed, had the proxy
        programmed, the client's first success (agents' ``pass trace`` lines)."""
        out: dict[str, Any] = {}
        carried = self.carried(t0)
        for c, (cluster, node) in self.m.probes.items():
            steps: dict[str, float] = {"written": written - t0}
            if cluster == "t2":
                steps |= carried
            p = next((p for p in self.passes(node) if p["events"] >= t0), None)
            if p is not None:
                for k in ("events", "start", "derived", "proxied"):
                    steps[k] = p[k] - t0
            steps["first"] = first[c]
            out[c] = steps
        return out

    def carried(self, t0: float) -> dict[str, float]:
        """The first batch after t0 through each hop between the clusters: the stand-in
        mirror's (in, out), or t1's syncer exporting and t2's syncer importing."""
        mirrors = {m.src: m for m in self.m.lab.mirrors}
        pairs: list[tuple[str, list[tuple[float, float, int]]]]
        if isinstance(mirrors["t1"], SyncerProcess) and isinstance(mirrors["t2"], SyncerProcess):
            pairs = [
                ("export", mirrors["t1"].traces("export")),
                ("import", mirrors["t2"].traces("import")),
            ]
        else:
            pairs = [("mirror", list(mirrors["t1"].trace))]
        out: dict[str, float] = {}
        for name, trace in pairs:
            batch = next(((a, d) for a, d, _n in trace if a >= t0), None)
            if batch is not None:
                out[f"{name}_in"], out[f"{name}_out"] = batch[0] - t0, batch[1] - t0
        return out

    def passes(self, node: Any) -> list[dict[str, float]]:
        """The ``pass trace`` lines the node's agent logged since the last call."""
        with open(node.log, "rb") as f:
            f.seek(self.log_pos.get(node.name, 0))
            text = f.read().decode(errors="replace")
            self.log_pos[node.name] = f.tell()
        out = []
        for m in TRACE.finditer(text):
            names = ("events", "n", "start", "derived", "proxied", "done")
            out.append(dict(zip(names, map(float, m.groups()), strict=True)))
        return out

    def close(self) -> None:
        self.stop.set()
        self.server.terminate()
        lab = self.m.lab
        lab.stores["t1"].delete_prefix("/podlab/v1/t1/pods/default/prog-")
        lab.stores["t1"].delete_prefix("/podlab/v1/t1/podstatus/default/prog-")
        lab.stores["t1"].delete("/podlab/v1/t1/nodes/t1-hollow")
        with IPRoute(netns=self.m.n2.ns) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            for a in self.addrs:
                ipr.addr("del", index=lo, address=a, prefixlen=32)
        for ns in self.routed:
            with IPRoute(netns=ns) as ipr:
                ipr.route("del", dst=f"10.244.{self.base}.0", dst_len=22)


def programming(
    m: Mesh, sizes: list[int], reps: int, mirrors: list[str]
) -> dict[int, dict[str, dict[str, list[float]]]]:
    """Per size and mirror kind (``--mirror``; several alternate rep by rep in the same
    lab, side by side): first success in-cluster and cross-cluster, with each rep's hops."""
    out: dict[int, dict[str, dict[str, list[float]]]] = {}
    for n in sizes:
        h = Hollow(m, n)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in mirrors}
        try:
            h.one()  # warm-up, not counted: the first pass also learns the hollow node
            for i in range(reps):
                for kind in mirrors:
                    if m.mirror != kind:  # its re-list is written before its status
                        m.lab.start_mirrors(kind)  # (waited for), one() waits for agents
                        m.mirror = kind
                    runs[kind].append(h.one())
                    hops = runs[kind][-1]["hops"]
                    print(f"prog {n} {i + 1}/{reps} mirror {kind}: " + "; ".join(
                        f"{c} " + " ".join(f"{k} {v:.3f}" for k, v in hops[c].items())
                        for c in m.probes
                    ), flush=True)  # fmt: skip
        finally:
            h.close()
        out[n] = {}
        for kind in mirrors:
            got = runs[kind]
            out[n][kind] = {c: [r[c] for r in got] for c in m.probes}
            print(
                f"prog {n:5d} backends, mirror {kind}: in-cluster (t1→t1) "
                f"{quantiles(out[n][kind]['t1'])}; cross-cluster (t1 Ready → t2) "
                f"{quantiles(out[n][kind]['t2'])}",
                flush=True,
            )
            if "t2b" in m.probes:
                r = out[n][kind]
                print(
                    f"  agents from --agent-ab: in-cluster (t1→t1b) {quantiles(r['t1b'])}; "
                    f"cross-cluster (t1 Ready → t2b) {quantiles(r['t2b'])}; per round, "
                    f"t1b ÷ t1 {quantiles(ratios(r['t1b'], r['t1']), 'x')}, "
                    f"t2b ÷ t2 {quantiles(ratios(r['t2b'], r['t2']), 'x')}",
                    flush=True,
                )
            for c in m.probes:
                print(f"  hops {c} (s after t0 at each step's end | the step itself):")
                for k in HOPS:
                    vals = [r["hops"][c][k] for r in got if k in r["hops"][c]]
                    steps = [step(r["hops"][c], k) for r in got if k in r["hops"][c]]
                    if vals:
                        print(f"    {k:10s} {quantiles(vals)} | {quantiles(steps)}", flush=True)
        if len(mirrors) == 2:
            a, b = mirrors
            ratio = ratios(out[n][a]["t2"], out[n][b]["t2"])
            print(f"prog {n:5d}: cross-cluster {a} ÷ {b}, per round {quantiles(ratio, 'x')}")
    return out


def step(hops: dict[str, float], k: str) -> float:
    """How long step ``k`` took: from the previous step's end (t0 for the first)."""
    before = [hops[h] for h in HOPS[: HOPS.index(k)] if h in hops and h != "written"]
    return hops[k] - (before[-1] if before else 0.0)


def ratios(a: list[float], b: list[float]) -> list[float]:
    """Per round ``a ÷ b`` (rounds where ``b`` has no figure are left out)."""
    return [x / y for x, y in zip(a, b, strict=True) if y and y == y and x == x]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", default="graceful,kill,cut,etcd,prog")
    ap.add_argument("--rate", type=float, default=50.0, help="new connections per second")
    ap.add_argument("--etcd-outage", type=float, default=30.0)
    ap.add_argument("--etcd-reps", type=int, default=3)
    ap.add_argument("--backends", default="1,1000")
    ap.add_argument(
        "--agent-ab",
        type=Path,
        help="prog: a source tree (e.g. git archive main | tar -x -C DIR); one more node "
        "per cluster runs its agent from it, side by side with this tree's (t1b, t2b)",
    )
    ap.add_argument(
        "--mirror",
        default="process",
        help="what carries each cluster's keys to the other: syncer (the real podlab-mesh "
        "syncers with their TLS export etcds), process (the stand-in Mirror in its own "
        "process) or thread (in this process); prog alternates several (syncer,process) "
        "rep by rep, the other scenarios use the first",
    )
    ap.add_argument(
        "--kill-baseline",
        action="store_true",
        help="kill: alternate reps with the backends' agent on pod_exit_watch: false",
    )
    args = ap.parse_args()
    only = set(args.only.split(","))
    print(f"load average at start: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    m = Mesh(args.rate, args.mirror.split(",")[0], args.agent_ab)
    results: dict[str, Any] = {"rate": args.rate, "reps": args.reps}
    try:
        if "graceful" in only:
            results["graceful"] = run_graceful(m, args.reps)
        if "kill" in only and args.kill_baseline:
            results["kill"], results["kill_off"] = kill_side_by_side(m, args.reps)
        elif "kill" in only:
            results["kill"] = run_reps("kill", args.reps, lambda: hard_kill(m))
        if "cut" in only:
            results["cut"] = run_reps("cut", args.reps, lambda: cut(m))
        if "etcd" in only:
            results["etcd"] = run_reps(
                "etcd", args.etcd_reps, lambda: etcd_outage(m, args.etcd_outage)
            )
        if "prog" in only:
            sizes = [int(x) for x in args.backends.split(",")]
            results["prog"] = programming(m, sizes, args.reps, args.mirror.split(","))
    finally:
        m.close()
    summary(results)
    print(f"load average at end: {Path('/proc/loadavg').read_text().strip()}")
    print(json.dumps(strip(results)))
    return 0


def run_reps(name: str, reps: int, fn: Any) -> list[dict[str, Any]]:
    out = []
    for i in range(reps):
        r = fn()
        out.append(r)
        shown = {
            k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "timeline"
        }
        print(f"{name} {i + 1}/{reps}: {shown}", flush=True)
        if i == 0 and "timeline" in r:
            print(r["timeline"], flush=True)
    return out


def kill_side_by_side(m: Mesh, reps: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hard kill with the backends' agent (n2) watching pod exits, and with it restarted
    on ``pod_exit_watch: false`` (a dead process noticed at its full pass, the behaviour
    before supervise.py), alternating rep by rep in the same lab so both see the same
    load. The agent restart leaves pods and rules in place; the killed pods are created
    after it, so they turn Ready only once the restarted agent runs."""
    on_runs: list[dict[str, Any]] = []
    off_runs: list[dict[str, Any]] = []
    try:
        for i in range(reps):
            for label, watch, runs in (("kill", True, on_runs), ("kill-off", False, off_runs)):
                m.lab.set_cfg(m.n2, pod_exit_watch=watch)
                m.lab.stop_agent(m.n2)
                m.lab.start_agent(m.n2)
                runs.extend(run_reps(f"{label} {i + 1}/{reps}", 1, lambda: hard_kill(m)))
    finally:
        m.lab.set_cfg(m.n2, pod_exit_watch=True)
        m.lab.stop_agent(m.n2)
        m.lab.start_agent(m.n2)
    return on_runs, off_runs


def run_graceful(m: Mesh, reps: int) -> dict[str, list[dict[str, Any]]]:
    """Alternate spread and immediate flip-back; both give graceful-failover samples."""
    out: dict[str, list[dict[str, Any]]] = {"spread": [], "immediate": []}
    for i in range(reps):
        how = "spread" if i % 2 == 0 else "immediate"
        r = graceful_flipback(m, how)
        out[how].append(r)
        shown = {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in r.items()
            if "timeline" not in k
        }
        print(f"graceful+flip-back {i + 1}/{reps} ({how}): {shown}", flush=True)
        if len(out[how]) == 1:
            print(r["failover_timeline"] if how == "spread" else "", flush=True)
            print(r.get("timeline", ""), flush=True)
    return out


def summary(r: dict[str, Any]) -> None:
    print("\n=== summary ===")
    if "graceful" in r:
        every = r["graceful"]["spread"] + r["graceful"]["immediate"]
        firsts = [x["first_remote_s"] for x in every if x["first_remote_s"] is not None]
        print(
            f"graceful delete of every local backend at {r['rate']:g} conn/s: failed "
            f"{sum(x['failed'] for x in every)} of {sum(x['requests'] for x in every)} "
            f"requests; first remote answer after the last local left: {quantiles(firsts)}"
        )
        for how in ("spread", "immediate"):
            peaks = [x["peak_ratio"] for x in r["graceful"][how] if "peak_ratio" in x]
            wins = [x["window_ratio"] for x in r["graceful"][how] if "window_ratio" in x]
            print(
                f"flip-back {how:9s}: peak per-second backend share ÷ full-strength share "
                f"{quantiles(peaks, 'x')}; 10 s window {quantiles(wins, 'x')}"
            )
    for key, what in (("kill", "exits watched"), ("kill_off", "pod_exit_watch: false")):
        if key not in r:
            continue
        k = r[key]
        print(
            f"hard kill ({what}): failed requests {quantiles([x['failed'] for x in k], 'req')}; "
            f"readiness detection (kill → last NotReady in etcd) "
            f"{quantiles([x['detection_s'] for x in k])}; failures lasted "
            f"{quantiles([x['failure_window_s'] for x in k])}, beyond detection "
            f"{quantiles([x['beyond_detection_s'] for x in k])} (goal ≤ 1 s); requests "
            f"failing later than detection + 1 s: "
            f"{sum(x['failed_after_detection_1s'] for x in k)} of {sum(x['failed'] for x in k)}"
        )
    if "kill_off" in r:
        ratios = [
            off["detection_s"] / on["detection_s"]
            for on, off in zip(r["kill"], r["kill_off"], strict=True)
            if on["detection_s"] > 0
        ]
        print(
            "hard kill: detection without ÷ with the exit watcher, per round "
            f"{quantiles(ratios, 'x')}"
        )
    if "cut" in r:
        c = r["cut"]
        print(
            f"network cut: new connections to t2 for {quantiles([x['stale_s'] for x in c])} "
            f"after the cut; back {quantiles([x['return_s'] for x in c if x['return_s']])} "
            "after the heal (goals 5 s, 5 s)"
        )
    if "etcd" in r:
        e = r["etcd"]
        print(
            f"t2 etcd down: flows broken {sum(x['flows_broken'] for x in e)} of "
            f"{sum(x['flows'] for x in e)}; new connections failed "
            f"{sum(x['failed'] for x in e)} of {sum(x['requests'] for x in e)}; mirrored keys "
            f"removed {sum(x['mirrored_keys_removed'] for x in e)}"
        )


def strip(value: Any) -> Any:
    """The results without the printed timelines (the JSON line stays one line)."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if "timeline" not in str(k)}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
