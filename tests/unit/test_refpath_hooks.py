"""Counting base-chain passes: which rules go in, what is read back, what is removed."""

from __future__ import annotations

from typing import Any

from harness.refpath import hooks


def _chain(family: str, table: str, name: str, hook: str | None = None) -> dict[str, Any]:
    chain: dict[str, Any] = {"family": family, "table": table, "name": name, "handle": 1}
    if hook:
        chain.update({"type": "filter", "hook": hook, "prio": 0, "policy": "accept"})
    return {"chain": chain}


def _counter(family: str, table: str, chain: str, handle: int, packets: int) -> dict[str, Any]:
    return {
        "rule": {
            "family": family,
            "table": table,
            "chain": chain,
            "handle": handle,
            "comment": hooks.COMMENT,
            "expr": [{"counter": {"packets": packets, "bytes": packets * 100}}],
        }
    }


# shaped as `nft -j list ruleset` prints it (nft 1.0.6)
RULESET: dict[str, Any] = {
    "nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "podlab", "handle": 1}},
        _chain("ip", "podlab", "raw-prerouting", "prerouting"),
        _chain("ip", "podlab", "helper"),  # a regular chain: no hook, no counter
        _chain("inet", "podlab-policy", "forward", "forward"),
        _chain("netdev", "podlab-underlay", "raw-ingress", "ingress"),  # a device's hook
        {
            "rule": {
                "family": "ip",
                "table": "podlab",
                "chain": "helper",
                "handle": 3,
                "expr": [{"counter": {"packets": 7, "bytes": 700}}],  # not ours
            }
        },
    ]
}


def test_a_counting_rule_goes_first_in_every_base_chain_only() -> None:
    assert hooks.counter_commands(RULESET) == [
        f'insert rule ip podlab raw-prerouting counter comment "{hooks.COMMENT}"',
        f'insert rule inet podlab-policy forward counter comment "{hooks.COMMENT}"',
        f'insert rule netdev podlab-underlay raw-ingress counter comment "{hooks.COMMENT}"',
    ]
    assert hooks.passes(RULESET) == {}
    assert hooks.removal_commands(RULESET) == []


def test_counts_are_read_per_chain_and_removed_by_handle() -> None:
    counted = {
        "nftables": [
            *RULESET["nftables"],
            _counter("ip", "podlab", "raw-prerouting", 9, 3000),
            _counter("inet", "podlab-policy", "forward", 11, 1500),
            _counter("netdev", "podlab-underlay", "raw-ingress", 4, 700),
        ]
    }
    assert hooks.passes(counted) == {
        "ip podlab raw-prerouting (prerouting)": 3000,
        "inet podlab-policy forward (forward)": 1500,
        "netdev podlab-underlay raw-ingress (ingress)": 700,
    }
    assert hooks.removal_commands(counted) == [
        "delete rule ip podlab raw-prerouting handle 9",
        "delete rule inet podlab-policy forward handle 11",
        "delete rule netdev podlab-underlay raw-ingress handle 4",
    ]
    assert hooks.counter_commands(counted) == []  # no second counter in a chain
