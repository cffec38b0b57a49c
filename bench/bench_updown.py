"""Benchmark: `up` and `down` of a 50-node netns lab; prints figures, asserts nothing.

Usage (root):  .venv/bin/python bench/bench_updown.py [--topology FILE] [--runs N]
               .venv/bin/python bench/bench_updown.py --synthetic 50

The lab is renamed ``t-bench-<n>`` and built in a temporary lab home and working
directory, so the benchmark never collides with a lab someone else has up.
Targets (issue 2, 2 cores): up <= 5 s, down <= 3 s for 50 nodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.lab import netns, synth
from harness.lab.backend import UpRequest
from harness.plan.model import LabPlan

REPO = Path(__file__).resolve().parents[1]


def load(args: argparse.Namespace) -> LabPlan:
    if args.synthetic:
        return synth.star_plan(
            f"t-bench-{args.synthetic}", "172.31.209.0/24", args.synthetic, "192.168.209.0/24"
        )
    from harness.plan.build import load_plan

    plan = load_plan(args.topology)
    return dataclasses.replace(plan, name=f"t-bench-{len(plan.nodes)}")


def one_run(plan: LabPlan) -> tuple[float, float, dict[str, float]]:
    phases: dict[str, float] = {}
    last = [time.perf_counter()]

    def progress(phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        phases[phase] = now - last[0]
        last[0] = now

    t0 = time.perf_counter()
    last[0] = t0
    netns.up(plan, UpRequest(plan=plan, progress=progress))
    t1 = time.perf_counter()
    phases["inventory+ledger"] = t1 - last[0]
    netns.down(plan.name)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default=str(REPO / "topologies/scale-50.clab.yml"))
    parser.add_argument("--synthetic", type=int, metavar="N", help="generated N-node star lab")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    plan = load(args)
    nodes = len([n for n in plan.nodes if n not in plan.bridges])
    work = tempfile.mkdtemp(prefix="podlab-bench-")
    os.environ["PODLAB_HOME"] = str(Path(work) / "home")
    os.chdir(work)
    ups, downs = [], []
    for i in range(args.runs):
        up_s, down_s, phases = one_run(plan)
        ups.append(up_s)
        downs.append(down_s)
        detail = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in phases.items())
        print(f"run {i + 1}: up {up_s:.3f} s  down {down_s:.3f} s  [{detail}]")
    up_med, down_med = statistics.median(ups), statistics.median(downs)
    print(
        f"lab {plan.name} ({plan.source}): {nodes} nodes, {len(plan.segments)} segments, "
        f"{os.cpu_count()} cpus, {args.runs} runs"
    )
    print(f"up   median {up_med:.3f} s  ({up_med / nodes * 1000:.1f} ms/node)  target <= 5 s")
    print(f"down median {down_med:.3f} s  ({down_med / nodes * 1000:.1f} ms/node)  target <= 3 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
