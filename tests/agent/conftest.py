"""Fixtures for agent tests: a local etcd, and throwaway namespace labs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.agent.store import Store
from tests.agent.agentlab import AgentLab, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalEtcd:
    """etcd on 127.0.0.1 with free ports (never 2379), restartable on the same data."""

    def __init__(self) -> None:
        # tmpfs: etcd's fsyncs on a busy shared disk made tests slow and SIGKILL hang
        self.dir = Path(tempfile.mkdtemp(prefix="podlab-t-agent-etcd-", dir="/dev/shm"))
        self.port, self.peer = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer}"
        log = open(self.dir / "etcd.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [
                "etcd",
                "--name",
                "t",
                "--data-dir",
                str(self.dir / "data"),
                "--listen-client-urls",
                self.url,
                "--advertise-client-urls",
                self.url,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"t={peer}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        store = Store([self.url], timeout=1)
        wait_for("local etcd", lambda: store.get_prefix("/") is not None, timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


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
