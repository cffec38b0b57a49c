"""``wg show dump`` parsing and ``wg set`` argv building, on dumps from a real wireguard-go.

The dumps under data/wireguard/ were captured from wireguard-go v0.0.20220316 in a
throwaway namespace; the private key column was replaced before saving (the
parser must not keep it anyway).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from harness.agent import wireguard as wg

DATA = Path(__file__).parent / "data" / "wireguard"
A = ipaddress.IPv4Address
N = ipaddress.IPv4Network


def dump(name: str) -> str:
    return (DATA / name).read_text()


def test_dump_with_an_active_peer() -> None:
    st = wg.parse_dump(dump("dump_one_peer.txt"))
    assert (st.public_key, st.listen_port, st.fwmark) == (
        "yqV5ZxlljmU5O6Ccv+eIkoY19RMwB/UUHKPQrv5ezX0=",
        51820,
        0,
    )
    (peer,) = st.peers
    assert peer.endpoint == (A("10.198.0.2"), 51820)
    assert peer.allowed_ips == (N("10.244.2.0/24"),)
    assert peer.latest_handshake_s > 0 and peer.rx_bytes == 476 and peer.tx_bytes == 532
    assert peer.persistent_keepalive_s == 0
    assert peer.spec() == wg.PeerSpec(
        peer.public_key, (A("10.198.0.2"), 51820), (N("10.244.2.0/24"),)
    )


def test_private_key_is_not_kept() -> None:
    st = wg.parse_dump(dump("dump_one_peer.txt"))
    assert "REDACTED" not in repr(st)


def test_dump_with_fresh_peers_fwmark_and_keepalive() -> None:
    st = wg.parse_dump(dump("dump_fresh_peers.txt"))
    assert (st.listen_port, st.fwmark) == (51999, 0x1234)
    first, second = st.peers
    assert first.allowed_ips == (N("10.244.3.0/24"), N("10.244.4.0/24"))
    assert (first.endpoint, first.latest_handshake_s, first.persistent_keepalive_s) == (None, 0, 25)
    assert first.spec() is None  # no endpoint: not something the agent would have set
    assert second.allowed_ips == ()


@pytest.mark.parametrize("bad", ["", "just one line\n", "a\tb\tc\td\nx\ty\n"])
def test_not_a_dump(bad: str) -> None:
    with pytest.raises(ValueError, match="not a wg dump"):
        wg.parse_dump(bad)


def test_set_argv_removes_then_sets_sorted() -> None:
    peers = [
        wg.PeerSpec("KEYB=", (A("10.0.0.3"), 51820), (N("10.244.3.0/24"),)),
        wg.PeerSpec("KEYA=", (A("10.0.0.2"), 51821), (N("10.244.9.0/24"), N("10.244.2.0/24"))),
    ]
    assert wg.set_argv("wg-x", ["OLD="], peers) == [
        "wg",
        "set",
        "wg-x",
        "peer",
        "OLD=",
        "remove",
        "peer",
        "KEYA=",
        "endpoint",
        "10.0.0.2:51821",
        "allowed-ips",
        "10.244.2.0/24,10.244.9.0/24",
        "peer",
        "KEYB=",
        "endpoint",
        "10.0.0.3:51820",
        "allowed-ips",
        "10.244.3.0/24",
    ]


def test_interface_names_are_short_stable_and_distinct() -> None:
    names = {wg.iface_name(f"c1-w{i}") for i in range(50)}
    assert len(names) == 50
    assert all(len(n) <= 15 and n.startswith("wg-") for n in names)
    assert wg.iface_name("c1-w1") == wg.iface_name("c1-w1")


def test_mtu_table() -> None:
    assert wg.mtu_for(1500) == 1440  # bgp / host-gw + WireGuard
    assert wg.mtu_for(1500, mode_overhead=50) == 1390  # vxlan + WireGuard
