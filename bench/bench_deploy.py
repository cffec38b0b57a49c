"""Benchmark: first deploy and a no-change re-deploy of `two-clusters`.

Prints figures; asserts nothing about time (targets on this machine: first deploy
≤ 60 s, re-deploy ≤ 20 s). Brings up a private copy of the topology
(lab ``t-dep-bench``, mgmt 172.31.219.0/24) and always takes it down again.

    .venv/bin/python bench/bench_deploy.py [--topology two-clusters] [--redeploys 2]

The wheelhouse build is timed separately (it happens once per source tree) and
is done before the first deploy so that figure is the Ansible run alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from harness.deploy.deploy import deploy, request_for, source_root, wheelhouse_cache
from harness.deploy.runner import DeployResult
from harness.deploy.wheel import ensure_wheelhouse
from harness.testlab.deploylab import lab_up

REPO = Path(__file__).resolve().parents[1]

LAB = "t-dep-bench"
SUBNET = "172.31.219.0/24"


def line(label: str, result: DeployResult) -> str:
    per_host = " ".join(f"{h}={r.changed}" for h, r in sorted(result.hosts.items()))
    return (
        f"{label:<12} {result.duration_s:7.1f} s  status={result.status} hosts={len(result.hosts)} "
        f"changed={result.changed} ({per_host})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", default="two-clusters")
    ap.add_argument("--redeploys", type=int, default=2)
    args = ap.parse_args()
    os.chdir(REPO)
    started = time.monotonic()
    wheelhouse = ensure_wheelhouse(source_root(), wheelhouse_cache())
    print(f"wheelhouse   {time.monotonic() - started:7.1f} s  {wheelhouse.digest}")
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} strategy="
          f"{os.environ.get('ANSIBLE_STRATEGY', 'linear')}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="podlab-bench-") as tmp:
        t0 = time.monotonic()
        with lab_up(args.topology, LAB, SUBNET, Path(tmp)) as inventory:
            print(f"{'lab up':<12} {time.monotonic() - t0:7.1f} s")
            req = request_for(LAB, str(inventory), {})
            first = deploy(req, wheelhouse=wheelhouse)
            print(line("first", first))
            for f in first.failures:
                print(f"  {f}")
            for i in range(args.redeploys):
                again = deploy(req, wheelhouse=wheelhouse)
                print(line(f"re-deploy {i + 1}", again))
    return 0 if first.ok else 1


if __name__ == "__main__":
    sys.exit(main())
