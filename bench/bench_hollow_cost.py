"""What hollow nodes cost: the runner's RSS and CPU per node, and etcd's, per size.

``.venv/bin/python bench/bench_hollow_cost.py [--sizes 10,100] [--window 60] [--lease-ttl 60]``

For each size a fresh local etcd (harness/testlab/etcd.py) and one runner
(``python -m harness.hollow``, the agents' default lease TTL 60 s: a 15 s
heartbeat) with that many nodes; once every node record exists, the runner's and
etcd's CPU time over ``--window`` seconds and their RSS at the end, from /proc.
Prints per-size totals and the marginal cost per node between the smallest and
each larger size (the Python interpreter's own ~30 MB is not a node's cost).
No real agent runs here: tests/agent/test_hollow_agents.py covers what agents do
with hollow peers. Figures depend on the machine's load: print /proc/loadavg with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def one(size: int, window: float, ttl: int) -> dict[str, float]:
    with LocalEtcd() as etcd, open(etcd.dir / "hollow.log", "wb") as log:
        store = etcd.store()
        argv = [sys.executable, "-m", "harness.hollow", "--cluster", "b1", "--etcd", etcd.url]
        argv += ["--nodes", str(size), "--underlay-ip", "10.0.0.1", "--lease-ttl", str(ttl)]
        argv += ["--node-prefix", "26"]  # 1,023 node subnets in 10.244.0.0/16
        proc = subprocess.Popen(argv, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=log)
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
            r0, e0 = cpu_s(proc.pid), cpu_s(etcd.proc.pid)
            time.sleep(window)
            r1, e1 = cpu_s(proc.pid), cpu_s(etcd.proc.pid)
            alive = len(store.get_prefix(nodes_prefix("b1"))[0])
            return {
                "nodes": size,
                "up_s": up_s,
                "runner_rss_mb": rss_mb(proc.pid),
                "runner_cores": (r1 - r0) / window,
                "etcd_rss_mb": rss_mb(etcd.proc.pid),
                "etcd_cores": (e1 - e0) / window,
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
    a = p.parse_args()
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


if __name__ == "__main__":
    sys.exit(main())
