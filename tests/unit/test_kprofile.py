"""The profile folding of bench_mesh_throughput --profile: kernel functions into families."""

from __future__ import annotations

from collections import Counter

import pytest

from harness.probes import kprofile


@pytest.mark.parametrize(
    ("symbol", "want"),
    [
        ("csum_partial_copy_generic", "checksum"),  # a copy that checksums is checksum work
        ("ipv4_conntrack_in", "netfilter"),
        ("nft_do_chain", "netfilter"),
        ("__nf_conntrack_find_get", "netfilter"),
        ("br_nf_pre_routing", "netfilter"),
        ("vxlan_xmit_one", "vxlan/udp"),
        ("udp_tunnel_xmit_skb", "vxlan/udp"),
        ("br_handle_frame", "bridge"),
        ("veth_xmit", "veth"),
        ("_copy_to_iter", "copy"),
        ("rep_movs_alternative", "copy"),
        ("skb_segment", "gro/gso"),
        ("tcp_sendmsg_locked", "tcp"),
        ("ip_finish_output2", "ip/route/dev"),
        ("fib_table_lookup", "ip/route/dev"),
        ("kmem_cache_alloc_node", "memory/skb"),
        ("_raw_spin_lock", "locks/sched/syscall"),
        ("mystery_function", kprofile.OTHER),
    ],
)
def test_kernel_functions_fold_into_their_family(symbol: str, want: str) -> None:
    assert kprofile.family(symbol) == want


def test_a_report_keeps_the_flows_commands_and_separates_user_space() -> None:
    text = "\n".join(
        [
            "# Samples: 10",
            " 5          |iperf3         |[k] _copy_to_iter",
            " 3          |iperf3         |[.] iperf_run",
            " 2          |iperf3         |[k] nft_do_chain",
            " 7          |sshd           |[k] _copy_to_iter",
            "",
        ]
    )
    got = kprofile.parse_report(text, ("iperf3",))
    assert got == Counter({"_copy_to_iter": 5, "[user]": 3, "nft_do_chain": 2})
    assert kprofile.by_family(got) == Counter({"copy": 5, "user": 3, "netfilter": 2})
    prof = kprofile.Profile(got, hz=1000)
    assert prof.ms(5) == 5.0
