"""What hollow nodes cost: the runner's RSS and CPU per node, and etcd's, per size.

``.venv/bin/python bench/bench_hollow_cost.py [--sizes 10,100] [--window 60] [--lease-ttl 60]``
``.venv/bin/python bench/bench_hollow_cost.py --sizes 1000 --window 60 --ab-src DIR --rounds 2``

For each size a fresh local etcd (harness/testlab/etcd.py) and one runner
(``python -m harness.hollow``, the agents' default lease TTL 60 s: a 15 s
heartbeat) with that many nodes; once every node record exists, the runner's and
etcd's CPU time over ``--window`` seconds and their RSS at the end, from /proc.
Prints per-size totals and the marginal cost per node between the smallest and
each larger size (the Python interpreter's own ~30 MB is not a node's cost).
Per run also: etcd's gRPC requests per second in the window (its ``/metrics``,
``grpc_server_started_total``: the heartbeat's cost in calls) and the oldest
heartbeat seen in etcd, sampled every 2 s (the hold's "dead node" reading).

``--ab-src DIR`` runs another version of the runner (a source tree, e.g. ``git
worktree add /tmp/old <commit>``) side by side, ABBA per round (``--rounds``),
and prints each figure's ratio this ÷ other per round and their median.
No real agent runs here: tests/agent/test_hollow_agents.py covers what agents do
with hollow peers. Figures depend on the machine's load: print /proc/loadavg with them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from harness.kube.scheduling import heartbeat_age_s
from harness.store import Store
from harness.store.keys import nodes_prefix
from harness.testlab.etcd import LocalEtcd
from harness.testlab.wait import wait_for

TICK = os.sysconf("SC_CLK_TCK")
PROJECT = Path(__file__).resolve().parents[1]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise SystemExit(f"the runner exited with {proc.returncode} (see its log)")
    return False


def grpc_requests(url: str) -> float:
    """etcd's count of gRPC requests started (every gateway call is one)."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(
        float(m) for m in re.findall(r"^grpc_server_started_total\{[^}]*\} (\S+)", text, re.M)
    )


def oldest_beat(store: Store, now: float) -> float:
    """The oldest heartbeat among the node records, in seconds (the hold's reading)."""
    kvs = store.get_prefix(nodes_prefix("b1"))[0]
    ages = [heartbeat_age_s(kv.json().get("heartbeat"), now) for kv in kvs]
    return max((a for a in ages if a is not None), default=0.0)


def one(size: int, window: float, ttl: int, src: Path = PROJECT) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    with LocalEtcd() as etcd, open(etcd.dir / "hollow.log", "wb") as log:
        store = etcd.store()
        argv = [sys.executable, "-m", "harness.hollow", "--cluster", "b1", "--etcd", etcd.url]
        argv += ["--nodes", str(size), "--underlay-ip", "10.0.0.1", "--lease-ttl", str(ttl)]
        argv += ["--node-prefix", "26"]  # 1,023 node subnets in 10.244.0.0/16
        proc = subprocess.Popen(argv, cwd=src, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            t0 = time.monotonic()
            wait_for(
                f"{size} hollow nodes",
                lambda: _exited(proc) or len(store.get_prefix(nodes_prefix("b1"))[0]) == size,
                timeout=120 + size / 5,
                every=0.5,
            )
            up_s = time.monotonic() - t0
            assert etcd.proc is not None
            r0, e0, g0 = cpu_s(proc.pid), cpu_s(etcd.proc.pid), grpc_requests(etcd.url)
            end, oldest = time.monotonic() + window, 0.0
            while time.monotonic() < end:
                time.sleep(min(2.0, max(0.0, end - time.monotonic())))
                oldest = max(oldest, oldest_beat(store, time.time()))
            r1, e1, g1 = cpu_s(proc.pid), cpu_s(etcd.proc.pid), grpc_requests(etcd.url)
            alive = len(store.get_prefix(nodes_prefix("b1"))[0])
            return {
                "nodes": size,
                "up_s": up_s,
                "runner_rss_mb": rss_mb(proc.pid),
                "runner_cores": (r1 - r0) / window,
                "etcd_rss_mb": rss_mb(etcd.proc.pid),
                "etcd_cores": (e1 - e0) / window,
                "etcd_requests_per_s": (g1 - g0) / window,
                "oldest_heartbeat_s": oldest,
                "nodes_alive_after": alive,
            }
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="10,100")
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--lease-ttl", type=int, default=60)
    p.add_argument("--ab-src", type=Path, help="another version's source tree, side by side")
    p.add_argument("--rounds", type=int, default=2, help="ABBA rounds with --ab-src")
    a = p.parse_args()
    print(f"loadavg: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    if a.ab_src is not None:
        return ab(a)
    base: dict[str, float] = {}
    for size in a.sizes.split(","):
        r = one(int(size), a.window, a.lease_ttl)
        base = base or r
        print(json.dumps({k: round(v, 4) for k, v in r.items()}), flush=True)
        dn = r["nodes"] - base["nodes"]
        if dn > 0:
            mb = (r["runner_rss_mb"] - base["runner_rss_mb"]) / dn
            cores = (r["runner_cores"] - base["runner_cores"]) / dn
            print(
                f"  marginal per hollow node ({base['nodes']:g}→{r['nodes']:g}): "
                f"{mb * 1024:.0f} KiB RSS, {cores * 1000:.3f} millicores",
                flush=True,
            )
    print(f"loadavg: {Path('/proc/loadavg').read_text().strip()}")
    return 0


def ab(a: argparse.Namespace) -> int:
    """This tree against ``--ab-src``, ABBA per round, per size: ratios this ÷ other."""
    keys = ("runner_cores", "etcd_cores", "etcd_requests_per_s", "oldest_heartbeat_s")
    for size in (int(s) for s in a.sizes.split(",")):
        ratios: dict[str, list[float]] = {k: [] for k in keys}
        for rnd in range(a.rounds):
            order = [PROJECT, a.ab_src] if rnd % 2 == 0 else [a.ab_src, PROJECT]
            got = {src: one(size, a.window, a.lease_ttl, src) for src in order}
            for src in order:
                tag = "this " if src == PROJECT else "other"
                print(
                    f"round {rnd} {tag}: "
                    + json.dumps({k: round(v, 4) for k, v in got[src].items()}),
                    flush=True,
                )
            for k in keys:
                other = got[a.ab_src][k]
                ratios[k].append(got[PROJECT][k] / other if other else float("nan"))
        for k in keys:
            vals = ", ".join(f"{r:.3f}" for r in ratios[k])
            print(
                f"{size} nodes: {k} this/other median {statistics.median(ratios[k]):.3f} ({vals})"
            )
        print(f"loadavg: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
