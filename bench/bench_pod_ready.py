"""Pod network-ready latency: apply → the pod answers a TCP probe from another node.

``sudo .venv/bin/python bench/bench_pod_ready.py [--pods 100] [--rate 20] [--mode vxlan]``

A throwaway lab (harness/testlab/agentlab.py) with three namespace-nodes runs the real
agent in each. A prober pod on n3 opens TCP connections; the measured pods are
spread over n1 and n2 (``spec.nodeName`` set at apply time as podlab's scheduler
does) and written to etcd at ``--rate`` pods/s exactly as ``podlab apply`` writes
them. For each pod: apply time → first accepted TCP connection from the prober
(retried every 20 ms once the pod's IP is known). Prints p50/p90/p99/max and the
agent-side ``networkReadyTime - apply`` split. Target: p99 ≤ 1 s (Kubernetes'
pod startup SLO is 5 s at p99).

The pod command is ``python -m harness.workloads.echo --tcp 8080``, so the figure
includes starting a Python interpreter per pod on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime

from harness.testlab.agentlab import PYTHON, AgentLab
from harness.testlab.wait import wait_for

# Reads "name ip" lines; for each, retries a TCP connect every 20 ms and prints
# "name <epoch seconds>" when one is accepted.
PROBER = r"""
import socket, sys, threading, time
lock = threading.Lock()
def probe(name, ip):
    while True:
        try:
            socket.create_connection((ip, 8080), timeout=0.5).close()
            t = time.time()
            with lock:
                sys.stdout.write(f"{name} {t!r}\n"); sys.stdout.flush()
            return
        except OSError:
            time.sleep(0.02)
for line in sys.stdin:
    name, ip = line.split()
    threading.Thread(target=probe, args=(name, ip), daemon=True).start()
time.sleep(3600)
"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def ts(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--rate", type=float, default=20.0, help="pods applied per second")
    ap.add_argument("--mode", default="vxlan")
    args = ap.parse_args()
    lab = AgentLab(3, args.mode, tmp_root="/dev/shm", resync_s=10.0)
    try:
        for n in lab.nodes:
            lab.start_agent(n)
        for n in lab.nodes:
            lab.wait_node(n)
        n1, n2, n3 = lab.nodes
        lab.apply_pod("prober", n3, ["sleep", "infinity"])
        prober_ns = lab.wait_running("prober")["netns"]
        prober = subprocess.Popen(
            ["nsenter", f"--net={n3.pod_netns(prober_ns)}", PYTHON, "-c", PROBER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        answered: dict[str, float] = {}

        def read() -> None:
            assert prober.stdout is not None
            for line in prober.stdout:
                parts = line.split()
                if len(parts) == 2:
                    answered[parts[0]] = float(parts[1])
                else:
                    print(f"prober: {line.rstrip()}", file=sys.stderr)

        threading.Thread(target=read, daemon=True).start()
        applied: dict[str, float] = {}
        sent: set[str] = set()
        cmd = ["python", "-m", "harness.workloads.echo", "--tcp", "8080"]
        for i in range(args.pods):
            name = f"p{i:03d}"
            applied[name] = time.time()
            lab.apply_pod(name, (n1, n2)[i % 2], cmd)
            _poll_ips(lab, applied, sent, prober)
            time.sleep(max(0.0, applied[name] + 1 / args.rate - time.time()))
        wait_for(
            "all pods answering",
            lambda: (_poll_ips(lab, applied, sent, prober) or True) and len(answered) == args.pods,
            timeout=120,
            every=0.05,
        )
        lat = [answered[n] - applied[n] for n in applied]
        net = [ts(lab.pod_status(n)["networkReadyTime"]) - applied[n] for n in applied]
        print(
            f"mode {args.mode}, {args.pods} pods at {args.rate}/s over 2 nodes, probed from a third"
        )
        for label, vals in (("apply→TCP answer", lat), ("apply→networkReady", net)):
            print(
                f"{label:20} p50 {pct(vals, 50):.3f} s  p90 {pct(vals, 90):.3f} s  "
                f"p99 {pct(vals, 99):.3f} s  max {max(vals):.3f} s  "
                f"mean {statistics.mean(vals):.3f} s"
            )
        print("target p99 ≤ 1 s:", "ok" if pct(lat, 99) <= 1.0 else "MISSED")
        prober.kill()
        prober.wait()
    finally:
        lab.close()
    return 0


def _poll_ips(
    lab: AgentLab, applied: dict[str, float], sent: set[str], prober: subprocess.Popen[str]
) -> None:
    """Hand every pod whose IP is known to the prober (once)."""
    assert prober.stdin is not None
    statuses = {
        kv.key.rsplit("/", 1)[1]: kv.json()
        for kv in lab.store.get_prefix("/podlab/v1/t1/podstatus/default/")[0]
    }
    for name in applied:
        st = statuses.get(name)
        if name not in sent and st and st.get("podIP"):
            prober.stdin.write(f"{name} {st['podIP']}\n")
            prober.stdin.flush()
            sent.add(name)


if __name__ == "__main__":
    sys.exit(main())
