"""iperf3 TCP throughput pod→pod across two namespace-nodes, per mode, vs the underlay.

``sudo .venv/bin/python bench/bench_agent_throughput.py [--modes host-gw,vxlan,udp] [--seconds 5]``

For each mode a throwaway lab (harness/testlab/agentlab.py) runs the real agent on
two node namespaces; an iperf3 server pod (``harness.workloads.iperf``) on n2 is
measured from a pod on n1, and in the same run node n1 → node n2 over the
underlay veths (the baseline). Prints both in bit/s and the mode's ratio to the
underlay. Absolute figures depend on this machine (and on what else runs on it);
the ratio is the figure to compare. ``udp`` is flanneld's userspace forwarder in
Python, so its ratio is expected to be far below the kernel modes'.
"""

from __future__ import annotations

import argparse
import sys
import time

from harness.probes import iperf3
from harness.testlab.agentlab import AgentLab
from harness.testlab.wait import wait_for


def measure(lab: AgentLab, seconds: int) -> tuple[float, float]:
    n1, n2 = lab.nodes
    for n in lab.nodes:
        lab.start_agent(n)
    for n in lab.nodes:
        lab.wait_node(n)
    lab.apply_pod("srv", n2, ["python", "-m", "harness.workloads.iperf", "--port", "5201"])
    lab.apply_pod("cli", n1, ["sleep", "infinity"])
    srv, cli = lab.wait_running("srv"), lab.wait_running("cli")
    argv = iperf3.client_command(srv["podIP"], 5201, seconds)
    wait_for(
        "iperf3 server pod",
        lambda: (
            lab.pod_run(
                n1, cli["netns"], ["ping", "-c1", "-W1", srv["podIP"]], check=False
            ).returncode
            == 0
        ),
    )
    time.sleep(0.5)
    pod = iperf3.parse(lab.pod_run(n1, cli["netns"], argv, timeout=seconds + 20).stdout)
    # underlay baseline in the same run: a one-shot server in node n2's namespace
    server = lab.ns_run_bg(n2, iperf3.server_command(5202, seconds + 30))
    try:
        time.sleep(0.5)
        out = lab.ns_run(n1, iperf3.client_command(n2.ip, 5202, seconds), timeout=seconds + 20)
        under = iperf3.parse(out.stdout)
    finally:
        server.kill()
        server.wait()
    return pod.received_bps, under.received_bps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="host-gw,vxlan,udp")
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    print(f"{'mode':8} {'pod_to_pod_bps':>15} {'underlay_bps':>15} {'ratio':>6}")
    for mode in args.modes.split(","):
        lab = AgentLab(2, mode, tmp_root="/dev/shm", resync_s=10.0)
        try:
            pod_bps, under_bps = measure(lab, args.seconds)
        finally:
            lab.close()
        print(f"{mode:8} {pod_bps:15.3e} {under_bps:15.3e} {pod_bps / under_bps:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
