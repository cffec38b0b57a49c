"""Cross-cluster reach of a deployed meshed lab, whatever mode each cluster runs.

``.venv/bin/python bench/bench_mesh_reach.py LAB``

One echo pod on each worker of every cluster; every pod probes every pod of each other
cluster over TCP (5 requests each); prints one line per pair and ``ALL OK`` or
``FAILED`` (exit 1). The pods are removed at the end. Used to check a mixed tunnel mesh
after a per-cluster switch (``podlab deploy LAB --mode c1=vxlan,c2=udp --switch``;
docs/mesh.md).
"""

from __future__ import annotations

import sys
from typing import Any

from harness.conformance import labctl, remote
from harness.conformance.pods import TCP_PORT, Pod, PodFactory
from harness.conformance.remote import output
from harness.probes import echo


def main(lab_name: str) -> int:
    lab = labctl.attach(lab_name)
    names = sorted({n.name for c in lab.plan.clusters for n in lab.cluster_nodes(c)})
    nodes = remote.connect_lab(lab.plan, lab.ssh_config, lab.lab_dir, names)
    factories: dict[str, Any] = {}
    pods: dict[str, list[Pod]] = {}
    bad = 0
    try:
        for c in lab.plan.clusters:
            factories[c] = PodFactory(lab.client(c), dict(nodes))
            workers = [n.name for n in lab.cluster_nodes(c) if n.role == "worker"]
            pods[c] = factories[c].create(list(workers), prefix="reach")
        for a, mine in pods.items():
            for b, theirs in pods.items():
                if a == b:
                    continue
                for p in mine:
                    for q in theirs:
                        argv = echo.probe_command("tcp", q.ip, TCP_PORT, count=5, budget_s=10,
                                                  wait_s=5)  # fmt: skip
                        report = echo.parse_probe(output(p.run(argv, timeout_s=30)))
                        print(f"{a}:{p} -> {b}:{q} ({q.ip}) all_ok={report.all_ok}")
                        bad += not report.all_ok
    finally:
        for f in factories.values():
            left = f.delete_all()
            if left:
                print(f"pods not removed: {', '.join(left)}")
        for node in nodes.values():
            node.close()
    print("FAILED" if bad else "ALL OK")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: bench_mesh_reach.py LAB")
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
