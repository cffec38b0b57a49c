"""Fixtures for agent tests: a local etcd, and throwaway namespace labs (harness.testlab)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from harness.testlab.agentlab import AgentLab
from harness.testlab.etcd import LocalEtcd


@pytest.fixture
def etcd() -> Iterator[LocalEtcd]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd binary not installed")
    e = LocalEtcd()
    try:
        e.start()
        yield e
    finally:
        e.close()


@pytest.fixture
def agent_lab() -> Iterator[Callable[..., AgentLab]]:
    """Factory: ``agent_lab(n_nodes, mode, **cfg)``; every lab is closed afterwards."""
    labs: list[AgentLab] = []

    def make(n: int, mode: str, **cfg: object) -> AgentLab:
        lab = AgentLab(n, mode, **cfg)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            for node in lab.nodes:  # shown by pytest only when a test failed
                if node.log.exists():
                    print(f"----- agent log {node.name}\n{node.log.read_text()[-4000:]}")
            lab.close()
