"""NetworkPolicy enforcement latency: policy in hand → table programmed → packet dropped.

``sudo .venv/bin/python bench/bench_policy.py [--pods 10,100,1000] [--policies 50]``

A throwaway one-node lab (harness/testlab/svclab.py) with real pods b0 (server)
and c0 (client) plus N fake local pods; P policies of the allow-by-label kind
select them. For each size: the time to build the table
(``policy.ruleset``), to load it (one ``nft -f``), and — after adding a
deny-all for b0 — until c0's next connection attempt is dropped (scenario 18;
build + load + the probe's own start-up).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from harness.agent.policy import PodInfo, PolicyEnforcer, ruleset
from harness.testlab.svclab import SvcLab


def policies(n: int, deny_b0: bool) -> list[dict]:
    out = [
        {
            "metadata": {"name": f"p{i}", "namespace": "default"},
            "spec": {
                "podSelector": {"matchLabels": {"app": f"a{i}"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"role": f"r{i}"}}}],
                        "ports": [{"port": 8080}],
                    }
                ],
            },
        }
        for i in range(n)
    ]
    if deny_b0:
        out.append(
            {
                "metadata": {"name": "deny", "namespace": "default"},
                "spec": {"podSelector": {"matchLabels": {"app": "b0"}}, "policyTypes": ["Ingress"]},
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pods", default="10,100,1000")
    ap.add_argument("--policies", type=int, default=50)
    args = ap.parse_args()
    lab = SvcLab.create(backends=1)
    enforcer = PolicyEnforcer(lab.node)
    results = []
    try:
        for n in (int(x) for x in args.pods.split(",")):
            pods = [
                PodInfo("default", "b0", lab.pods["b0"].ip, {"app": "b0"}),
                PodInfo("default", "c0", lab.pods["c0"].ip, {"role": "client"}),
            ]
            pods += [
                PodInfo(
                    "default",
                    f"f{i}",
                    f"10.245.{i // 250}.{1 + i % 250}",
                    {"app": f"a{i % args.policies}", "role": f"r{(i + 1) % args.policies}"},
                )
                for i in range(n)
            ]
            t = time.perf_counter()
            doc = ruleset(policies(args.policies, False), pods, {})
            build = time.perf_counter() - t
            t = time.perf_counter()
            enforcer.apply(doc)
            load = time.perf_counter() - t
            assert lab.connect(lab.pods["c0"].ns, lab.pods["b0"].ip, 8080, 1) == ["b0"]
            t = time.perf_counter()
            enforcer.apply(ruleset(policies(args.policies, True), pods, {}))
            while lab.connect(lab.pods["c0"].ns, lab.pods["b0"].ip, 8080, 1) != ["timeout"]:
                pass
            blocked = time.perf_counter() - t - 2.0  # minus the probe's 2 s connect timeout
            r = {
                "pods": n,
                "policies": args.policies,
                "build_s": build,
                "load_s": load,
                "first_drop_s": blocked,
                "rules": doc.count("add rule"),
            }
            results.append(r)
            print(
                f"{n:5d} pods, {args.policies} policies ({r['rules']} rules): build "
                f"{build * 1000:.1f} ms, load {load * 1000:.1f} ms, deny applied → first "
                f"dropped connection {blocked * 1000:.0f} ms",
                flush=True,
            )
    finally:
        enforcer.close()
        lab.close()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
