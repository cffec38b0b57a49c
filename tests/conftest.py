"""Shared test configuration: markers for root-only and lab-building tests, a local etcd."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.testlab.etcd import LocalEtcd

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: builds namespaces and kernel objects")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def etcd() -> Iterator[LocalEtcd]:
    """A throwaway etcd of the machine's binary (skips where there is none)."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd binary not installed")
    e = LocalEtcd()
    try:
        e.start()
        yield e
    finally:
        e.close()
