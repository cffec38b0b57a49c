"""``podlab-agent --check --since T --wait S`` against a real local etcd (no namespaces).

The deploy's readiness wait after an agent restart: only a heartbeat written at or
after the restart, in the configured mode, proves the new agent; a fresh record the
old agent left must not pass (the plain check, the negative control, passes it).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.agent.config import AgentConfig
from harness.agent.main import check
from harness.store import Store
from harness.store.keys import node_key

pytestmark = pytest.mark.timeout(120)


def _cfg(etcd_url: str, tmp: Path, mode: str = "vxlan") -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "node": "n1",
            "cluster": "c1",
            "etcd_endpoints": [etcd_url],
            "pod_cidr": "10.244.0.0/16",
            "mode": mode,
            "underlay_interface": "eth1",
            "underlay_address": "10.100.0.3",
            "state_dir": str(tmp / "state"),
            "run_dir": str(tmp / "run"),
            "log_dir": str(tmp / "log"),
        }
    )


def _beat(store: Store, mode: str, ago_s: float = 0.0) -> float:
    """Write n1's record with a heartbeat ``ago_s`` in the past; return its epoch."""
    at = datetime.now(UTC) - timedelta(seconds=ago_s)
    record = {"heartbeat": at.isoformat().replace("+00:00", "Z"), "mode": mode}
    store.put(node_key("c1", "n1"), json.dumps(record))
    return at.timestamp()


def test_a_heartbeat_from_before_the_restart_does_not_pass(
    etcd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _cfg(etcd.url, tmp_path)
    old = _beat(etcd.store(), "vxlan", ago_s=2.0)  # the old agent's, fresh (2 s old)
    assert check(cfg) == 0, "negative control: a fresh record passes the plain check"
    assert check(cfg, since=old + 1.0) == 1
    assert "no heartbeat of n1 since the restart" in capsys.readouterr().out
    assert check(cfg, since=old) == 0  # written at the very moment counts


def test_the_new_mode_is_required_after_a_restart(
    etcd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = etcd.store()
    since = time.time()
    _beat(store, "vxlan")
    assert check(_cfg(etcd.url, tmp_path, mode="bgp"), since=since) == 1
    assert "reports mode vxlan, its agent.yaml says bgp" in capsys.readouterr().out
    assert check(_cfg(etcd.url, tmp_path, mode="vxlan"), since=since) == 0


def test_the_wait_returns_on_the_new_heartbeat_not_at_its_end(etcd, tmp_path: Path) -> None:
    store = etcd.store()
    _beat(store, "bgp", ago_s=1.0)  # the old agent, the old mode
    since = time.time()
    cfg = _cfg(etcd.url, tmp_path)
    timer = threading.Timer(1.0, _beat, args=(store, "vxlan"))
    timer.start()
    t0 = time.monotonic()
    try:
        assert check(cfg, since=since, wait_s=30.0) == 0
    finally:
        timer.cancel()
    took = time.monotonic() - t0
    assert 0.9 <= took < 10.0, f"passed after {took:.1f} s: before the heartbeat, or by timeout"


def test_the_wait_ends_unhealthy_when_no_new_heartbeat_comes(
    etcd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _beat(etcd.store(), "vxlan", ago_s=1.0)
    t0 = time.monotonic()
    assert check(_cfg(etcd.url, tmp_path), since=time.time(), wait_s=1.5) == 1
    assert time.monotonic() - t0 >= 1.4
    assert "unhealthy after 1.5 s: no heartbeat of n1 since the restart" in capsys.readouterr().out
