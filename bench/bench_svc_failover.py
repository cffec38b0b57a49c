"""Service failover: a steady request stream to a ClusterIP while a backend pod is deleted.

``sudo .venv/bin/python bench/bench_svc_failover.py [--rate 100] [--runs 3] [--pre-stop 2]``

Two real node agents (harness/testlab/agentlab.py, host-gw), three backends
(web-0 on n1, web-1 and web-2 on n2) behind a ClusterIP (each agent runs the
services controller for its node), and a client pod on n1 opening a new TCP
connection every 1/rate s. After 2 s web-1 is deleted, per run both ways, side
by side: ``graceful`` (``podlab delete pod web-1``: out of the Service at once,
preStop sleep, SIGTERM) and ``immediate`` (``--grace-period 0``: the pod is
stopped as soon as its agent sees the delete). Per run it prints the failed
requests and ``last_hit_ms``: from the delete until the last request answered
by web-1 (an upper bound on the time until no node sends traffic to it).
Goal (issue 7): p99 ≤ 1 s, zero failed requests for a graceful delete.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from harness.api.client import ApiClient
from harness.api.objects import KINDS
from harness.probes import echo
from harness.testlab.agentlab import AgentLab
from harness.testlab.failover import stream, three_backends


def one_run(rate: float, graceful: bool, pre_stop: int) -> dict[str, float]:
    lab = AgentLab(2, "host-gw")
    try:
        for n in lab.nodes:
            lab.start_agent(n)
        for n in lab.nodes:
            lab.wait_node(n)
        netns = three_backends(lab, pre_stop)
        proc = subprocess.Popen(stream(netns, 7, rate), stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)
        t_del = time.time()
        api = ApiClient(lab.store, "t1")
        api.delete(KINDS["Pod"], "default", "web-1", grace_s=None if graceful else 0)
        out, _ = proc.communicate(timeout=60)
        samples = echo.parse_stream(out).samples
    finally:
        lab.close()
    after = [s for s in samples if s[0] >= t_del]
    hits = [s[0] for s in after if s[1] == "web-1"]
    failed = [s for s in samples if not s[1].startswith("web-")]
    return {
        "requests": len(samples),
        "failed": len(failed),
        "last_hit_ms": (max(hits) - t_del) * 1000 if hits else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pre-stop", type=int, default=2, help="backends' preStop sleep (s)")
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"graceful": [], "immediate": []}
    for i in range(args.runs):
        for how in runs:
            r = one_run(args.rate, how == "graceful", args.pre_stop)
            runs[how].append(r)
            print(
                f"run {i + 1} {how:9}: {r['requests']:.0f} requests, {r['failed']:.0f} failed, "
                f"last request to the deleted backend {r['last_hit_ms']:.0f} ms after the delete",
                flush=True,
            )
    for how, rs in runs.items():
        print(
            f"{how}: worst last-hit {max(r['last_hit_ms'] for r in rs):.0f} ms; failed requests "
            f"{sum(r['failed'] for r in rs):.0f} of {sum(r['requests'] for r in rs):.0f}"
        )
    print(json.dumps({"rate": args.rate, "pre_stop_s": args.pre_stop, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
