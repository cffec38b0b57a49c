"""The seeds' order verdict of harness/conformance/order.py (pure: no lab)."""

from __future__ import annotations

from harness.conformance.order import holds, verdict


def test_approx_is_within_a_fraction_of_the_larger() -> None:
    assert holds(0.95, "≈", 1.0, 0.10)
    assert not holds(0.85, "≈", 1.0, 0.10)
    assert holds(1.0, ">", 0.99, 0.10)
    assert not holds(0.99, ">", 0.99, 0.10)


def test_order_counts_rounds_held_and_judged() -> None:
    seeds = {"host": 1.0, "bgp": 0.9, "ipip": 0.85, "vxlan": 0.7, "udp": 0.2}
    flipped = {"host": 1.0, "bgp": 1.05, "ipip": 0.5, "vxlan": 0.6}  # no udp this round
    got = verdict([seeds, flipped])
    assert got == [
        ("host > bgp", 1, 2),
        ("bgp ≈ ipip", 1, 2),
        ("ipip > vxlan", 1, 2),
        ("vxlan > udp", 1, 1),
    ]
