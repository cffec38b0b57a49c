"""The gratuitous ARP a new bridged pod sends, decoded by scapy."""

from __future__ import annotations

from scapy.layers.l2 import ARP, Ether

from harness.cni.links import garp_frame


def test_a_gratuitous_arp_asks_for_its_own_address_to_everyone() -> None:
    pkt = Ether(garp_frame("0a:58:0a:f4:01:02", "10.244.1.2"))
    assert pkt.dst == "ff:ff:ff:ff:ff:ff" and pkt.src == "0a:58:0a:f4:01:02"
    arp = pkt[ARP]
    assert (arp.op, arp.psrc, arp.pdst, arp.hwsrc) == (1, "10.244.1.2", "10.244.1.2",
                                                        "0a:58:0a:f4:01:02")  # fmt: skip
    assert (
        arp.hwdst == "00:00:00:00:00:00" and len(garp_frame("0a:58:0a:f4:01:02", "1.2.3.4")) == 42
    )
