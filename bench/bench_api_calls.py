"""Where a mutating API call's time goes, and what rate the API path reaches.

``.venv/bin/python bench/bench_api_calls.py [--etcd URL | --disk DIR] [--pods 300]
[--workers 4,16] [--rounds 2]``

Creates ``--pods`` pods through podlab's API code (``ApiClient.apply``, the path
``podlab load`` and ``podlab apply`` take) as fast as ``W`` calls in flight allow,
then deletes them gracefully, for each ``--workers`` value and two variants side by
side, ABBA per round: the read-ahead (one round trip for everything a small apply
reads, then the guarded write) and the per-key reads it replaced (four reads, then
the write). Per variant: creates per second (the ceiling of the API path at W in
flight), the create's latency p50/p99 split into its etcd round trips and the rest
(the client's Python: validation, admission, JSON, waiting for the interpreter), the
deletes' likewise, the bench process's CPU per create, and etcd's own WAL fsync and
backend commit quantiles and CPU over the variant's window (its /metrics). Prints
the ratio read-ahead ÷ per-key of each figure per round and the load average.

Against a local etcd by default (tmpfs, as tests use it; ``--disk DIR`` puts its data on
a disk directory, e.g. ``/var/tmp``, where fsync costs what a lab's etcd pays) or a
lab's (``--etcd URL [--lab LAB]``: its namespace ``podlab-bench`` and a node
record ``bench-w1`` that no agent runs are removed at the end). The run-queue
wait (harness/load/cost.py) of etcd and of the bench process says whether the
CPU was there to be had.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

from harness.api.client import ApiClient
from harness.load import cost, etcdmetrics, sli
from harness.load.run import LoadConfig, LoadRun, PodPlan
from harness.store import Store
from harness.testlab.etcd import LocalEtcd

NODE = "bench-w1"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def one(store: Store, pods: int, workers: int, read_ahead: bool, tag: str,
        etcd_pid: int | None) -> dict[str, float]:  # fmt: skip
    """Create ``pods`` pods at ``workers`` in flight, then delete them; the figures."""
    client = ApiClient(store, "c1")
    client.read_ahead = read_ahead
    cfg = LoadConfig(namespace="podlab-bench", rate=10_000.0, workers=workers)
    run = LoadRun(client, cfg, f"bench-{tag}")
    plan = [PodPlan(f"{tag}-{i:05d}", NODE, 0, False) for i in range(pods)]
    m0 = etcdmetrics.scrape(store.session, store.url)
    e0 = cpu_s(etcd_pid) if etcd_pid else 0.0
    q0 = cost.runqueue_s(etcd_pid) if etcd_pid else 0.0
    s0 = cost.runqueue_s(os.getpid())
    c0, t0 = time.process_time(), time.monotonic()
    try:
        run._paced("create", [partial(run._create, p) for p in plan])
        created_s = time.monotonic() - t0
        c1 = time.process_time()
        run._paced("delete", [partial(run._delete, p.name) for p in plan])
    finally:
        run.cleanup()  # grace 0: whatever the graceful deletes left
    m1 = etcdmetrics.scrape(store.session, store.url)
    e1 = cpu_s(etcd_pid) if etcd_pid else 0.0
    q1 = cost.runqueue_s(etcd_pid) if etcd_pid else 0.0
    s1 = cost.runqueue_s(os.getpid())
    wall = time.monotonic() - t0
    creates, deletes = run.samples.calls["create"], run.samples.calls["delete"]
    out = {
        "creates_per_s": pods / created_s,
        "create_p50_s": sli.quantiles([c[0] for c in creates])[50],
        "create_p99_s": sli.quantiles([c[0] for c in creates])[99],
        "create_round_trips": statistics.median(c[1] for c in creates),
        "create_etcd_share": sum(c[2] for c in creates) / sum(c[0] for c in creates),
        "create_client_p50_s": sli.quantiles([c[0] - c[2] for c in creates])[50],
        "delete_p99_s": sli.quantiles([c[0] for c in deletes])[99],
        "client_cpu_ms_per_create": (c1 - c0) / pods * 1000,
        "etcd_cpu_cores": (e1 - e0) / wall if etcd_pid else float("nan"),
        "etcd_cpu_waited_cores": (q1 - q0) / wall if etcd_pid else float("nan"),
        "bench_cpu_waited_cores": (s1 - s0) / wall,
    }
    for h, short in zip(etcdmetrics.HISTOGRAMS, ("fsync", "commit"), strict=True):
        if m0 and m1:
            le, grown = sli.diff_histograms({"e": m0[h]}, {"e": m1[h]})
            if grown and grown[-1] > 0:
                out[f"etcd_{short}_p99_s"] = sli.histogram_quantile(99, le, grown)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--etcd", help="a lab's etcd (default: a local one)")
    ap.add_argument("--disk", help="the local etcd's data under this disk directory")
    ap.add_argument("--lab", help="with --etcd: the netns lab whose --node runs etcd "
                    "(its CPU and run-queue wait are read from /proc)")  # fmt: skip
    ap.add_argument("--node", default="c1-cp")
    ap.add_argument("--pods", type=int, default=300)
    ap.add_argument("--workers", default="4,16")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
    local = None if args.etcd else LocalEtcd(base=args.disk or "/dev/shm")
    if local:
        local.start()
    store = Store([args.etcd] if args.etcd else [local.url], timeout=30.0)  # type: ignore[union-attr]
    pid = local.proc.pid if local and local.proc else None
    if args.lab:
        from harness.load.cli import netns_paths

        pid = cost.processes(netns_paths(args.lab, [args.node])).get((args.node, "etcd"))
    store.put(f"/podlab/v1/c1/nodes/{NODE}", json.dumps({"name": NODE, "hollow": True}))
    results: dict[tuple[int, bool], list[dict[str, float]]] = {}
    try:
        for w in [int(x) for x in args.workers.split(",")]:
            for r in range(args.rounds):
                order = (True, False) if r % 2 == 0 else (False, True)  # ABBA
                for ra in order:
                    tag = f"w{w}r{r}{'a' if ra else 'k'}"
                    got = one(store, args.pods, w, ra, tag, pid)
                    results.setdefault((w, ra), []).append(got)
                    name = "read-ahead" if ra else "per-key   "
                    print(f"workers {w:2} round {r} {name}: " + ", ".join(
                        f"{k} {v:.4g}" for k, v in got.items()), flush=True)  # fmt: skip
            for k in results[(w, True)][0]:
                ratios = [a[k] / b[k] for a, b in
                          zip(results[(w, True)], results[(w, False)], strict=True)
                          if b.get(k) and k in a]  # fmt: skip
                if ratios:
                    print(f"workers {w:2} {k}: read-ahead ÷ per-key "
                          f"{', '.join(f'{x:.3f}' for x in ratios)}")  # fmt: skip
    finally:
        store.delete(f"/podlab/v1/c1/nodes/{NODE}")
        if local:
            local.close()
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
