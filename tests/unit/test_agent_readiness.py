"""Readiness of a Ready pod follows failureThreshold: one lost probe does not unready it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.agent import procs
from harness.agent.pods import PodManager, PodSpec, PodState


class _Manager(PodManager):
    """Only what check_ready needs: a state file per pod."""

    def __init__(self, tmp: Path) -> None:  # no netlink, no subnet
        self.state_dir = tmp

    def save(self, st: PodState) -> None:
        (self.state_dir / st.name).write_text(str(st.probe_failures))


@pytest.fixture
def manager(tmp_path: Path) -> _Manager:
    return _Manager(tmp_path)


def _spec(threshold: int = 3) -> PodSpec:
    return PodSpec(
        "default", "web", "u1", ("sleep",), readiness=procs.Probe("tcp", 80, "/", threshold)
    )


def test_ready_pod_needs_consecutive_failures(manager: _Manager, monkeypatch) -> None:
    results = iter([False, False, True, False, False, False])
    monkeypatch.setattr(procs, "probe", lambda p, ip: next(results))
    st = PodState("default", "web", "u1", "10.0.0.2", "pod-default-web", "veth1",
                  pid=4242, phase="Running", ready=True)  # fmt: skip
    spec = _spec()
    assert [manager.check_ready(spec, st) for _ in range(3)] == [False, False, False]
    assert st.ready and st.probe_failures == 0, "a success in between resets the count"
    assert [manager.check_ready(spec, st) for _ in range(3)] == [False, False, True]
    assert not st.ready and st.probe_failures == 0


def test_not_ready_pod_becomes_ready_on_one_success(manager: _Manager, monkeypatch) -> None:
    monkeypatch.setattr(procs, "probe", lambda p, ip: True)
    st = PodState("default", "web", "u1", "10.0.0.2", "pod-default-web", "veth1", pid=4242,
                  phase="Running")  # fmt: skip
    assert manager.check_ready(_spec(), st) and st.ready


def test_terminating_pod_is_not_ready_at_once(manager: _Manager, monkeypatch) -> None:
    monkeypatch.setattr(procs, "probe", lambda p, ip: True)
    st = PodState("default", "web", "u1", "10.0.0.2", "pod-default-web", "veth1",
                  pid=4242, phase="Running", ready=True)  # fmt: skip
    spec = PodSpec("default", "web", "u1", ("sleep",), grace_s=30,
                   readiness=procs.Probe("tcp", 80))  # fmt: skip
    assert manager.check_ready(spec, st) and not st.ready
