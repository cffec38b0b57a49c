"""The ipvs proxy's pure parts: desired servers, ``ipvsadm -Sn`` parsing, the
restore diff, the ipset document and the constant chains.

The kernel side (virtual servers really forwarding, persistence, rejects) runs
in the VM integration test, since this host's kernel has no IPVS; here the
refusal on such a kernel is checked against the real host.
"""

from __future__ import annotations

import os

import pytest

from harness.agent.proxy import ipvs
from harness.agent.proxy.model import Endpoint, ServicePort
from harness.lab import preflight, sysns

WEB = ServicePort(
    "default", "web", "", "tcp", "10.96.0.20", 80, node_port=30080,
    endpoints=(Endpoint("10.244.1.2", 8080), Endpoint("10.244.2.2", 8080)),
)  # fmt: skip
STICKY = ServicePort(
    "default", "sticky", "", "udp", "10.96.0.21", 53, affinity_s=20,
    endpoints=(Endpoint("10.244.1.3", 5353),),
)  # fmt: skip
EMPTY = ServicePort("default", "none", "", "tcp", "10.96.0.22", 81, node_port=30081)

SAVED = """-A -t 10.96.0.20:80 -s rr
-a -t 10.96.0.20:80 -r 10.244.1.2:8080 -m -w 1
-a -t 10.96.0.20:80 -r 10.244.9.9:8080 -m -w 1
-A -t 10.96.0.99:80 -s rr
-a -t 10.96.0.99:80 -r 10.244.1.7:80 -m -w 1
-A -u 10.96.0.21:53 -s rr -p 20
"""


def test_desired_servers_cover_cluster_ips_and_node_ports_but_not_empty_services() -> None:
    vss, rss = ipvs.desired([WEB, STICKY, EMPTY], ["10.100.0.1", "172.29.0.2"], "rr")
    assert {v.addr for v in vss} == {
        "10.96.0.20:80", "10.100.0.1:30080", "172.29.0.2:30080", "10.96.0.21:53",
    }  # fmt: skip
    assert ipvs.VirtualServer("udp", "10.96.0.21:53", "rr", 20) in vss  # affinity = persistence
    assert len(rss) == 3 * 2 + 1


def test_saved_state_parses_and_the_diff_touches_only_what_changed() -> None:
    have = ipvs.parse_saved(SAVED)
    assert ipvs.VirtualServer("udp", "10.96.0.21:53", "rr", 20) in have[0]
    want = ipvs.desired([WEB, STICKY], [], "rr")
    lines = ipvs.restore_commands(have, want)
    assert lines == [
        "-D -t 10.96.0.99:80",  # a removed service: its reals go with it
        "-d -t 10.96.0.20:80 -r 10.244.9.9:8080",
        "-a -t 10.96.0.20:80 -r 10.244.2.2:8080 -m -w 1",
        "-a -u 10.96.0.21:53 -r 10.244.1.3:5353 -m -w 1",
    ]
    assert ipvs.restore_commands(want, want) == []
    other = ipvs.desired([WEB], [], "sh")
    assert "-E -t 10.96.0.20:80 -s sh" in ipvs.restore_commands(want, other)


LISTED = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.20:80 rr
  -> 10.244.1.2:8080              Masq    1      0          0
  -> 10.244.9.9:8080              Masq    1      1          3
UDP  10.96.0.21:53 rr persistent 20
  -> 10.244.1.3:5353              Masq    1      0          2
"""


def test_a_removed_tcp_endpoint_with_connections_drains_at_weight_0() -> None:
    conns = ipvs.parse_connections(LISTED)
    assert conns == {
        ("tcp", "10.96.0.20:80", "10.244.1.2:8080"): 0,
        ("tcp", "10.96.0.20:80", "10.244.9.9:8080"): 4,
        ("udp", "10.96.0.21:53", "10.244.1.3:5353"): 2,
    }
    have = ipvs.parse_saved(SAVED)
    want = ipvs.desired([WEB, STICKY], [], "rr")
    gone = ("tcp", "10.96.0.20:80", "10.244.9.9:8080")
    lines = ipvs.restore_commands(have, want, frozenset({gone}))
    assert "-e -t 10.96.0.20:80 -r 10.244.9.9:8080 -m -w 0" in lines
    assert not any(line.startswith("-d ") for line in lines)
    at_0 = {ipvs.RealServer(*gone, 0) if r.key == gone else r for r in have[1]}
    drained = (have[0], at_0)
    again = ipvs.restore_commands(drained, want, frozenset({gone}))
    assert not any("10.244.9.9" in line for line in again)  # already at 0: nothing to do


def test_draining_ends_with_the_connections_or_after_its_bound(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The proxy's rule, with ``ipvsadm -Ln`` answered here (this host has no IPVS)."""
    proxy = ipvs.IpvsProxy.__new__(ipvs.IpvsProxy)
    proxy.netns, proxy.draining = None, {}
    listed = [LISTED]
    monkeypatch.setattr(ipvs, "run", lambda *a, **k: type("R", (), {"stdout": listed[0]})())
    clock = [1000.0]
    monkeypatch.setattr(ipvs.time, "monotonic", lambda: clock[0])
    have = ipvs.parse_saved(SAVED)
    want = ipvs.desired([WEB, STICKY], [], "rr")
    gone = ("tcp", "10.96.0.20:80", "10.244.9.9:8080")
    assert proxy._drain(have, want) == {gone}  # 4 connections: kept at weight 0
    clock[0] += ipvs.DRAIN_MAX_S
    assert proxy._drain(have, want) == set()  # past the bound: deleted, connections or not
    proxy.draining = {}
    listed[0] = LISTED.replace("1      1          3", "0      0          0")
    assert proxy._drain(have, want) == set()  # no connection left: deleted


def test_ipsets_drive_masquerade_and_rejects() -> None:
    doc = ipvs.ipset_document([WEB, STICKY, EMPTY])
    assert "add PODLAB-CLUSTER-IP-new 10.96.0.20,tcp:80" in doc
    assert "add PODLAB-LOOP-BACK-new 10.244.1.2,tcp:8080,10.244.1.2" in doc
    assert "add PODLAB-NODE-PORT-TCP-new 30080" in doc
    assert "add PODLAB-NO-EP-new 10.96.0.22,tcp:81" in doc
    assert "add PODLAB-NO-EP-NP-TCP-new 30081" in doc
    assert "10.96.0.22" not in doc.split("PODLAB-CLUSTER-IP-new")[1].split("swap")[0]
    assert doc.count("swap ") == len(ipvs.SETS)
    rules = ipvs.iptables_document("10.244.0.0/16")
    assert "! -s 10.244.0.0/16 -m set --match-set PODLAB-CLUSTER-IP dst,dst" in rules
    assert "--match-set PODLAB-NO-EP dst,dst -j REJECT --reject-with tcp-reset" in rules


def test_unknown_scheduler_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown IPVS scheduler 'fast'"):
        ipvs.IpvsProxy("10.96.0.0/16", scheduler="fast")


@pytest.mark.root
def test_host_kernel_without_ipvs_refuses_the_mode_with_the_reason() -> None:
    check = preflight.ipvs_available()
    if check.ok:
        pytest.skip("this kernel has IPVS: nothing to refuse here")
    name = f"podlab-t-ipvs-{os.getpid()}"
    sysns.create_netns(name)
    try:
        with pytest.raises(ipvs.IpvsUnavailable, match="needs the kernel's IPVS"):
            ipvs.IpvsProxy("10.96.0.0/16", netns=name)
    finally:
        sysns.remove_netns(name)
    assert "no kernel IPVS" in check.detail
