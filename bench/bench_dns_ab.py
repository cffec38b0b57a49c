"""DNS lookups at a node's agent side by side with a control server in the same namespace.

``sudo .venv/bin/python bench/bench_dns_ab.py LAB NODE [--names N] [--rounds R]
[--gap 0.01] [--namespace podlab-load]``

Why: a slow DNS answer on a loaded lab is either the agent's answer path (its
DNS server is a thread of the agent process, sharing its interpreter with the
datapath, the proxy and the pod workers) or the machine (the client itself, or
the kernel, waiting for a CPU). This asks both at once: from NODE's network
namespace, each round looks up every Service name of ``--namespace`` (as
``podlab load`` does) alternately at the agent's DNS (the service CIDR's 10th
address) and at a control: a separate process in the same namespace running
the same dnslib parse/answer/pack on a one-record zone (127.0.0.1:5354). Same
client, same moment, same kernel: a tail only the agent shows is the agent's.
Prints p50/p90/p99/max of each, and the ratio of their p99s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.api.cli import connect
from harness.api.objects import KINDS
from harness.errors import UserError
from harness.load.cli import netns_paths
from harness.load.run import dns_ip
from harness.probes.stats import percentiles

CONTROL = r"""
import socket, sys
from dnslib import A, QTYPE, RR, DNSRecord
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 5354))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    q = DNSRecord.parse(data)
    r = q.reply()
    r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("10.96.0.1"), ttl=5))
    s.sendto(r.pack(), peer)
"""

CLIENT = r"""
import json, socket, sys, time
from dnslib import DNSRecord
agent, rounds, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
names = sys.stdin.read().split()
out = {"agent": [], "control": [], "errors": {"agent": 0, "control": 0}, "slow": []}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0)
for _ in range(rounds):
    for name in names:
        for who, addr in (("agent", (agent, 53)), ("control", ("127.0.0.1", 5354))):
            q = DNSRecord.question(name)
            t0 = time.monotonic()
            try:
                s.sendto(q.pack(), addr)
                while DNSRecord.parse(s.recv(4096)).header.id != q.header.id:
                    pass
                dt = time.monotonic() - t0
                out[who].append(dt)
                if dt > 0.05:
                    out["slow"].append([who, round(time.time(), 3), round(dt, 4)])
            except OSError:
                out["errors"][who] += 1
        time.sleep(gap)
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lab")
    ap.add_argument("node", help="a real node of the lab (its agent answers DNS)")
    ap.add_argument("--cluster", default=None)
    ap.add_argument("--etcd", default=None)
    ap.add_argument("--namespace", default="podlab-load")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gap", type=float, default=0.01, help="seconds between names")
    args = ap.parse_args()
    try:
        client, target = connect(args)
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    path = netns_paths(target.lab, [args.node]).get(args.node)
    if path is None:
        print(f"error: no network namespace for node {args.node} of lab {args.lab}")
        return 2
    services = client.list_objects(KINDS["Service"], args.namespace)
    names = [f"{s['metadata']['name']}.{args.namespace}.svc.cluster.local" for s in services]
    if not names:
        print(f"error: no Services in namespace {args.namespace} to look up")
        return 2
    enter = ["nsenter", f"--net={path}", sys.executable, "-c"]
    control = subprocess.Popen([*enter, CONTROL], stdout=subprocess.PIPE, text=True)
    try:
        assert control.stdout is not None
        control.stdout.readline()
        load0 = Path("/proc/loadavg").read_text().split()[:3]
        t0 = time.monotonic()
        res = subprocess.run(
            [*enter, CLIENT, dns_ip(target.service_cidr or "10.96.0.0/12"), str(args.rounds),
             str(args.gap)],
            input="\n".join(names), capture_output=True, text=True, timeout=3600, check=True,
        )  # fmt: skip
        wall = time.monotonic() - t0
    finally:
        control.kill()
        control.wait()
    got = json.loads(res.stdout.strip().splitlines()[-1])
    load1 = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{args.lab} {args.node}: {len(names)} names × {args.rounds} rounds, {wall:.0f} s; "
          f"load {' '.join(load0)} → {' '.join(load1)}")  # fmt: skip
    p = {}
    for who in ("agent", "control"):
        vals = got[who]
        p[who] = percentiles(vals)
        print(f"  {who:8} p50 {p[who][50] * 1000:7.2f} ms  p90 {p[who][90] * 1000:7.2f} ms  "
              f"p99 {p[who][99] * 1000:7.2f} ms  max {max(vals) * 1000:7.1f} ms  "
              f"n {len(vals)}  errors {got['errors'][who]}")  # fmt: skip
    print(f"  p99 agent ÷ control: {p['agent'][99] / p['control'][99]:.2f}")
    slow = got["slow"]
    print(f"  answers over 50 ms: agent {sum(1 for s in slow if s[0] == 'agent')}, "
          f"control {sum(1 for s in slow if s[0] == 'control')}")  # fmt: skip
    for who, at, dt in slow[:20]:
        print(
            f"    {who:8} at {time.strftime('%H:%M:%S', time.gmtime(at))}"
            f".{int(at * 1000) % 1000:03d} {dt * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
