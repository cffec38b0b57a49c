"""The services loop at load-test scale (issue 15): ``bench_svc_programming.py --sizes``.

One size in one process (``--one N``, run by ``compare`` under each source tree):
a real etcd (tmpfs), a throwaway node namespace (``SvcLab``), the services
controller as the agent runs it on a control-plane node (DNS on, the MCS
writer on, pass trace on; liveness grace and resync long so neither fires by
itself). Seeded as ``podlab load --group-size 3 --services N`` leaves a
cluster: N Services in ``podlab-load``, each selecting its own group of three
Ready pods, the pods spread over 1,000 nodes (records under ``nodes/``). Then,
``--reps`` times each, one change at a time, each timed from before its etcd
write to the end of the pass that applied it (that pass's trace line: it also
gives the pass's derive and proxy parts and how many names it recomputed):

- ``svc_add``: a new Service (selecting an existing group);
- ``ep_flip``: one pod's status Ready → not Ready;
- ``node_dead`` / ``node_back``: a node's record deleted, then written again
  (its pods leave, then rejoin, the endpoints of the Services selecting them).

Last, with the worker stopped, one periodic full sync pass (``resync_s``) is
timed in the bench's own thread: what the worker runs every minute.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

NODES = 1000
NS = "podlab-load"
TRACE = re.compile(
    r"pass trace: events ([\d.]+) \((\d+)\) start ([\d.]+) derived ([\d.]+) "
    r"proxied ([\d.]+) done ([\d.]+) names (\d+) full (\d)"
)
KINDS = ("svc_add", "ep_flip", "node_dead", "node_back")


class Traces(logging.Handler):
    """Keeps the controller's pass trace lines, parsed."""

    def __init__(self) -> None:
        super().__init__()
        self.passes: list[dict[str, float]] = []
        self.cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        m = TRACE.search(record.getMessage())
        if m:
            keys = ("events", "n", "start", "derived", "proxied", "done", "names", "full")
            with self.cond:
                self.passes.append(dict(zip(keys, map(float, m.groups()), strict=True)))
                self.cond.notify_all()

    def after(self, wall: float, names: int = 0, timeout: float = 600.0) -> dict[str, float]:
        """The first pass whose events arrived after ``wall`` (the bench is the only
        writer) and that recomputed at least ``names`` names."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for p in self.passes:
                    if p["events"] >= wall and p["names"] >= names:
                        return p
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no pass applied the change written at {wall:.3f}")
                self.cond.wait(left)


def seed(n: int) -> list[tuple[str, str]]:
    from harness.store.keys import cluster_prefix

    p = cluster_prefix("c1")
    items = [(f"{p}nodes/n{k}", json.dumps({"name": f"n{k}"})) for k in range(NODES)]
    ready = [{"type": "Ready", "status": "True"}]
    for i in range(n):
        spec = {"clusterIP": f"10.96.{1 + i // 250}.{1 + i % 250}", "selector": {"group": f"g{i}"},
                "ports": [{"port": 80, "targetPort": 8080}]}  # fmt: skip
        svc = {"metadata": {"name": f"s{i}", "namespace": NS}, "spec": spec}
        items.append((f"{p}services/{NS}/s{i}", json.dumps(svc)))
        for j in range(3):
            k = 3 * i + j
            meta = {"name": f"p{k}", "namespace": NS, "labels": {"group": f"g{i}"}}
            spec = {"nodeName": f"n{k % NODES}", "containers": [{"name": "c"}]}
            items.append((f"{p}pods/{NS}/p{k}", json.dumps({"metadata": meta, "spec": spec})))
            st = {"phase": "Running", "podIP": f"10.244.{k // 250}.{2 + k % 250}",
                  "conditions": ready}  # fmt: skip
            items.append((f"{p}podstatus/{NS}/p{k}", json.dumps(st)))
    return items


def one(n: int, reps: int, mode: str) -> dict[str, object]:
    from harness.agent.services import ServicesConfig, ServicesController
    from harness.store import Store
    from harness.store.keys import cluster_prefix
    from harness.testlab.etcd import LocalEtcd
    from harness.testlab.svclab import SvcLab

    p = cluster_prefix("c1")
    traces = Traces()
    logging.getLogger("podlab.services").addHandler(traces)
    logging.getLogger("podlab.services").setLevel(logging.INFO)
    etcd, lab, stop = LocalEtcd(), SvcLab.create(backends=0, clients=0), threading.Event()
    ctl = None
    out: dict[str, object] = {"services": n}
    try:
        etcd.start()
        store = Store([etcd.url])
        store.put_many(seed(n))
        cfg = ServicesConfig("c1", "n0", lab.SERVICE_CIDR, lab.CLUSTER_CIDR, mode, dns=True,
                             netns=lab.node, node_grace_s=3600.0, resync_s=3600.0,
                             mcs_writer=True, trace=True)  # fmt: skip
        ctl = ServicesController(store, cfg)
        t0 = time.time()
        ctl.start(stop)
        first = traces.after(0.0, names=n)  # the listing's (a pass may run before it)
        out["first_pass_s"] = first["done"] - first["start"]
        out["start_to_synced_s"] = first["done"] - t0
        time.sleep(1.0)
        got: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
        for r in range(reps):
            svc = {"metadata": {"name": f"x{r}", "namespace": NS},
                   "spec": {"clusterIP": f"10.96.200.{1 + r}", "selector": {"group": f"g{r}"},
                            "ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip
            k = 3 * (r + 1)
            st = {"phase": "Running", "podIP": f"10.244.{k // 250}.{2 + k % 250}",
                  "conditions": [{"type": "Ready", "status": "False"}]}  # fmt: skip
            node = f"n{(k + 1) % NODES}"
            writes = [
                ("svc_add", lambda svc=svc, r=r: store.put_json(f"{p}services/{NS}/x{r}", svc)),
                ("ep_flip", lambda st=st, k=k: store.put_json(f"{p}podstatus/{NS}/p{k}", st)),
                ("node_dead", lambda node=node: store.delete(f"{p}nodes/{node}")),
                ("node_back", lambda node=node: store.put_json(f"{p}nodes/{node}", {"name": node})),
            ]
            for kind, write in writes:
                wall = time.time()
                write()
                t = traces.after(wall)
                got[kind].append(t | {"latency": t["done"] - wall})
                time.sleep(0.2)
        for kind, rows in got.items():
            lat = sorted(x["latency"] for x in rows)
            out[kind] = {
                "latency_median_s": statistics.median(lat),
                "latency_max_s": lat[-1],
                "pass_median_s": statistics.median(x["done"] - x["start"] for x in rows),
                "derive_median_s": statistics.median(x["derived"] - x["start"] for x in rows),
                "proxy_median_s": statistics.median(x["proxied"] - x["derived"] for x in rows),
                "names_median": statistics.median(x["names"] for x in rows),
            }
        stop.set()
        for th in ctl._threads:
            if th.name == "services":  # the worker: no pass of its own beside ours
                th.join(timeout=600)
        kw = {"recompute": False}  # this branch's periodic sync; before it, always a recompute
        if "recompute" not in inspect.signature(ctl.program).parameters:
            kw = {}
        t = time.perf_counter()
        ctl.program(full=True, **kw)  # what the worker does every resync_s
        out["periodic_full_pass_s"] = time.perf_counter() - t
        out["periodic_recomputes"] = not kw
    finally:
        stop.set()
        if ctl is not None:
            ctl.close()
        lab.close()
        etcd.close()
    return out


def compare(sizes: str, before: str | None, reps: int, mode: str) -> int:
    """Run each size under each tree (a child process each), print them side by side."""
    here = Path(__file__).resolve().parent
    trees = [("after", str(here.parent))] + ([("before", before)] if before else [])
    print(f"uptime: {os.popen('uptime').read().strip()}; mode {mode}", flush=True)
    rows = []
    for k, n in enumerate(int(s) for s in sizes.split(",")):
        order = trees if k % 2 == 0 else trees[::-1]  # alternate which runs first
        for label, tree in order:
            argv = [sys.executable, str(here / "svc_scale.py"), "--one", str(n), "--reps",
                    str(reps), "--mode", mode]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": tree}
            t = time.monotonic()
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{label} {n}: failed\n{done.stderr[-3000:]}", flush=True)
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            r["tree"], r["wall_s"] = label, time.monotonic() - t
            rows.append(r)
            print_row(r)
            print(f"  uptime: {os.popen('uptime').read().strip()}", flush=True)
    print(json.dumps(rows))
    return 0


def print_row(r: dict) -> None:
    print(
        f"{r['tree']:6s} {r['services']:5d} services: first (full) pass {r['first_pass_s']:.2f} s; "
        f"periodic full sync pass {r['periodic_full_pass_s']:.2f} s "
        f"({'recomputes' if r['periodic_recomputes'] else 'no recompute'}); "
        f"child wall {r['wall_s']:.0f} s",
        flush=True,
    )
    for kind in KINDS:
        x = r[kind]
        print(
            f"    {kind:9s} programmed median {x['latency_median_s'] * 1000:8.1f} ms "
            f"(max {x['latency_max_s'] * 1000:8.1f}); pass {x['pass_median_s'] * 1000:8.1f} ms "
            f"= derive {x['derive_median_s'] * 1000:8.1f} + proxy {x['proxy_median_s'] * 1000:7.1f}"
            f" + rest; names recomputed {x['names_median']:.0f}",
            flush=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", type=int, required=True, help="services (one size, this tree)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mode", default="nftables")
    args = ap.parse_args()
    print(json.dumps(one(args.one, args.reps, args.mode)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
