"""`podlab test --topology` for real: build a lab, deploy it, run a slice of the suites
(connectivity, MTU, hygiene and egress to an outside host), tear it down, and check
the results file, the JUnit XML and that nothing of the lab is left.

The topology is single-cluster plus a router and an "outside" host on a
documentation-range segment, renamed ``t-conf-it`` on a test management subnet.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness.conformance import hygiene
from harness.exec import run

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
REPO = Path(__file__).resolve().parents[2]
LAB = "t-conf-it"
TOPOLOGY = f"""
name: {LAB}
mgmt: {{ipv4-subnet: 172.31.223.0/24}}
topology:
  defaults: {{kind: linux, image: podlab/node:bookworm}}
  groups:
    c1:
      labels: {{podlab.cluster: c1, podlab.cluster-id: "1", podlab.pod-cidr: 10.244.0.0/16,
               podlab.service-cidr: 10.96.0.0/16, podlab.mode: vxlan}}
  nodes:
    c1-cp: {{group: c1, labels: {{podlab.role: control-plane}}}}
    c1-w1: {{group: c1}}
    c1-w2: {{group: c1}}
    router: {{labels: {{podlab.role: router}}}}
    outside: {{labels: {{podlab.role: host}}}}
    fabric: {{kind: bridge}}
  links:
    - endpoints: [router:eth1, fabric:p0]
      ipv4: [10.100.1.1/24]
    - endpoints: [c1-cp:eth1, fabric:p1]
    - endpoints: [c1-w1:eth1, fabric:p2]
    - endpoints: [c1-w2:eth1, fabric:p3]
    - endpoints: [router:eth2, outside:eth1]
      ipv4: [198.51.100.1/24, 198.51.100.10/24]
"""
SLICE = "test_connectivity or test_mtu or test_hygiene"


def test_podlab_test_builds_tests_and_removes_a_lab(tmp_path: Path) -> None:
    topo = tmp_path / f"{LAB}.clab.yml"
    topo.write_text(TOPOLOGY)
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "harness.cli", "test", f"--topology={topo}",
            "--results", str(results), "-k", SLICE, "-q"]  # fmt: skip
    try:
        res = run(argv, timeout=900, check=False)
    finally:
        left = hygiene.leftovers(LAB, REPO / ".podlab" / LAB)
        if left:
            run([sys.executable, "-m", "harness.cli", "down", LAB], timeout=120, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert left == []
    (data,) = [json.loads(p.read_text()) for p in results.glob("*.json")]
    outcomes = {(c["scenario"], c["name"]): c["outcome"] for c in data["checks"]}
    assert outcomes[(1, "test_pod_reaches_pod[cross-node-tcp]")] == "passed"
    assert outcomes[(3, "test_pod_mtu_matches_mode")] == "passed"
    assert outcomes[(4, "test_egress_is_masqueraded")] == "passed"
    assert outcomes[(30, "nothing_left_after_down")] == "passed"
    assert "failed" not in outcomes.values()
    assert any(m["name"] == "pod_mtu_bytes" and m["value"] == 1450 for m in data["measurements"])
    (junit,) = results.glob("junit-*.xml")
    assert 'name="test_egress_is_masqueraded[vxlan]"' in junit.read_text()
