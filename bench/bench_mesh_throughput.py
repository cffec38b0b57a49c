"""Cross-cluster TCP throughput of a cluster mesh against the node→node path across the
same router, in interleaved rotated rounds, with the paths that tell what costs.

``.venv/bin/python bench/bench_mesh_throughput.py --lab LAB [--rounds 10] [--seconds 3]
[--no-ablations | --ablate notrack,veth-gro,nonft,brnf] [--handbuilt] [--profile N] [--passes]``

LAB is a deployed lab with two clusters in one mesh and a router between them
(a renamed copy of topologies/two-clusters; `podlab deploy LAB --mode bgp` for
native routing). One echo pod on a worker of each cluster; every round runs, in
an order rotated round by round (harness/conformance/meshtput.py):

- ``node-node``: node of A → node of B over the underlay (the goal's reference);
- ``pod-pod``: pod of A → pod of B (the mesh path: vxlan.mesh, or BGP routes);
- ``pod-node``: pod of A → node of B (the pod's veth and masquerade, no tunnel);
- ``node-pod``: node of A → pod of B (the tunnel or route and B's pod veth, no
  client veth);
- tunnel meshes, unless ``--no-ablations``: a path again with one setting changed
  on both nodes for that run only (``ABLATIONS``, ``ABLATED``): ``pod-pod+notrack``,
  the mesh VXLAN's outer packets (UDP 8473) out of conntrack (an nftables table
  ``podlab-bench``); ``pod-pod+veth-gro`` and ``node-node+veth-gro``, GRO on the
  nodes' underlay veths (off by default on veth, on by default on NICs);
  ``pod-pod+nonft``, every nftables table of both nodes flushed for the run (and
  with them conntrack; put back after it); ``pod-pod+brnf``, bridge-nf off
  (``net.bridge.bridge-nf-call-iptables=0``). ``--ablate`` picks them (default
  ``notrack,veth-gro``);
- with ``--handbuilt``: the same cross-cluster tunnel built by hand on this host
  (``harness.refpath``, ``spec.mesh_tunnel_reference``: flannel's bridged pods, a
  bare VXLAN device with the mesh's VNI and port, two segments joined by a router
  namespace; no agent, no nftables), ``hb-pod-pod``, and its own node→node across
  its router, ``hb-node-node``: ``pod-pod ÷ hb-pod-pod`` is what the agent adds,
  ``hb-pod-pod ÷ hb-node-node`` what any VXLAN tunnel costs across a router on
  this kernel (the physical limit of tunnel routing).

``--profile N`` then runs N more rotated rounds of each path under ``perf record -a`` and prints
where the iperf3 processes' CPU went (``harness.probes.kprofile``: kernel
functions folded into copy, checksum, netfilter, VXLAN/UDP, bridge, veth, …),
in ms of CPU per Gbit received, and the functions that differ most between
pod-pod and node-node.

Prints each series' median and CV and each path's ratio to node-node (ratio of
medians, and the median of the per-round ratios, which a slow drift of the
machine does not move), and its **cost**: CPU cores of both iperf3 ends per
Gbit/s (on a veth path the kernel's forwarding, encapsulation and netfilter work
runs in their contexts) ÷ node-node's, which varies far less than throughput on
a busy machine. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.conformance import labctl, meshtput, remote
from harness.conformance.pods import PodFactory
from harness.conformance.suites.test_mesh import mesh_pair
from harness.probes import iperf3, kprofile
from harness.refpath import build, hooks, rounds
from harness.refpath import spec as refspec

NOTRACK = (
    "table inet podlab-bench {\n"
    "  chain pre { type filter hook prerouting priority raw; udp dport 8473 notrack; }\n"
    "  chain out { type filter hook output priority raw; udp dport 8473 notrack; }\n"
    "}\n"
)
VENV_PY = "/opt/podlab/venv/bin/python"  # the agent's venv (pyroute2's ethtool; no ethtool here)


def _gro(on: bool) -> list[str]:
    code = (
        "from pyroute2.ethtool import Ethtool; import sys; e = Ethtool(); d = sys.argv[1]; "
        "f = e.get_features(d); f.features['rx-gro'].enable = " + str(on) + "; "
        "e.set_features(d, f)"
    )
    return [VENV_PY, "-c", code]


#: pod-pod with one setting changed on both nodes around the run: (on, off) argv, where
#: ``{dev}`` is the node's underlay interface.
ABLATIONS: dict[str, tuple[list[str], list[str]]] = {
    # the mesh VXLAN's outer packets out of conntrack (nft hooks on the path)
    "notrack": (
        ["sh", "-c", f"printf %s {shlex.quote(NOTRACK)} | nft -f -"],
        ["nft", "delete", "table", "inet", "podlab-bench"],
    ),
    # GRO on the underlay veth (off by default): outer packets coalesced on receive
    "veth-gro": ([*_gro(True), "{dev}"], [*_gro(False), "{dev}"]),
    # no nftables at all (and so no conntrack): the ruleset saved per node, put back after
    "nonft": (
        ["sh", "-c", "nft list ruleset > /tmp/podlab-bench-{node}.nft && nft flush ruleset"],
        [
            "sh",
            "-c",
            "nft flush ruleset; nft -f /tmp/podlab-bench-{node}.nft && "
            "rm -f /tmp/podlab-bench-{node}.nft",
        ],
    ),
    # bridge-nf off: cni0's frames no longer handed to the IPv4 hooks
    "brnf": (
        ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"],
        ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"],
    ),
}
#: which paths run again with which setting (the baseline too where the setting is the wire's)
ABLATED = (
    ("pod-pod", "notrack"),
    ("pod-pod", "veth-gro"),
    ("node-node", "veth-gro"),
    ("pod-pod", "nonft"),
    ("pod-pod", "brnf"),
)
HB_PORT = 5590  # + 0 pod b, + 1 node b of the hand-built reference (its own namespaces)


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[0]


def _eth_packets(n: remote.Node) -> int:
    link = json.loads(n.check(["ip", "-s", "-j", "link", "show", n.underlay_if]).stdout)[0]
    return int(link["stats64"]["rx"]["packets"]) + int(link["stats64"]["tx"]["packets"])


def _nft_input(n: remote.Node, lines: list[str]) -> None:
    if lines:
        n.check(["sh", "-c", 'printf "%s" "$1" | nft -f -', "sh", "".join(x + "\n" for x in lines)])


def _passes(t: meshtput.Target, ends: tuple[remote.Node, remote.Node], seconds: int) -> str:
    """nftables base chains passed per packet of one flow on each node: a counting rule
    first in every base chain for one run, divided by the packets the server node's
    underlay interface carried meanwhile (data and ACKs; GSO packets count once)."""

    def ruleset(n: remote.Node) -> dict[str, Any]:
        return dict(json.loads(n.check(["nft", "-j", "list", "ruleset"]).stdout))

    for n in ends:
        _nft_input(n, hooks.counter_commands(ruleset(n)))
    try:
        before = _eth_packets(ends[1])
        meshtput.iperf_run(t, seconds)
        packets = max(_eth_packets(ends[1]) - before, 1)
    finally:
        counted = {}
        for n in ends:
            rs = ruleset(n)
            counted[n.name] = hooks.passes(rs)
            _nft_input(n, hooks.removal_commands(rs))
    parts = []
    for node, c in counted.items():
        total, detail = hooks.per_packet(c, packets)
        parts.append(f"  {node}: {total:.2f} ({detail})")
    return "\n".join([f"chain passes per packet, {t.name} ({packets} packets):", *parts])


def _print_profiles(profiles: dict[str, tuple[kprofile.Profile, float]]) -> None:
    """Per family, ms of the flow's CPU per Gbit received; then the functions that
    differ most between pod-pod and node-node (and between pod-pod and hb-pod-pod)."""
    names = list(profiles)
    fams = {n: p.families() for n, (p, _) in profiles.items()}
    gbit = {n: g for n, (_, g) in profiles.items()}
    order = [f for f, _ in kprofile.FAMILIES] + [kprofile.OTHER, "user"]
    print("\nprofile: ms of iperf3 CPU (both ends, kernel + user) per Gbit received")
    print(f"{'family':20}" + "".join(f"{n:>14}" for n in names))
    for fam in [*order, "total"]:
        row = []
        for n in names:
            p = profiles[n][0]
            got = sum(fams[n].values()) if fam == "total" else fams[n].get(fam, 0)
            row.append(f"{p.ms(got) / gbit[n]:14.1f}")
        print(f"{fam:20}" + "".join(row))
    print(f"{'lost samples':20}" + "".join(f"{profiles[n][0].lost:14}" for n in names))
    for a, b in (
        ("pod-pod", "node-node"),
        ("pod-pod", "hb-pod-pod"),
        ("hb-pod-pod", "hb-node-node"),
    ):
        if a not in profiles or b not in profiles:
            continue
        pa, pb = profiles[a][0], profiles[b][0]
        syms = set(pa.symbols) | set(pb.symbols)
        delta = {
            s: pa.ms(pa.symbols.get(s, 0)) / gbit[a] - pb.ms(pb.symbols.get(s, 0)) / gbit[b]
            for s in syms
        }
        top = sorted(delta.items(), key=lambda kv: -abs(kv[1]))[:15]
        print(f"\n{a} − {b}, ms per Gbit, the 15 functions that differ most:")
        for sym, d in top:
            print(f"  {d:+7.2f}  {sym}  ({kprofile.family(sym) if sym != '[user]' else 'user'})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument(
        "--ablate",
        default="notrack,veth-gro",
        help=f"tunnel meshes: settings changed for a run of their own ({','.join(ABLATIONS)})",
    )
    ap.add_argument(
        "--paths",
        default="node-node,pod-pod,pod-node,node-pod",
        help="the lab's paths to measure (node-node is always one: the reference)",
    )
    ap.add_argument(
        "--handbuilt",
        action="store_true",
        help="also the cross-cluster tunnel built by hand here, and its node→node",
    )
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="then N more rotated rounds of each path under perf record -a, summed",
    )
    ap.add_argument(
        "--passes",
        action="store_true",
        help="count the nftables base chains each packet of a pod-pod and a node-node flow "
        "passes on both nodes",
    )
    args = ap.parse_args()
    chosen = [a for a in args.ablate.split(",") if a]
    unknown = [a for a in chosen if a not in ABLATIONS]
    if unknown:
        ap.error(f"--ablate {','.join(unknown)}: unknown (settings: {', '.join(ABLATIONS)})")
    lab = labctl.attach(args.lab)
    spec = labctl.current_mode(lab)
    ca, cb = mesh_pair(lab)
    nodes = {
        n: remote.connect(p, lab.ssh_config, lab.lab_dir / "bench-tcm")
        for n, p in lab.plan.nodes.items()
        if n not in lab.plan.bridges
    }
    wa = [n.name for n in lab.cluster_nodes(ca) if n.role == "worker"]
    wb = [n.name for n in lab.cluster_nodes(cb) if n.role == "worker"]
    fa, fb = PodFactory(lab.client(ca), nodes), PodFactory(lab.client(cb), nodes)
    hb_tag = build.new_tag() if args.handbuilt else ""
    try:
        (a,) = fa.create([wa[0]], prefix="tput")
        (b,) = fb.create([wb[0]], prefix="tput")
        na, nb = a.node, b.node
        port = 5600 + (os.getpid() % 40) * 10  # a fresh range per run (servers outlive a crash)
        targets = {
            "node-node": meshtput.Target("node-node", na, nb, None, nb.underlay_ip, port),
            "pod-pod": meshtput.Target("pod-pod", a, nb, b.netns, b.ip, port + 1),
            "pod-node": meshtput.Target("pod-node", a, nb, None, nb.underlay_ip, port + 2),
            "node-pod": meshtput.Target("node-pod", na, nb, b.netns, b.ip, port + 3),
        }
        keep = {"node-node", *args.paths.split(",")}
        targets = {n: t for n, t in targets.items() if n in keep}
        tunnel = spec.mode != "bgp" and spec.encryption == "none"
        ablate = tunnel and not args.no_ablations
        if ablate:
            for i, (path, what) in enumerate(ABLATED, 4):
                if what not in chosen or path not in targets:
                    continue
                base_t = targets[path]
                name = f"{path}+{what}"
                targets[name] = meshtput.Target(
                    name, base_t.client, nb, base_t.netns, base_t.ip, port + i
                )
        lifetime = args.rounds * (len(targets) + 2) * 15 + 300
        meshtput.start_servers(list(targets.values()), lifetime)
        runs: dict[str, Callable[[], iperf3.IperfResult]] = {}
        if hb_tag:
            ref = build.build(refspec.mesh_tunnel_reference(), hb_tag, HB_PORT,
                              lifetime, node_port=HB_PORT + 1)  # fmt: skip
            hb = {
                "hb-node-node": rounds.Target("hb-node-node", ref.nodes[0], ref.node_ip,
                                              ref.node_port),
                "hb-pod-pod": rounds.Target("hb-pod-pod", ref.client_netns, ref.server_ip,
                                            ref.port),
            }  # fmt: skip
            for name, t in hb.items():
                runs[name] = lambda t=t: rounds.iperf_once(t, args.seconds)  # type: ignore[misc]

        def fill(x: str, n: remote.Node) -> str:
            return x.replace("{dev}", n.underlay_if).replace("{node}", n.name)

        def measure(t: meshtput.Target) -> Callable[[], iperf3.IperfResult]:
            def one() -> iperf3.IperfResult:
                what = t.name.partition("+")[2]
                if not what:
                    return meshtput.iperf_run(t, args.seconds)
                on, off = ABLATIONS[what]
                for n in (na, nb):
                    n.check([fill(x, n) for x in on])
                try:
                    return meshtput.iperf_run(t, args.seconds)
                finally:
                    for n in (na, nb):
                        n.run([fill(x, n) for x in off])

            return one

        runs = {**{n: measure(t) for n, t in targets.items()}, **runs}
        before = _load()
        t0 = time.monotonic()
        got = meshtput.interleave(list(runs.items()), args.rounds)
        took = time.monotonic() - t0
        after = _load()
        profiles: dict[str, tuple[kprofile.Profile, float]] = {}

        def profiled(name: str, fn: Callable[[], iperf3.IperfResult]) -> Callable[[], None]:
            def one() -> None:
                prof = kprofile.Profiler(Path(f"/tmp/podlab-bench-{os.getpid()}.perf"))
                prof.start()
                time.sleep(0.3)
                try:
                    res = fn()
                finally:
                    got_p = prof.stop()
                gbit = res.received_bps * res.seconds / 1e9
                old_p, old_g = profiles.get(name, (kprofile.Profile(Counter(), got_p.hz), 0.0))
                merged = kprofile.Profile(
                    old_p.symbols + got_p.symbols, got_p.hz, old_p.lost + got_p.lost
                )
                profiles[name] = (merged, old_g + gbit)

            return one

        if args.profile:
            plain = [(n, profiled(n, fn)) for n, fn in runs.items() if "+" not in n]
            meshtput.interleave(plain, args.profile)
        passes = []
        if args.passes:
            passes = [
                _passes(targets[name], (na, nb), args.seconds)
                for name in ("pod-pod", "node-node", "pod-node", "node-pod")
                if name in targets
            ]
    finally:
        if hb_tag:
            build.teardown(hb_tag)
        fa.delete_all()
        fb.delete_all()
        for n in nodes.values():
            n.close()
    routing = "native" if spec.mode == "bgp" else "tunnel"
    print(f"lab {lab.name}: mode {spec}, {routing} mesh {ca}↔{cb}; {args.rounds} rounds x "
          f"{len(got)} paths x {args.seconds} s in {took:.0f} s; load {before} → {after}; "
          f"pid {os.getpid()}")  # fmt: skip
    bps = {n: tuple(r.received_bps for r in rs) for n, rs in got.items()}
    cpu = {n: tuple(meshtput.cpu_per_gbit(r) for r in rs) for n, rs in got.items()}
    base = meshtput.Series("node-node", bps["node-node"])
    base_cpu = meshtput.Series("node-node", cpu["node-node"])
    print(f"{'path':18} {'median Gbit/s':>13} {'CV':>5} {'ratio':>6} {'per-round':>9} below "
          f"{'cores/Gbit':>10} {'CV':>5} {'cost':>5} {'snd':>5} {'rcv':>5}")  # fmt: skip
    for name, values in bps.items():
        s = meshtput.Series(name, values)
        c = meshtput.Series(name, cpu[name])
        cmp = meshtput.Comparison(s, base)
        per = statistics.median(x / y for x, y in zip(values, base.values, strict=True) if y)
        snd = statistics.median(r.sender_cpu_cores for r in got[name])
        rcv = statistics.median(r.receiver_cpu_cores for r in got[name])
        print(f"{name:18} {s.median / 1e9:13.2f} {s.cv:5.0%} {cmp.ratio:6.3f} {per:9.3f} "
              f"{cmp.rounds_below:2}/{len(values):<2} {c.median:10.3f} {c.cv:5.0%} "
              f"{c.median / base_cpu.median:5.2f} {snd:5.2f} {rcv:5.2f}")  # fmt: skip
    print(
        "ratio: median ÷ node-node's; per-round: median of the rounds' ratios; cost: CPU per "
        "bit ÷ node-node's (1.00 = the path costs what the node path costs); snd, rcv: the "
        "sender's and the receiver's cores (median; on a quiet machine the end near 1.00 is "
        "the bottleneck)"
    )
    pairs = (
        ("pod-pod", "hb-pod-pod"),
        ("hb-pod-pod", "hb-node-node"),
        ("hb-node-node", "node-node"),
    )
    for one, other in pairs:
        if one in bps and other in bps:
            s1, s2 = meshtput.Series(one, bps[one]), meshtput.Series(other, bps[other])
            cpu_ratio = statistics.median(cpu[one]) / statistics.median(cpu[other])
            per = statistics.median(x / y for x, y in zip(bps[one], bps[other], strict=True) if y)
            print(f"{one} ÷ {other}: throughput {meshtput.Comparison(s1, s2).ratio:.3f} (per "
                  f"round {per:.3f}), CPU per bit {cpu_ratio:.3f}")  # fmt: skip
    if profiles:
        _print_profiles(profiles)
    for line in passes:
        print(line)
    print(f"load after profiles: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
