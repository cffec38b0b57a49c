"""Service proxy scale: nftables vs iptables (vs ipvs), side by side (figures and ratios).

``sudo .venv/bin/python bench/bench_proxy.py [--sizes 1000,10000] [--endpoints 5]``
(``--modes ipvs,nftables,iptables`` where the kernel has IPVS: inside a VM guest,
``bench/bench_vm.py proxy --lab LAB`` runs it there)

In a throwaway one-node namespace lab (harness/testlab/svclab.py, 5 real backends):

- ``full_sync_s``: program N services × E endpoints from nothing (one nft
  transaction / one iptables-restore), per mode;
- ``update_one_s``: one endpoint of one service (the middle one) changes: time
  for ``update()`` to return with the kernel programmed;
- ``connect_first_ms`` / ``connect_last_ms``: median connect+reply time of 200
  TCP connections to the first and the last service (the last one is the end of
  iptables' linear KUBE-SERVICES chain), also at 100 services for the baseline.

Goals (issue 7): nftables full sync ≤ 2 s at 10,000 services; nftables
connect cost at 10,000 ≤ 1.1× its cost at 100, where iptables grows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from pyroute2 import config as pyroute2_config

from harness.agent.proxy.model import Endpoint, ServicePort
from harness.agent.proxy.registry import ProxyOptions, make_proxy
from harness.exec import run
from harness.testlab.svclab import SvcLab

TIMER = r"""
import json, socket, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(n):
    t = time.perf_counter()
    s = socket.create_connection((ip, port), timeout=2); s.makefile().readline(); s.close()
    out.append(time.perf_counter() - t)
print(json.dumps(out))
"""


def services(n: int, e: int, real: list[str]) -> list[ServicePort]:
    """N services; the first and the last point at the real backends, the rest at fakes."""
    out = []
    for i in range(n):
        ip = f"10.96.{1 + i // 250}.{1 + i % 250}"
        if i in (0, n - 1):
            eps = tuple(Endpoint(r, 8080) for r in real[:e])
        else:
            eps = tuple(
                Endpoint(f"10.245.{(i * e + k) // 250 % 250}.{1 + (i * e + k) % 250}", 8080)
                for k in range(e)
            )
        out.append(ServicePort("default", f"s{i:05d}", "", "tcp", ip, 80, endpoints=eps))
    return out


def connect_ms(lab: SvcLab, ip: str, n: int = 200) -> float:
    argv = [sys.executable, "-c", TIMER, ip, "80", str(n)]
    times = json.loads(run(argv, timeout=120, netns=lab.pods["c0"].ns).stdout)
    return statistics.median(times) * 1000


def one_mode(lab: SvcLab, mode: str, n: int, e: int) -> dict[str, float]:
    real = [lab.pods[f"b{i}"].ip for i in range(5)]
    svcs = services(n, e, real)
    proxy = make_proxy(mode, ProxyOptions(lab.SERVICE_CIDR, lab.CLUSTER_CIDR, lab.node))
    try:
        t = time.perf_counter()
        proxy.full_sync(svcs)
        full = time.perf_counter() - t
        first, last = connect_ms(lab, svcs[0].cluster_ip), connect_ms(lab, svcs[-1].cluster_ip)
        mid = n // 2
        changed = list(svcs)
        old = svcs[mid]
        moved = Endpoint("10.245.250.250", 8080)
        changed[mid] = ServicePort(
            old.namespace,
            old.name,
            old.port_name,
            old.protocol,
            old.cluster_ip,
            old.port,
            endpoints=(*old.endpoints[1:], moved),
        )
        t = time.perf_counter()
        proxy.update(changed)
        update = time.perf_counter() - t
    finally:
        proxy.close()
    return {
        "full_sync_s": full,
        "update_one_s": update,
        "connect_first_ms": first,
        "connect_last_ms": last,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--endpoints", type=int, default=5)
    ap.add_argument("--modes", default="nftables,iptables")
    args = ap.parse_args()
    pyroute2_config.default_communicate_timeout = 60  # slow (emulated) guests: see agent main
    sizes = [100, *(int(s) for s in args.sizes.split(","))]
    modes = args.modes.split(",")
    lab = SvcLab.create(backends=5)
    results: dict[str, dict[int, dict[str, float]]] = {m: {} for m in modes}
    try:
        for n in sizes:
            for m in modes:
                results[m][n] = one_mode(lab, m, n, args.endpoints)
                r = results[m][n]
                print(
                    f"{m:9s} {n:6d} svc × {args.endpoints}: full sync {r['full_sync_s']:.3f} s, "
                    f"one endpoint change {r['update_one_s'] * 1000:.1f} ms, connect first "
                    f"{r['connect_first_ms']:.3f} ms / last {r['connect_last_ms']:.3f} ms",
                    flush=True,
                )
    finally:
        lab.close()
    for other in [m for m in modes if m != "nftables"] if "nftables" in modes else []:
        print(f"\nratios {other} / nftables:")
        for n in sizes:
            a, b = results[other][n], results["nftables"][n]
            print(
                f"  {n:6d} svc: full sync {a['full_sync_s'] / b['full_sync_s']:.1f}x, "
                f"update {a['update_one_s'] / b['update_one_s']:.1f}x, "
                f"last-service connect {a['connect_last_ms'] / b['connect_last_ms']:.2f}x"
            )
    big = sizes[-1]
    for m in modes:
        base, r = results[m][100], results[m][big]
        print(
            f"{m}: last-service connect at {big} / at 100 services = "
            f"{r['connect_last_ms'] / base['connect_last_ms']:.2f}x"
        )
    print(json.dumps({"endpoints": args.endpoints, "results": results}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
