"""iperf3 pod→pod across two namespace-nodes for every mode, ± WireGuard, vs the underlay.

``sudo .venv/bin/python bench/bench_modes.py [--modes bgp,ipip,...] [--wireguard host-gw,bgp]
[--seconds 5]``

Each run builds a throwaway lab (harness/testlab/agentlab.py) with the real agent, runs
``bench_agent_throughput.measure`` (iperf3 server pod on n2, client pod on n1, and
node n1 → node n2 over the underlay in the same lab) and prints both figures and
their ratio, plus which implementation ran (``IPIPImpl``, WireGuard kind) because
on this kernel ``ipip`` and WireGuard run in userspace (no ipip / wireguard modules)
and their ratios say nothing about the kernel datapaths Calico uses. BIRD and
wireguard-go outlive agents by design; they are stopped here by their pid files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

from bench.bench_agent_throughput import measure
from harness.testlab.agentlab import AgentLab

MODES = "host-gw,bgp,ipip,calico-vxlan,cross-subnet,vxlan,udp"
WIREGUARD = "host-gw,bgp,vxlan"


def _stop_daemons(lab: AgentLab) -> None:
    for node in lab.nodes:
        lab.stop_agent(node)
        for name in ("bird.pid", "wireguard-go.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int((node.dir / "run" / name).read_text().strip())
                os.kill(pid, signal.SIGTERM)
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)


def run_one(mode: str, encryption: str, seconds: int) -> tuple[float, float, str]:
    lab = AgentLab(2, mode, tmp_root="/dev/shm", resync_s=10.0, encryption=encryption)
    try:
        pod_bps, under_bps = measure(lab, seconds)
        backend = lab.wait_node(lab.nodes[0]).get("backend", {})
        impl = str(backend.get("IPIPImpl", ""))
        if encryption == "wireguard":
            kind = (
                "wireguard-go"
                if (lab.nodes[0].dir / "run" / "wireguard-go.pid").exists()
                else "kernel"
            )
            impl = ",".join(x for x in (impl, kind) if x)
        return pod_bps, under_bps, impl or ("userspace" if mode == "udp" else "kernel")
    finally:
        _stop_daemons(lab)
        lab.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=MODES)
    ap.add_argument("--wireguard", default=WIREGUARD, help="modes also measured with WireGuard")
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    runs = [(m, "none") for m in args.modes.split(",") if m]
    runs += [(m, "wireguard") for m in args.wireguard.split(",") if m]
    print(f"{'mode':14} {'encryption':10} {'impl':22} {'pod_bps':>10} {'underlay_bps':>12} ratio")
    for mode, enc in runs:
        pod, under, impl = run_one(mode, enc, args.seconds)
        print(
            f"{mode:14} {enc:10} {impl:22} {pod:10.3e} {under:12.3e} {pod / under:5.3f}", flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
