"""Quantities, int-or-percent and the kubelet's cgroup arithmetic, against apimachinery's
and the kubelet's own examples."""

from __future__ import annotations

import pytest

from harness.kube import intstr, resources
from harness.kube.quantity import Quantity, QuantityError


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("500m", "500m"),
        ("0.5", "500m"),
        (0.25, "250m"),
        (2, "2"),
        ("1500m", "1500m"),
        ("2000m", "2"),
        ("128Mi", "128Mi"),
        ("1024Mi", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("100000", "100k"),
        ("1e3", "1e3"),
        ("0.0001", "100u"),
        ("512", "512"),  # binary values under 1Ki print as decimal
        ("0", "0"),
        ("1Ki", "1Ki"),
    ],
)
def test_canonical_text(text: object, canonical: str) -> None:
    assert str(Quantity.parse(text)) == canonical


@pytest.mark.parametrize("bad", ["", "cpu", "1.5.3", "1 Gi", True, None, "--1"])
def test_not_a_quantity(bad: object) -> None:
    with pytest.raises(QuantityError):
        Quantity.parse(bad)


def test_values_and_sums_keep_the_left_format() -> None:
    cpu = Quantity.parse("250m")
    assert cpu.milli_value() == 250 and Quantity.parse("0.0001").milli_value() == 1
    assert Quantity.parse("1Gi").int_value() == 1073741824
    assert str(Quantity.parse("128Mi") + Quantity.parse("128Mi")) == "256Mi"
    assert str(cpu + Quantity.parse("1")) == "1250m"
    assert Quantity.parse("1Gi").same(Quantity.parse("1073741824"))
    assert Quantity.parse("1") > Quantity.parse("999m")


@pytest.mark.parametrize(
    ("value", "total", "up", "want"),
    [
        ("25%", 10, True, 3),
        ("25%", 10, False, 2),
        ("25%", 1, True, 1),
        ("25%", 3, False, 0),
        (2, 9, True, 2),
    ],
)
def test_scaled_int_or_percent(value: int | str, total: int, up: bool, want: int) -> None:
    assert intstr.scaled(value, total, up) == want


def test_int_or_percent_as_go_prints_it() -> None:
    assert intstr.go_repr(0) == 'intstr.IntOrString{Type:0, IntVal:0, StrVal:""}'
    assert intstr.go_repr("0%") == 'intstr.IntOrString{Type:1, IntVal:0, StrVal:"0%"}'
    with pytest.raises(ValueError, match="invalid value"):
        intstr.scaled("25", 4, True)


def test_kubelet_cpu_arithmetic() -> None:
    # MilliCPUToShares: 0 → 2, 1m → 2 (minimum), 250m → 256, 1 CPU → 1024
    assert [resources.cpu_shares(m) for m in (None, 1, 250, 1000)] == [2, 2, 256, 1024]
    # runc's shares → weight: 2 → 1, 1024 → 39, 262144 → 10000
    assert [resources.cpu_weight(s) for s in (2, 1024, 262144)] == [1, 39, 10000]
    # MilliCPUToQuota with the 100 ms period: 500m → 50 ms, 1m → the 1 ms minimum
    assert resources.cpu_quota_us(500) == 50_000
    assert resources.cpu_quota_us(1) == 1_000
    assert resources.cpu_quota_us(None) is None


def test_limits_default_requests_and_qos() -> None:
    only_limit = {
        "spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}
    }
    assert {k: str(v) for k, v in resources.pod_requests(only_limit).items()} == {
        "cpu": "1",
        "memory": "1Gi",
    }
    assert resources.qos_class(only_limit) == "Guaranteed"
    burst = {"spec": {"containers": [{"resources": {"requests": {"cpu": "100m"}}}]}}
    assert resources.qos_class(burst) == "Burstable"
    assert resources.qos_class({"spec": {"containers": [{}]}}) == "BestEffort"
