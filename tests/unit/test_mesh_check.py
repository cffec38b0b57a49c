"""``podlab-mesh --check [--since EPOCH] [--wait S]``: the deploy's readiness proof after a
restart must be the new syncer's clusterinfo, not the one its predecessor left."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.mesh import syncer
from harness.mesh.config import MeshConfig
from harness.store import KV


def cfg() -> MeshConfig:
    tls = {"ca": "/x/ca.crt", "cert": "/x/c.crt", "key": "/x/c.key"}
    return MeshConfig.model_validate(
        {
            "cluster": "c1",
            "cluster_id": 1,
            "mesh": "m",
            "pod_cidr": "10.244.0.0/16",
            "service_cidr": "10.96.0.0/16",
            "mode": "vxlan",
            "etcd_endpoints": ["http://127.0.0.1:1"],
            "export_endpoint": "https://127.0.0.1:2",
            "export_tls": tls,
            "password_file": Path("/x/pw"),
            "peer_tls": tls,
        }
    )


class FakeStore:
    """clusterinfo as the syncer publishes it (``started``: when that process started)."""

    info: dict[str, Any] | None = None

    def __init__(self, *_a: Any, **_k: Any) -> None:
        pass

    def get(self, key: str) -> KV | None:
        if self.info is None:
            return None
        return KV(key, json.dumps(self.info).encode(), 1, 1)

    def get_prefix(self, _prefix: str) -> tuple[list[KV], int]:
        return [], 1


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> type[FakeStore]:
    monkeypatch.setattr(syncer, "Store", FakeStore)
    FakeStore.info = None
    return FakeStore


def test_since_passes_only_on_the_restarted_syncers_clusterinfo(
    store: type[FakeStore], capsys: pytest.CaptureFixture[str]
) -> None:
    t = 1_800_000_000.0
    store.info = {"name": "c1", "started": rfc3339(t - 5)}  # the predecessor's
    assert syncer.check(cfg()) == 0  # without --since any clusterinfo proves it
    assert syncer.check(cfg(), since=t) == 1
    assert "previous syncer's (started 5.0s before the restart)" in capsys.readouterr().out
    store.info = {"name": "c1", "started": rfc3339(t + 0.5)}
    assert syncer.check(cfg(), since=t) == 0
    assert capsys.readouterr().out.startswith("ok: c1 in mesh m")


def test_since_refuses_unreadable_or_missing_clusterinfo(
    store: type[FakeStore], capsys: pytest.CaptureFixture[str]
) -> None:
    assert syncer.check(cfg(), since=1.0) == 1
    assert "no clusterinfo for c1 yet" in capsys.readouterr().out
    store.info = {"name": "c1"}  # from a syncer older than the start time
    assert syncer.check(cfg(), since=1.0) == 1
    assert "no readable start time" in capsys.readouterr().out


def test_wait_looks_again_until_it_passes(
    store: type[FakeStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    t = 1_800_000_000.0
    store.info = {"name": "c1", "started": rfc3339(t - 1)}
    looks: list[float] = []

    def sleep(s: float) -> None:  # the new syncer publishes after the second look
        looks.append(s)
        if len(looks) == 2:
            store.info = {"name": "c1", "started": rfc3339(t + 1)}

    monkeypatch.setattr(syncer.time, "sleep", sleep)
    assert syncer.check(cfg(), since=t, wait_s=30.0) == 0
    assert len(looks) == 2
    assert syncer.check(cfg(), since=t + 5, wait_s=0.0) == 1  # no wait: one look


def test_the_command_line_takes_since_and_wait(
    store: type[FakeStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[float, float]] = []
    monkeypatch.setattr(syncer, "load", lambda _p: cfg())
    monkeypatch.setattr(syncer, "check", lambda _c, since, wait: seen.append((since, wait)) or 0)
    assert syncer.main(["--check", "--since", "12.5", "--wait", "3"]) == 0
    assert seen == [(12.5, 3.0)]
