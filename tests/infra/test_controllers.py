"""The `controllers` role's promises on control-plane nodes: podlab-controllers supervised,
leading its cluster (its leader record in etcd is fresh)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.conftest import VENV, Node, program_state

CONFIG = "/etc/podlab/controllers.yaml"


@pytest.fixture
def cp(node: Node) -> Node:
    if not node.runs_etcd:
        pytest.skip(f"{node.name} is a {node.role}: no controller manager")
    return node


def test_controller_manager_running_under_the_supervisor(host: Any, cp: Node) -> None:
    state = program_state(host, cp, "podlab-controllers")
    assert state == "RUNNING", f"{cp.name}: podlab-controllers is {state}, expected RUNNING"


def test_controller_manager_leads_its_cluster(host: Any, cp: Node) -> None:
    res = host.run("%s/bin/podlab-controllers --config %s --check", VENV, CONFIG)
    assert res.rc == 0, f"{cp.name}: podlab-controllers --check failed: {res.stdout}{res.stderr}"
    assert f"leads cluster {cp.cluster}" in res.stdout
