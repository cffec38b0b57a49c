"""The `kvstore` role's promises on control-plane nodes: etcd supervised, listening, healthy."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.conftest import ETCD_CLIENT_PORT, Node, program_state


@pytest.fixture
def cp(node: Node) -> Node:
    if not node.runs_etcd:
        pytest.skip(f"{node.name} is a {node.role}: no etcd")
    return node


def test_etcd_running_under_the_supervisor(host: Any, cp: Node) -> None:
    state = program_state(host, cp, "etcd")
    assert state == "RUNNING", f"{cp.name}: etcd is {state}, expected RUNNING"


def test_etcd_data_on_node_private_storage(host: Any, cp: Node) -> None:
    assert host.file("/var/lib/podlab/etcd/member").is_directory, f"{cp.name}: no etcd data dir"


def test_etcd_listens_on_underlay_and_mgmt(host: Any, cp: Node) -> None:
    for address in filter(None, (cp.underlay_address, cp.mgmt_address)):
        sock = host.socket(f"tcp://{address}:{ETCD_CLIENT_PORT}")
        assert sock.is_listening, f"{cp.name}: etcd not listening on {address}:{ETCD_CLIENT_PORT}"


def test_etcd_answers_healthy(host: Any, cp: Node) -> None:
    url = f"http://{cp.underlay_address}:{ETCD_CLIENT_PORT}/health"
    res = host.run("python3 -c %s %s", _FETCH, url)
    assert res.rc == 0, f"{cp.name}: {url} did not answer: {res.stderr.strip()}"
    assert json.loads(res.stdout).get("health") == "true", f"{cp.name}: {url} said {res.stdout}"


# Standard library only: VMs may have no curl.
_FETCH = (
    "import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)
