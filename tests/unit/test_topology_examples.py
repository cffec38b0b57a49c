"""Every example topology is valid containerlab and yields the documented plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.plan.build import load_plan
from tests.conftest import REPO, SHARED

EXAMPLES = sorted((REPO / "topologies").glob("*.clab.yml"))
SCHEMA = SHARED / "schemas" / "clab.schema.json"


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {
        "single-cluster.clab.yml",
        "two-clusters.clab.yml",
        "cross-subnet.clab.yml",
        "scale-50.clab.yml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_containerlab_schema(path: Path) -> None:
    if not SCHEMA.exists():
        pytest.skip(f"containerlab schema not found at {SCHEMA} (../shared is absent here)")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(yaml.safe_load(path.read_text())), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_schema_check_can_fail() -> None:
    """Negative control: an unknown node key is caught by the schema check above."""
    if not SCHEMA.exists():
        pytest.skip(f"containerlab schema not found at {SCHEMA} (../shared is absent here)")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    bad = {"name": "x", "topology": {"nodes": {"a": {"kind": "linux", "cluster": "c1"}}}}
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert list(validator.iter_errors(bad))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_plans(path: Path) -> None:
    plan = load_plan(path)
    assert plan.name == path.name.removesuffix(".clab.yml")
    for cluster in plan.clusters.values():
        assert plan.nodes[cluster.control_plane].role == "control-plane"


def test_two_clusters_shape() -> None:
    plan = load_plan(REPO / "topologies/two-clusters.clab.yml")
    assert sorted(plan.nodes) == [
        *("c1-cp", "c1-w1", "c1-w2", "c2-cp", "c2-w1", "c2-w2", "outside", "router")
    ]
    assert [c.id for c in plan.clusters.values()] == [1, 2]
    # one mesh, tunnel routing, and the same service CIDR in both clusters is allowed
    assert {(c.mesh, c.mesh_routing) for c in plan.clusters.values()} == {("mesh1", "tunnel")}
    assert len({c.service_cidr for c in plan.clusters.values()}) == 1
    # every other node routes to the other segments through the router
    router_ips = {i.address.ip for i in plan.nodes["router"].interfaces}
    for node in plan.nodes.values():
        if node.is_router:
            assert not node.routes
            continue
        assert len(node.routes) == 2
        assert {r.via for r in node.routes} <= router_ips


def test_cross_subnet_segments() -> None:
    plan = load_plan(REPO / "topologies/cross-subnet.clab.yml")
    seg = {n: plan.node_segments(n) for n in plan.nodes}
    assert seg["c1-cp"] == seg["c1-w1"] != seg["c1-w2"] == seg["c1-w3"]
    assert plan.clusters["c1"].mode == "cross-subnet"


def test_plan_is_deterministic() -> None:
    a = load_plan(REPO / "topologies/scale-50.clab.yml")
    b = load_plan(REPO / "topologies/scale-50.clab.yml")
    assert a == b
    assert len(a.nodes) == 50
    addrs = [n.underlay.address for n in a.nodes.values() if n.underlay]
    assert len(set(addrs)) == 50
    assert len({n.mgmt for n in a.nodes.values()}) == 50


def test_yaml_fixture_roundtrip() -> None:
    assert yaml.safe_load((REPO / "topologies/single-cluster.clab.yml").read_text())["name"]
