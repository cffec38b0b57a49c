"""How many nftables base chains a packet passes in a node: the per-packet part of netfilter.

A base chain costs something for every packet that reaches its hook, whether a
rule matches or not (one ``nft_do_chain`` call, then each rule's expressions
until one fails). On a veth path a TCP flow moves in GSO packets of ~60 KB, so
what netfilter adds is counted per packet rather than per byte, and a mode that
sends each packet through more hooks (an encapsulating mode: the outer packet's
output/input hooks, the inner packet's second prerouting) pays more per byte for
the same conntrack. ``counter_commands`` puts a counting rule at the top of every
base chain, ``passes`` reads what they counted, ``removal_commands`` takes them
away again (by handle): ``bench/bench_handbuilt.py --passes`` divides the counts by
the packets of one iperf3 flow (docs/throughput.md, "What costs").
"""

from __future__ import annotations

from typing import Any

COMMENT = "podlab-bench-pass"


def _base_chains(ruleset: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        item["chain"]
        for item in ruleset.get("nftables", [])
        if "chain" in item and "hook" in item["chain"]
    ]


def _name(family: str, table: str, chain: str) -> str:
    return f"{family} {table} {chain}"


def counter_commands(ruleset: dict[str, Any]) -> list[str]:
    """``nft -f`` lines inserting a counting rule first in every base chain of ``ruleset``.

    ``ruleset`` is ``nft -j list ruleset`` parsed. Chains that already have one
    (from an earlier call) get no second.
    """
    have = {label for label, _, _ in _counting_rules(ruleset)}
    return [
        f'insert rule {c["family"]} {c["table"]} {c["name"]} counter comment "{COMMENT}"'
        for c in _base_chains(ruleset)
        if _name(c["family"], c["table"], c["name"]) not in have
    ]


def _counting_rules(ruleset: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(chain label, rule handle, packets) of each counting rule in ``ruleset``."""
    out = []
    for item in ruleset.get("nftables", []):
        rule = item.get("rule")
        if not rule or rule.get("comment") != COMMENT:
            continue
        packets = next((e["counter"]["packets"] for e in rule["expr"] if "counter" in e), 0)
        out.append((_name(rule["family"], rule["table"], rule["chain"]), rule["handle"], packets))
    return out


def passes(ruleset: dict[str, Any]) -> dict[str, int]:
    """Packets counted per base chain (``"<family> <table> <chain> (<hook>)"``)."""
    hooks = {_name(c["family"], c["table"], c["name"]): c["hook"] for c in _base_chains(ruleset)}
    return {f"{label} ({hooks.get(label, '?')})": n for label, _, n in _counting_rules(ruleset)}


def per_packet(counted: dict[str, int], packets: int) -> tuple[float, str]:
    """Chain passes per packet of a flow: the total, and each chain that counted any."""
    detail = ", ".join(f"{k} {v / packets:.2f}" for k, v in sorted(counted.items()) if v)
    return sum(counted.values()) / packets, detail


def removal_commands(ruleset: dict[str, Any]) -> list[str]:
    """``nft -f`` lines deleting the counting rules again."""
    out = []
    for label, handle, _ in _counting_rules(ruleset):
        family, table, chain = label.split(" ")
        out.append(f"delete rule {family} {table} {chain} handle {handle}")
    return out
