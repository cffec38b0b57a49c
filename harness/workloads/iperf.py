"""An iperf3 server wrapper for pods: ``python -m harness.workloads.iperf --port 5201``.

Runs ``iperf3 -s`` in the foreground (so the pod's process IS the server and the
agent's pid bookkeeping stays exact) and restarts it if it exits, because a
one-off iperf3 error must not end the pod.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="harness.workloads.iperf")
    ap.add_argument("--port", type=int, default=5201)
    ap.add_argument("--bind", default="", help="address to bind (default: all)")
    args = ap.parse_args(argv)
    cmd = ["iperf3", "-s", "-p", str(args.port)] + (["-B", args.bind] if args.bind else [])
    while True:
        pid = os.fork()
        if pid == 0:
            os.execvp(cmd[0], cmd)
        _, status = os.waitpid(pid, 0)
        print(f"iperf3 exited with {os.waitstatus_to_exitcode(status)}; restarting", flush=True)
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
