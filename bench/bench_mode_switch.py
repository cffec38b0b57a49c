"""Benchmark: a mode switch with `podlab deploy --switch` against a full re-deploy.

    .venv/bin/python bench/bench_mode_switch.py --lab LAB [--rounds 3] [--modes bgp,vxlan]

On a lab that is up and deployed (a renamed copy of single-cluster, say), each
step moves the lab to the other of two modes, either with the full deploy
(playbooks/site.yml) or with the switch (playbooks/switch.yml), then waits until
every agent is Ready in the new mode with a route to every peer pod subnet (what
a conformance entry waits for). The variants alternate ABBA / BAAB per round,
so both see the same transitions and a neighbour's burst lands on both; one
wheelhouse is built first and shipped by every step. Prints each step (Ansible's
time, the deploy's wall time, the wait, the load average) and per variant the
median, min and max, then the ratio of the medians. Asserts nothing on time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from harness.conformance import labctl, remote
from harness.conformance.modes import ModeSpec
from harness.deploy.deploy import deploy, request_for, source_root, wheelhouse_cache
from harness.deploy.wheel import ensure_wheelhouse


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", required=True, help="a lab that is up and deployed")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of 4 steps (default 3)")
    ap.add_argument("--modes", default="bgp,vxlan", help="the two modes to switch between")
    args = ap.parse_args()
    modes = [ModeSpec.parse(m) for m in args.modes.split(",")]
    lab = labctl.attach(args.lab)
    wheelhouse = ensure_wheelhouse(source_root(), wheelhouse_cache())
    nodes = remote.connect_lab(lab.plan, lab.ssh_config, lab.lab_dir)
    totals: dict[str, list[float]] = {"full": [], "switch": []}
    step = 0
    for r in range(args.rounds):
        order = ["full", "switch", "switch", "full"]
        for variant in order if r % 2 == 0 else order[::-1]:
            step += 1
            spec = modes[step % len(modes)]
            load = Path("/proc/loadavg").read_text().split()[0]
            over = {"podlab_mode": spec.mode, "podlab_encryption": spec.encryption}
            req = request_for(args.lab, None, over, switch=variant == "switch")
            t0 = time.monotonic()
            res = deploy(req, wheelhouse=wheelhouse)
            wall = time.monotonic() - t0
            if not res.ok:
                print(f"{variant}: deploy failed: {res.failures}")
                return 1
            t1 = time.monotonic()
            labctl.wait_nodes_ready(lab, spec)
            labctl.wait_pod_routes(lab, nodes)
            ready = time.monotonic() - t1
            totals[variant].append(wall + ready)
            print(f"{variant:6s} -> {spec!s:14s} ansible {res.duration_s:5.1f} s  "
                  f"deploy {wall:5.1f} s  ready {ready:4.1f} s  total {wall + ready:5.1f} s  "
                  f"load {load}", flush=True)  # fmt: skip
    for variant, values in totals.items():
        print(f"{variant}: n={len(values)} median {statistics.median(values):.1f} s "
              f"(min {min(values):.1f}, max {max(values):.1f})")  # fmt: skip
    ratio = statistics.median(totals["switch"]) / statistics.median(totals["full"])
    print(f"switch / full (medians): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
