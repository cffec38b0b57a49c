"""Fixtures for agent tests: throwaway namespace labs (harness.testlab); etcd: tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from harness.testlab.agentlab import AgentLab


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
