"""Network programming latency: endpoint change in etcd → proxy rules in the kernel.

``sudo .venv/bin/python bench/bench_svc_programming.py [--changes 100] [--services 1000]``

A real etcd, the services controller (harness/agent/services.py) programming a
throwaway node namespace (harness/testlab/svclab.py) in each proxy mode. N services
exist (3 endpoints each); then, ``--changes`` times, one backend pod's status
flips Ready ↔ not Ready (it backs only the first service; the others have
three backends of their own that never change). Measured per change: from the
etcd write returning to the controller's programming pass returning
(nft/iptables-restore done), and
separately, every 10th change, to the first connection that no longer reaches
the removed backend (``first_miss_ms``, includes the probe's own start-up).
Prints p50/p90/p99 (scenario 13; clusterloader2 fails a cluster at p99 > 30 s;
issue 7's goal is p99 ≤ 1 s).

``--sizes 100,1000,5000 [--before DIR]``: the services loop at load-test scale
(issue 15; ``bench/svc_scale.py``): per size, the controller of
``podlab load``'s shape — N Services each selecting its own group of three
pods, spread over 1,000 nodes — and one change at a time, timed per pass from
the controller's own pass trace. With ``--before DIR`` (a checkout of another
commit, e.g. ``git archive main | tar -x -C DIR``) each size runs under both
trees, one after the other, and prints them side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

from harness.agent.services import ServicesConfig, ServicesController
from harness.store import Store
from harness.store.keys import cluster_prefix
from harness.testlab.etcd import LocalEtcd
from harness.testlab.svclab import SvcLab

C = "c1"
P = cluster_prefix(C)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def seed(store: Store, lab: SvcLab, n: int) -> None:
    ready = [{"type": "Ready", "status": "True"}]
    for b in ("b0", "b1", "b2"):
        c = {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}
        meta = {"name": b, "namespace": "default", "labels": {"app": "web"}}
        store.put_json(
            f"{P}pods/default/{b}",
            {"metadata": meta, "spec": {"nodeName": "n1", "containers": [c]}},
        )
        st = {"phase": "Running", "podIP": lab.pods[b].ip, "conditions": ready}
        store.put_json(f"{P}podstatus/default/{b}", st)
    for i in range(3):  # the other services' backends: pods that never change
        meta = {"name": f"bulk{i}", "namespace": "default", "labels": {"app": "bulk"}}
        store.put_json(f"{P}pods/default/bulk{i}", {"metadata": meta, "spec": {"nodeName": "n2"}})
        st = {"phase": "Running", "podIP": f"10.245.0.{i + 2}", "conditions": ready}
        store.put_json(f"{P}podstatus/default/bulk{i}", st)
    items = []
    for i in range(n):
        spec = {
            "clusterIP": f"10.96.{1 + i // 250}.{1 + i % 250}",
            "selector": {"app": "web" if i == 0 else "bulk"},
            "ports": [{"port": 80, "targetPort": 8080}],
        }
        items.append(
            (
                f"{P}services/default/s{i}",
                json.dumps({"metadata": {"name": f"s{i}", "namespace": "default"}, "spec": spec}),
            )
        )
    store.put_many(items)


def one_mode(etcd: LocalEtcd, mode: str, n: int, changes: int) -> dict[str, float]:
    lab = SvcLab.create(backends=3)
    store = Store([etcd.url])
    store.delete_prefix(P)
    cfg = ServicesConfig(
        C, "n1", lab.SERVICE_CIDR, lab.CLUSTER_CIDR, mode, dns=False, netns=lab.node
    )
    ctl = ServicesController(store, cfg)
    stop = threading.Event()
    try:
        seed(store, lab, n)
        ctl.start(stop)
        ctl.synced.wait(60)
        time.sleep(1.0)
        lat, miss = [], []
        for k in range(changes):
            ready = k % 2 == 1
            st = {
                "phase": "Running",
                "podIP": lab.pods["b2"].ip,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            }
            before = ctl.passes
            t = time.perf_counter()
            store.put_json(f"{P}podstatus/default/b2", st)
            while ctl.passes == before:
                time.sleep(0.0005)
            while ctl.dirty.is_set():  # a pass already running when we wrote: wait for ours
                time.sleep(0.0005)
            lat.append(time.perf_counter() - t)
            if not ready and k % 10 == 0:
                while "b2" in lab.connect(lab.pods["c0"].ns, "10.96.1.1", 80, 3):
                    pass
                miss.append(time.perf_counter() - t)
            time.sleep(0.05)
    finally:
        stop.set()
        ctl.close()
        lab.close()
    out = {f"programmed_p{q}_ms": pct(lat, q / 100) * 1000 for q in (50, 90, 99)}
    out["first_miss_median_ms"] = statistics.median(miss) * 1000 if miss else float("nan")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--modes", default="nftables,iptables")
    ap.add_argument("--sizes", help="e.g. 100,1000,5000: the services loop at scale instead")
    ap.add_argument("--before", help="with --sizes: a source tree to run side by side")
    ap.add_argument("--reps", type=int, default=5, help="with --sizes: changes of each kind")
    args = ap.parse_args()
    if args.sizes:
        from svc_scale import compare  # bench/svc_scale.py, beside this file

        return compare(args.sizes, args.before, args.reps, args.modes.split(",")[0])
    etcd = LocalEtcd()
    results = {}
    try:
        etcd.start()
        for mode in args.modes.split(","):
            r = one_mode(etcd, mode, args.services, args.changes)
            results[mode] = r
            print(
                f"{mode:9s} {args.services} services, {args.changes} endpoint changes: programmed "
                f"p50 {r['programmed_p50_ms']:.1f} ms, p90 {r['programmed_p90_ms']:.1f} ms, "
                f"p99 {r['programmed_p99_ms']:.1f} ms; first connection missing the removed "
                f"backend (median) {r['first_miss_median_ms']:.0f} ms",
                flush=True,
            )
    finally:
        etcd.close()
    print(json.dumps({"services": args.services, "changes": args.changes, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
