"""The results model refuses numbers without units and files it would misread."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from harness.results.model import (
    SCENARIOS,
    Check,
    Environment,
    Measurement,
    RunResults,
    base_mode,
    judge,
)

ENV = Environment(kernel="6.1.0", cpu_count=2)


def _m(**kw: object) -> Measurement:
    base: dict[str, object] = {"name": "throughput_bps", "value": 1e9, "unit": "bps"}
    base.update(mode="vxlan", topology="t")
    base.update(kw)
    return Measurement.model_validate(base)


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("throughput_bps", "bps"),
        ("latency_p99_s", "s"),
        ("ratio_to_underlay", "ratio"),
        ("pod_mtu_bytes", "bytes"),
        ("retransmits_count", "count"),
        ("cpu_sender_cores", "cores"),
    ],
)
def test_names_carry_their_unit(name: str, unit: str) -> None:
    assert _m(name=name, unit=unit).unit == unit


@pytest.mark.parametrize(
    ("name", "unit", "why"),
    [
        ("throughput", "bps", "must end with its unit"),
        ("latency_p99_ms", "s", "must end with its unit"),
        ("throughput_gbps", "gbps", "is not one of"),
        ("to_underlay", "ratio", "must contain 'ratio'"),
        ("Throughput_bps", "bps", "snake_case"),
    ],
)
def test_names_without_their_unit_are_refused(name: str, unit: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        _m(name=name, unit=unit)


def test_passed_must_agree_with_the_threshold() -> None:
    with pytest.raises(ValidationError, match="contradicts"):
        _m(name="pod_ready_p99_s", unit="s", value=6.0, threshold=5.0, passed=True)
    ok = _m(name="pod_ready_p99_s", unit="s", value=6.0, threshold=5.0, passed=False)
    assert ok.passed is False


def test_judge_both_directions() -> None:
    assert judge(4.9, 5.0, "<=") and not judge(5.1, 5.0, "<=")
    assert judge(0.6, 0.5, ">=") and not judge(0.4, 0.5, ">=")


def test_scenario_numbers_and_outcomes_are_bounded() -> None:
    assert sorted(SCENARIOS) == list(range(1, 31))  # the titles of version 1 files
    assert Check(scenario=37, name="x", mode="vm", outcome="not-applicable").scenario == 37
    with pytest.raises(ValidationError):
        Check(scenario=0, name="x", mode="vxlan", outcome="passed")
    with pytest.raises(ValidationError):
        Check(scenario=100, name="x", mode="vxlan", outcome="passed")
    with pytest.raises(ValidationError):
        Check(scenario=1, name="x", mode="vxlan", outcome="flaky")  # type: ignore[arg-type]


def test_unknown_keys_and_versions_are_refused() -> None:
    doc = {
        "schema_version": 1,
        "run_id": "r",
        "started_at": datetime(2026, 1, 1, tzinfo=UTC),
        "topology": "t",
        "environment": ENV,
    }
    assert RunResults.model_validate(doc).run_id == "r"  # version 1 is read as it is
    assert RunResults.model_validate({**doc, "schema_version": 2}).plan is None
    with pytest.raises(ValidationError, match="schema_version 3"):
        RunResults.model_validate({**doc, "schema_version": 3})
    with pytest.raises(ValidationError, match="Extra inputs"):
        RunResults.model_validate({**doc, "surprise": 1})


def test_base_mode_strips_encryption() -> None:
    assert base_mode("vxlan+wireguard") == "vxlan"
    assert _m(mode="bgp+wireguard").base_mode == "bgp"
