"""`podlab export clab`: what it writes validates against containerlab's schema.

The schema is the copy in ``../shared/schemas/clab.schema.json`` (never in this
repository); without it the schema check is skipped, saying so.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.cli import main
from harness.plan.build import load_plan
from harness.topology.export import export_clab
from tests.conftest import REPO

SCHEMA = REPO.parent / "shared" / "schemas" / "clab.schema.json"
if not SCHEMA.exists():  # a worktree: ../shared sits beside /work/wt
    SCHEMA = Path("/work/shared/schemas/clab.schema.json")
FILES = sorted((REPO / "topologies").glob("*.clab.yml")) + sorted(
    (REPO / "tests" / "golden" / "topology" / "clab").glob("*.clab.yml")
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    if not SCHEMA.exists():
        pytest.skip(f"containerlab's schema not found at {SCHEMA} (../shared is absent)")
    # The schema's address patterns use ECMAScript's [\p{N}\p{L}] (letters and digits),
    # which Python's re lacks; [^\W_] is the same class in re's Unicode terms.
    text = SCHEMA.read_text().replace(r"[\\p{N}\\p{L}]", r"[^\\W_]")
    return jsonschema.Draft7Validator(json.loads(text))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_export_validates_against_containerlab_schema(
    path: Path, validator: jsonschema.Draft7Validator
) -> None:
    doc = export_clab(load_plan(path))
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []


def test_schema_check_catches_a_bad_export(validator: jsonschema.Draft7Validator) -> None:
    """Negative control: the schema does refuse a key containerlab does not know."""
    doc = export_clab(load_plan(REPO / "topologies" / "single-cluster.clab.yml"))
    doc["topology"]["nodes"]["c1-cp"]["podlab-cluster"] = "c1"
    assert list(validator.iter_errors(doc))


def test_export_writes_the_plan(tmp_path: Path) -> None:
    """Addresses, routes, MTU and management of the plan, as exec and settings."""
    out = tmp_path / "x.clab.yml"
    topo = REPO / "topologies" / "single-cluster.clab.yml"
    assert main(["export", "clab", str(topo), "-o", str(out), "--image", "debian:12"]) == 0
    doc = yaml.safe_load(out.read_text())
    plan = load_plan(topo)
    cp = plan.nodes["c1-cp"]
    node = doc["topology"]["nodes"]["c1-cp"]
    assert node["mgmt-ipv4"] == str(cp.mgmt.ip)
    assert f"ip addr add {cp.interfaces[0].address} dev eth1" in node["exec"]
    assert doc["topology"]["defaults"]["image"] == "debian:12"
    assert doc["mgmt"]["ipv4-subnet"] == str(plan.mgmt_subnet)


def test_plain_file_exports_its_own_exec_and_names() -> None:
    plan = load_plan(REPO / "tests/golden/topology/clab/plain-two-hosts.clab.yml")
    doc = export_clab(plan)
    assert doc["topology"]["nodes"]["PC1"]["exec"] == ["ip addr add 192.168.11.1/24 dev eth1"]
    assert doc["topology"]["links"] == [{"endpoints": ["PC1:eth1", "PC2:eth1"], "mtu": 9500}]


def test_cluster_nodes_start_what_the_deploy_starts(tmp_path: Path) -> None:
    """The exported exec: of each cluster node writes the deploy's own files (the
    agent's and controller manager's configuration load with their real loaders)
    and starts supervisord on them; the commands run here through /bin/sh, as
    containerlab runs `sh -c …`, with the node's paths moved under tmp_path."""
    import shlex
    import subprocess

    from harness.agent import config as agent_config
    from harness.controllers import main as controllers
    from harness.deploy import render

    out = tmp_path / "x.clab.yml"
    topo = REPO / "topologies" / "single-cluster.clab.yml"
    assert main(["export", "clab", str(topo), "-o", str(out)]) == 0
    text = out.read_text()
    assert "# the image must carry: Debian packages: bird2, etcd-client" in text
    doc = yaml.safe_load(text)
    plan = load_plan(topo)
    for name, node in plan.nodes.items():
        cmds = doc["topology"]["nodes"][name].get("exec", [])
        want = render.node_services(plan, node)
        if want is None:  # control: routers and hosts start nothing
            assert not any("supervisord" in c for c in cmds), name
            continue
        assert cmds.index(f"supervisord -c {want.supervisor_conf}") > max(
            i for i, c in enumerate(cmds) if c.startswith("sh -c 'cat > ")
        )
        root = tmp_path / name
        for cmd in cmds:
            if not cmd.startswith("sh -c 'cat > /"):
                continue
            moved = cmd.replace("cat > /", f"cat > {root}/", 1)
            (root / shlex.split(cmd)[2].split()[2].lstrip("/")).parent.mkdir(
                parents=True, exist_ok=True
            )
            subprocess.run(["/bin/sh", "-c", moved], check=True)
        for path, content in want.files.items():
            assert (root / path.lstrip("/")).read_text() == content, path
        agent = agent_config.load(root / "etc/podlab/agent.yaml")
        assert (agent.node, agent.cluster, agent.role) == (name, node.cluster, node.role)
        assert str(agent.underlay_address) == str(node.underlay.address.ip)  # type: ignore[union-attr]
        assert agent.allow_root_netns  # a container's namespace is the agent's own
        programs = "".join(v for k, v in want.files.items() if "/conf.d/" in k)
        assert (
            "command=/opt/podlab/venv/bin/podlab-agent --config /etc/podlab/agent.yaml" in programs
        )
        if node.role == "control-plane":
            assert controllers.load(root / "etc/podlab/controllers.yaml").cluster == node.cluster
            etcd = yaml.safe_load((root / "etc/podlab/etcd.yml").read_text())
            assert etcd["advertise-client-urls"] == agent.etcd_endpoints[0]
            assert "command=/usr/bin/etcd --config-file /etc/podlab/etcd.yml" in programs
        else:
            assert "etcd" not in programs


def test_no_services_and_what_is_not_carried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--no-services leaves the deploy out (control); a mesh is named as not carried."""
    out = tmp_path / "x.clab.yml"
    topo = REPO / "topologies" / "single-cluster.clab.yml"
    assert main(["export", "clab", str(topo), "-o", str(out), "--no-services"]) == 0
    assert "supervisord" not in out.read_text() and "image must carry" not in out.read_text()
    two = REPO / "topologies" / "two-clusters.clab.yml"
    assert main(["export", "clab", str(two), "-o", str(out)]) == 0
    if any(c.mesh for c in load_plan(two).clusters.values()):
        assert "# not carried by this file: cluster" in out.read_text()
        assert "warning: not carried" in capsys.readouterr().err


def test_binds_are_carried_resolved(tmp_path: Path, validator: jsonschema.Draft7Validator) -> None:
    (tmp_path / "frr").mkdir()
    topo = tmp_path / "b.clab.yml"
    topo.write_text(
        "name: b\ntopology:\n  nodes:\n"
        "    R1: {kind: linux, binds: ['./frr:/etc/podlab/frr:ro']}\n"
        "    R2: {kind: linux}\n"
        "  links:\n    - endpoints: [R1:eth1, R2:eth1]\n"
    )
    doc = export_clab(load_plan(topo))
    assert doc["topology"]["nodes"]["R1"]["binds"] == [f"{tmp_path / 'frr'}:/etc/podlab/frr:ro"]
    assert "binds" not in doc["topology"]["nodes"]["R2"]  # control
    assert [e.message for e in validator.iter_errors(doc)] == []


def test_stages_and_startup_delay_are_carried() -> None:
    """wait-for as the file writes it, and each node's own startup-delay (control: none)."""
    plan = load_plan(REPO / "tests/golden/topology/clab/settings-honoured.clab.yml")
    nodes = export_clab(plan)["topology"]["nodes"]
    assert nodes["PC1"]["stages"] == {
        "configure": {"wait-for": [{"node": "srv", "stage": "healthy"}]}
    }
    assert nodes["srv"]["startup-delay"] == 3
    assert "startup-delay" not in nodes["PC1"] and "stages" not in nodes["PC2"]
