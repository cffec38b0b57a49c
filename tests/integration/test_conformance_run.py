"""`podlab test --topology` for real: build a lab, deploy it, run a slice of the suites
(connectivity, MTU, hygiene and egress to an outside host), tear it down, and check
the results file, the JUnit XML and that nothing of the lab is left.

The topology is the shipped single-cluster (with its router and "outside" host on
a documentation-range segment), renamed ``t-conf-it`` on a test management subnet.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.conformance import hygiene
from harness.exec import run

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
REPO = Path(__file__).resolve().parents[2]
LAB = "t-conf-it"


def _topology() -> str:
    """The shipped single-cluster lab under another name and management subnet."""
    topo = yaml.safe_load((REPO / "topologies" / "single-cluster.clab.yml").read_text())
    topo["name"], topo["mgmt"] = LAB, {"ipv4-subnet": "172.31.223.0/24"}
    return yaml.safe_dump(topo, sort_keys=False)


SLICE = "test_connectivity or test_mtu or test_hygiene"


def test_podlab_test_builds_tests_and_removes_a_lab(tmp_path: Path) -> None:
    topo = tmp_path / f"{LAB}.clab.yml"
    topo.write_text(_topology())
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


def test_a_signal_stops_make_conformance_and_removes_the_lab(tmp_path: Path) -> None:
    """SIGTERM to scripts/conformance.sh (a CI time-out, `kill`, a closed terminal)
    mid-run: the running `podlab test` unwinds, the lab comes down, the report of what
    ran is written, and the script exits 128+15 — not a lab left running."""
    lab = "t-conf-sig"
    topo_doc = yaml.safe_load(_topology())
    topo_doc["name"], topo_doc["mgmt"] = lab, {"ipv4-subnet": "172.31.224.0/24"}
    topo = tmp_path / f"{lab}.clab.yml"
    topo.write_text(yaml.safe_dump(topo_doc, sort_keys=False))
    script = [str(REPO / "scripts" / "conformance.sh"), str(topo), "vxlan", "0", "default", "0"]
    proc = subprocess.Popen(script, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if "running the conformance suites" in line:
                time.sleep(3.0)  # the run attaches to the lab and starts its checks
                proc.send_signal(signal.SIGTERM)
                break
        out.extend(proc.stdout)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        left = hygiene.leftovers(lab, REPO / ".podlab" / lab)
        if left:
            run([sys.executable, "-m", "harness.cli", "down", lab], timeout=120, check=False)
        reports = sorted(p.name for p in (REPO / "reports").glob(f"*{lab}.html"))
        for made in (REPO / "reports").glob(f"*{lab}*"):
            shutil.rmtree(made) if made.is_dir() else made.unlink()
        for made in (REPO / "reports" / "results").glob(f"*{lab}"):
            shutil.rmtree(made)
    text = "".join(out)
    assert code == 128 + signal.SIGTERM, text[-4000:]
    assert "interrupted by SIGTERM" in text, text[-4000:]
    assert f"tearing down {lab}" in text and "writing the report" in text, text[-4000:]
    assert left == []
    assert len(reports) == 1, reports
