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
