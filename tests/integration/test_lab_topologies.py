"""The example topologies, built for real: every node reaches every other node's
underlay addresses (through the router where segments differ), and ssh works.

Each file is copied with its lab renamed ``t-lab-topo-*`` and a test management
subnet, so the suite never collides with a lab someone has up from the same file.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.exec import run
from harness.lab import netns
from harness.lab.backend import UpRequest
from harness.lab.state import LabPaths
from harness.plan.build import load_plan
from harness.plan.model import LabPlan

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
REPO = Path(__file__).resolve().parents[2]
_VENV_ANSIBLE = Path(sys.executable).parent / "ansible"
ANSIBLE = str(_VENV_ANSIBLE) if _VENV_ANSIBLE.exists() else "ansible"
CASES = {
    "single-cluster": "172.31.200.0/24",
    "two-clusters": "172.31.201.0/24",
    "cross-subnet": "172.31.202.0/24",
}


@pytest.fixture(params=sorted(CASES))
def lab(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LabPlan]:
    monkeypatch.setenv("PODLAB_HOME", str(tmp_path))  # labs in .podlab/, inventories/ beside
    monkeypatch.chdir(tmp_path)
    name = request.param
    src = (REPO / "topologies" / f"{name}.clab.yml").read_text()
    lab_name = f"t-lab-topo-{name}"[:24]
    text = re.sub(
        r"^name: .*$",
        f"name: {lab_name}\nmgmt: {{ipv4-subnet: {CASES[name]}}}",
        src,
        count=1,
        flags=re.M,
    )
    topo = tmp_path / f"{name}.clab.yml"
    topo.write_text(text)
    plan = load_plan(topo)
    try:
        netns.up(plan, UpRequest(plan=plan))
        yield plan
    finally:
        with contextlib.suppress(UserError):
            netns.down(plan.name)


def test_every_node_reaches_every_underlay_address_and_ssh(lab: LabPlan) -> None:
    plan = lab
    paths = LabPaths.of(plan.name)
    targets = sorted({str(i.address.ip) for n in plan.nodes.values() for i in n.interfaces})
    script = "; ".join(f"ping -c1 -W2 {ip} >/dev/null || echo UNREACHABLE {ip}" for ip in targets)
    for node in plan.nodes.values():
        out = run(["sh", "-c", script], netns=f"podlab-{plan.name}-{node.name}", timeout=120)
        assert "UNREACHABLE" not in out.stdout, f"{node.name}: {out.stdout.strip()}"
        ssh = run(["ssh", "-F", str(paths.ssh_config), node.name, "hostname"], timeout=20)
        assert ssh.stdout.strip() == node.name
    inventory = Path.cwd() / "inventories" / f"{plan.name}.yml"
    assert inventory.exists()
    ping = run(
        [ANSIBLE, "-i", str(inventory), "all", "-m", "ping", "-o"],
        timeout=180,
        check=False,
    )
    assert ping.returncode == 0, ping.stdout[-2000:]
    assert ping.stdout.count("SUCCESS") == len(plan.nodes)
