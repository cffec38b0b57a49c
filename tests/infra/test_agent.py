"""The `agent` role's promises on cluster nodes: venv, config, supervised and healthy agent."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from harness.store.keys import node_key
from tests.infra.conftest import AGENT_CONFIG, VENV, Node, program_state


@pytest.fixture
def member(node: Node) -> Node:
    if not node.runs_agent:
        pytest.skip(f"{node.name} is a {node.role}: no agent")
    return node


def test_venv_entry_point_present(host: Any, member: Node) -> None:
    entry = host.file(f"{VENV}/bin/podlab-agent")
    assert entry.is_file and entry.mode & 0o111, f"{member.name}: {entry.path} not executable"


def test_agent_config_rendered_from_inventory(host: Any, member: Node) -> None:
    config = yaml.safe_load(host.file(AGENT_CONFIG).content_string)
    assert config["node"] == member.name
    assert config["cluster"] == member.cluster
    if member.etcd_endpoints:
        assert list(config["etcd_endpoints"]) == list(member.etcd_endpoints)
    if member.underlay_address:
        assert config["underlay_address"] == member.underlay_address


def test_agent_running_under_the_supervisor(host: Any, member: Node) -> None:
    state = program_state(host, member, "podlab-agent")
    assert state == "RUNNING", f"{member.name}: podlab-agent is {state}, expected RUNNING"


def test_agent_reports_healthy(host: Any, member: Node) -> None:
    res = host.run("%s/bin/podlab-agent --config %s --check", VENV, AGENT_CONFIG)
    assert res.rc == 0, f"{member.name}: podlab-agent --check failed: {res.stdout}{res.stderr}"


def test_agent_log_under_var_log_podlab(host: Any, member: Node) -> None:
    assert host.file("/var/log/podlab/podlab-agent.log").exists


def test_agent_registered_in_etcd(host: Any, member: Node) -> None:
    # Asked from the node itself, through the endpoint its agent uses.
    assert member.etcd_endpoints, f"{member.name}: inventory names no etcd endpoint"
    key = node_key(str(member.cluster), member.name)
    url = f"{member.etcd_endpoints[0]}/v3/kv/range"
    res = host.run("python3 -c %s %s %s", _RANGE, url, key)
    assert res.rc == 0, f"{member.name}: {url} did not answer: {res.stderr.strip()}"
    count = int(json.loads(res.stdout).get("count", 0))
    assert count == 1, f"{member.name}: no node record {key} in its cluster's etcd ({url})"


# Standard library only (VMs may lack etcdctl): a v3 gateway range request for one key.
_RANGE = (
    "import base64, json, sys, urllib.request as u; "
    "body = json.dumps({'key': base64.b64encode(sys.argv[2].encode()).decode()}).encode(); "
    "print(u.urlopen(u.Request(sys.argv[1], data=body), timeout=5).read().decode())"
)
