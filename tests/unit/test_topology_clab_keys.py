"""podlab's copy of containerlab's key sets (harness/topology/clab.py) is the schema's.

The schema lives in ../shared/schemas/clab.schema.json and is never copied into
this repository; where ../shared is absent these tests skip and say so. A
mismatch names the keys to add or drop in harness/topology/clab.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from harness.topology import clab
from tests.conftest import REPO, SHARED

SCHEMA = SHARED / "schemas" / "clab.schema.json"
GOLDEN = REPO / "tests" / "golden" / "topology" / "bad"
KEY_CASES = ("unknown-top-key", "misspelt-node-key", "unknown-keys-everywhere")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    if not SCHEMA.exists():
        pytest.skip(f"containerlab schema not found at {SCHEMA} (../shared is absent here)")
    return dict(json.loads(SCHEMA.read_text()))


def _props(obj: dict[str, Any]) -> tuple[str, ...]:
    assert obj.get("additionalProperties") is False, "the schema no longer forbids unknown keys"
    return tuple(obj["properties"])


def test_key_sets_are_the_schemas(schema: dict[str, Any]) -> None:
    top, defs = schema["properties"], schema["definitions"]
    topology = top["topology"]["properties"]
    pairs = {
        "TOP_KEYS": (clab.TOP_KEYS, _props(schema)),
        "MGMT_KEYS": (clab.MGMT_KEYS, _props(top["mgmt"])),
        "SETTINGS_KEYS": (clab.SETTINGS_KEYS, _props(top["settings"])),
        "TOPOLOGY_KEYS": (clab.TOPOLOGY_KEYS, _props(top["topology"])),
        "NODE_KEYS": (clab.NODE_KEYS, _props(defs["node-config"])),
        "KIND_NAMES": (clab.KIND_NAMES, _props(topology["kinds"])),
        "LINK_KEYS": (clab.LINK_KEYS, _props(defs["link-config-short"])),
        "ENDPOINT_KEYS": (clab.ENDPOINT_KEYS, _props(defs["link-endpoint"])),
    }
    wrong = {
        name: {"add": sorted(set(want) - set(ours)), "drop": sorted(set(ours) - set(want))}
        for name, (ours, want) in pairs.items()
        if set(ours) != set(want)
    }
    assert not wrong, f"harness/topology/clab.py differs from {SCHEMA}: {wrong}"
    # the places podlab checks with NODE_KEYS are node-configs in the schema too
    node_ref = "#/definitions/node-config"
    assert topology["defaults"]["$ref"] == node_ref
    assert topology["groups"]["patternProperties"][".*"]["$ref"] == node_ref
    assert all(k["$ref"] == node_ref for k in topology["kinds"]["properties"].values())


@pytest.mark.parametrize("case", KEY_CASES)
def test_what_podlab_refuses_containerlab_refuses(schema: dict[str, Any], case: str) -> None:
    """Each golden file refused for its keys is refused by the schema too, at those keys."""
    jsonschema = pytest.importorskip("jsonschema")
    data = yaml.safe_load((GOLDEN / f"{case}.clab.yml").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [e for e in validator.iter_errors(data)]
    assert errors, f"the schema accepts {case}.clab.yml"
    ours = (GOLDEN / f"{case}.err").read_text()
    for key in ("clusters", "imgae", "ipv4_subnet", "lables", "mtuu", "linx", "podlab.mode"):
        if f"'{key}'" in ours:  # each key we refuse appears in the schema's complaints
            assert any(key in str(e.message) or key in str(e.instance) for e in errors), key


def test_shipped_examples_have_no_unknown_keys() -> None:
    """Control: the same check passes every example (they are valid containerlab)."""
    from harness.errors import Collector
    from harness.topology.yamlpos import load_with_lines

    for path in sorted((REPO / "topologies").glob("*.clab.yml")):
        data, lines, _ = load_with_lines(path.read_text())
        c = Collector(str(path))
        clab.check(data, c, lines)
        assert not c.problems, [str(p) for p in c.problems]


def test_every_schema_key_has_a_decision() -> None:
    """The audit of issue 17: each key containerlab accepts is honoured, accepted as
    containerlab-only, or refused — never silently ignored by omission."""
    pairs = (
        (clab.TOP_KEYS, clab.TOP_SETTINGS),
        (clab.MGMT_KEYS, clab.MGMT_SETTINGS),
        (clab.NODE_KEYS, clab.NODE_SETTINGS),
        (clab.LINK_KEYS, clab.LINK_SETTINGS),
        (clab.ENDPOINT_KEYS, clab.ENDPOINT_SETTINGS),
    )
    for keys, table in pairs:
        assert set(keys) == set(table), (
            sorted(set(keys) - set(table)),
            sorted(set(table) - set(keys)),
        )
        for key, (status, why, fix) in table.items():
            assert status in (clab.HONOURED, clab.CLAB_ONLY, clab.REFUSED), key
            assert why, key
            assert bool(fix) == (status == clab.REFUSED), key  # a refusal says what to do


def test_docs_carry_the_audit_table() -> None:
    """docs/containerlab.md prints the table the loader uses (regenerate it with
    ``python -c 'from harness.topology.clab import settings_markdown as m; print(m())'``)."""
    assert clab.settings_markdown() in (REPO / "docs" / "containerlab.md").read_text()


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("mgmt: {ipv6-subnet: 3fff::/64}", "ipv6-subnet"),
        ("mgmt: {external-access: true}", "external-access"),
        ("topology: {nodes: {a: {ports: ['80:80']}}}", "ports"),
        ("topology: {nodes: {a: {user: admin}}}", "user"),
    ],
)
def test_refused_keys_and_their_controls(text: str, refused: str) -> None:
    """Each refusal fires on its key, and the accepted form (control) passes."""
    from harness.errors import Collector
    from harness.topology.yamlpos import load_with_lines

    data, lines, _ = load_with_lines(f"name: x\n{text}\n")
    c = Collector("t.clab.yml")
    clab.check(data, c, lines)
    assert [p for p in c.problems if refused in p.message], c.problems
    control = {
        "ipv6-subnet": "mgmt: {ipv4-subnet: 172.20.1.0/24}",
        "external-access": "mgmt: {external-access: false}",
        "ports": "topology: {nodes: {a: {image: alpine}}}",
        "user": "topology: {nodes: {a: {user: root}}}",
    }[refused]
    data, lines, _ = load_with_lines(f"name: x\n{control}\n")
    c = Collector("t.clab.yml")
    clab.check(data, c, lines)
    assert not c.problems, c.problems
