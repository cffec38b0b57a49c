"""Each mode against the same pod path built by hand, interleaved rounds, medians and CVs.

``sudo .venv/bin/python bench/bench_handbuilt.py [--modes host-gw,vxlan,bgp,calico-vxlan]
[--wireguard host-gw] [--rounds 5] [--seconds 2] [--ablate nft,brnf,...]``

Per mode: a throwaway lab (``harness.testlab.agentlab``) runs the real agent on
two node namespaces with an iperf3 server pod on n2 and a client pod on n1;
beside it ``harness.refpath`` builds the mode's hand-built path (iproute2
through pyroute2, no agent, no nftables) in its own namespaces. Then
``--rounds`` rounds (``harness.refpath.rounds``, the runner the conformance
suite uses), each running iperf3 TCP (one stream, ``--seconds``) pod→pod in the
mode, pod→pod on the hand-built path and node→node on the lab's underlay, in an
order rotated every round. Printed per mode: the three medians with their
coefficients of variation, mode ÷ hand-built (ratio of medians, and in how many
rounds the mode was below), mode ÷ underlay, and the CPU the two iperf3 ends
used per Gbit/s, hand-built ÷ mode (1.00 = the mode costs what the hand-built
path costs; on a veth path the kernel's forwarding work runs in the sender's
context, so this follows the datapath's cost and is steadier than throughput
on a busy machine). Modes without an iproute2 equivalent (udp, userspace ipip)
are measured against the underlay only, with the reason. Figures on a shared
machine are indicative: the load average is printed with them.

``--ablate`` finds what costs: after the rounds above, each named part of what
the agent adds is taken away on both nodes (agents paused with SIGSTOP, the
ruleset saved), the mode is measured against its hand-built path again in the
same kind of rounds, and everything is put back. Parts: ``policy``, ``proxy``,
``masq`` (the agent's three nftables tables), ``nft`` (all of them, and with
them conntrack), ``brnf`` (bridge-nf-call-iptables=0), ``notrack`` (the agent's
notrack chains that keep the tunnel's outer packets out of conntrack: the state
before that change).

``--ab CHANGE`` measures one change in the same rotated rounds as an extra
pod→pod contender: ``nocsum``, ``noraw`` (the notrack chains away), ``oldhooks``
(the base chains before the pass-count change: ``raw-prerouting`` instead of the
underlay's ingress hook, the proxy's filter chains on input/forward/output, the
policy's forward chain with no policy), ``podnotrack`` (pod→pod flows untracked
by a raw chain before ours on both nodes, every hook of ours left in place: what
conntrack on the inner flow costs), ``allnotrack`` (every packet of both nodes
untracked the same way: what the registered hooks cost without any conntrack work).
``--passes`` counts the base chains each packet passes per node (with ``--ab``,
also with the change on).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.exec import run
from harness.probes import iperf3
from harness.refpath import build, hooks, rounds, spec
from harness.report.fmt import fmt_cv
from harness.testlab.agentlab import AgentLab
from harness.testlab.wait import wait_for

MODES = "host-gw,vxlan,bgp,calico-vxlan,cross-subnet,ipip,udp"
WIREGUARD = "host-gw,bgp"
PORT = 5201
Results = dict[str, list[iperf3.IperfResult]]

# what each ablation does in a node's namespace: (argv, stdin) steps
ABLATIONS: dict[str, list[tuple[list[str], str | None]]] = {
    "policy": [(["nft", "delete", "table", "inet", "podlab-policy"], None)],
    "proxy": [(["nft", "delete", "table", "ip", "podlab-proxy"], None)],
    "masq": [(["nft", "delete", "table", "ip", "podlab"], None)],
    "nft": [(["nft", "flush", "ruleset"], None)],
    "brnf": [(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"], None)],
    "notrack": [(["nft", "delete", "chain", "ip", "podlab", "raw-output"], None),
                (["nft", "delete", "table", "netdev", "podlab-underlay"], None)],
}  # fmt: skip


def _steps(steps: list[tuple[list[str], str | None]]) -> Callable[[str], None]:
    def apply(ns: str) -> None:
        for argv, stdin in steps:
            run(argv, netns=ns, input=stdin)

    return apply


_saved_masq: dict[str, str] = {}
_saved_underlay: dict[str, str] = {}


def _underlay_table(ns: str) -> str:
    """The agent's ``netdev podlab-underlay`` table as ``nft list`` prints it ("" if none)."""
    return run(["nft", "list", "table", "netdev", "podlab-underlay"], netns=ns, check=False).stdout


def _raw_off(ns: str) -> None:
    """Delete the agent's notrack chains, keeping their tables to put back."""
    _saved_masq[ns] = run(["nft", "list", "table", "ip", "podlab"], netns=ns).stdout
    _saved_underlay[ns] = _underlay_table(ns)
    for argv, _ in ABLATIONS["notrack"]:
        run(argv, netns=ns, check=False)


def _raw_on(ns: str) -> None:
    run(["nft", "-f", "-"], netns=ns, input="delete table ip podlab\n" + _saved_masq.pop(ns)
        + _saved_underlay.pop(ns))  # fmt: skip


OLD_PROXY_HOOKS = ("input", "forward", "output")  # kube-proxy's filter chains, before 2026-12-05
POLICY = "inet podlab-policy"
_policy_hook_added: dict[str, bool] = {}


def _old_hooks_on(ns: str) -> None:
    """The layout before the pass-count change (docs/throughput.md, item 8): incoming
    tunnel packets exempted in a ``raw-prerouting`` chain that every packet passes, not
    on the underlay's ingress hook; the proxy's no-endpoint check in filter chains on
    input/forward/output (its jumps from the NAT chains stay: they cost only a
    connection's first packet); the policy's ``forward`` chain even with no policy."""
    saved = _saved_underlay[ns] = _underlay_table(ns)
    rules = [ln.strip() for ln in saved.splitlines() if ln.strip().endswith('conntrack"')]
    lines = ["delete table netdev podlab-underlay"] if saved else []
    pol = run(["nft", "list", "table", "inet", "podlab-policy"], netns=ns, check=False).stdout
    _policy_hook_added[ns] = bool(pol) and "hook forward" not in pol
    if _policy_hook_added[ns]:
        lines += [f"add chain {POLICY} forward {{ type filter hook forward priority filter ; }}",
                  f"add rule {POLICY} forward ct state established,related accept",
                  f"add rule {POLICY} forward ip saddr vmap @egress-pods",
                  f"add rule {POLICY} forward ip daddr vmap @ingress-pods"]  # fmt: skip
    if rules:
        lines.append("add chain ip podlab raw-prerouting { type filter hook prerouting "
                     "priority raw ; policy accept ; }")  # fmt: skip
        lines += [f"add rule ip podlab raw-prerouting {r}" for r in rules]
    for hook in OLD_PROXY_HOOKS:
        chain = f"ip podlab-proxy filter-{hook}"
        lines += [f"add chain {chain} {{ type filter hook {hook} priority -110 ; }}",
                  f"add rule {chain} ct state new jump endpoints-check"]  # fmt: skip
    run(["nft", "-f", "-"], netns=ns, input="\n".join(lines) + "\n")


def _old_hooks_off(ns: str) -> None:
    saved = _saved_underlay.pop(ns)
    lines = []
    if _policy_hook_added.pop(ns):
        lines += [f"flush chain {POLICY} forward", f"delete chain {POLICY} forward"]
    if saved:
        lines += ["flush chain ip podlab raw-prerouting", "delete chain ip podlab raw-prerouting"]
    for hook in OLD_PROXY_HOOKS:
        lines += [f"flush chain ip podlab-proxy filter-{hook}",
                  f"delete chain ip podlab-proxy filter-{hook}"]  # fmt: skip
    run(["nft", "-f", "-"], netns=ns, input="\n".join(lines) + "\n" + saved)


POD_CIDR = "10.244.0.0/16"  # AgentLab's cluster CIDR
NOTRACK_PODS = "add table ip tput-ab\n" + "".join(
    f"add chain ip tput-ab {c} {{ type filter hook {h} priority raw - 1 ; }}\n"
    f"add rule ip tput-ab {c} ip saddr {POD_CIDR} ip daddr {POD_CIDR} notrack\n"
    for c, h in (("pre", "prerouting"), ("out", "output"))
)

NOTRACK_ALL = "add table ip tput-ab\n" + "".join(
    f"add chain ip tput-ab {c} {{ type filter hook {h} priority raw - 1 ; }}\n"
    f"add rule ip tput-ab {c} notrack\n"
    for c, h in (("pre", "prerouting"), ("out", "output"))
)


# A/B toggles for --ab: (switch the change ON in a node's namespace, switch it OFF
# again); measured in the same rounds as the mode as it runs
TOGGLES: dict[str, tuple[Callable[[str], None], Callable[[str], None]]] = {
    "nocsum": (_steps([(["sysctl", "-qw", "net.netfilter.nf_conntrack_checksum=0"], None)]),
               _steps([(["sysctl", "-qw", "net.netfilter.nf_conntrack_checksum=1"], None)])),
    "noraw": (_raw_off, _raw_on),  # the state before the notrack change, and back
    "oldhooks": (_old_hooks_on, _old_hooks_off),  # the base chains before the pass-count change
    # no conntrack on pod→pod flows (every other hook as deployed): what tracking the
    # inner flow costs; not a deployable change (Service un-DNAT, policy need it)
    "podnotrack": (_steps([(["nft", "-f", "-"], NOTRACK_PODS)]),
                   _steps([(["nft", "delete", "table", "ip", "tput-ab"], None)])),
    # no conntrack for any packet of the node, every hook of ours still registered:
    # what is left is the hooks' dispatch (conntrack, NAT and our chains called per packet)
    "allnotrack": (_steps([(["nft", "-f", "-"], NOTRACK_ALL)]),
                   _steps([(["nft", "delete", "table", "ip", "tput-ab"], None)])),
}  # fmt: skip


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _stop_daemons(lab: AgentLab) -> None:
    """Agents, and what outlives them by design (BIRD, wireguard-go), by their pid files."""
    for node in lab.nodes:
        lab.stop_agent(node)
        for name in ("bird.pid", "wireguard-go.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int((node.dir / "run" / name).read_text().strip())
                os.kill(pid, signal.SIGTERM)
                time.sleep(0.5)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def _mode_lab(
    mode: str, encryption: str
) -> tuple[AgentLab, list[rounds.Target], dict[str, str], str]:
    """The agent lab, the pod-pod and node-node targets, the implementations, the server pod."""
    lab = AgentLab(2, mode, tmp_root="/dev/shm", resync_s=10.0, encryption=encryption)
    n1, n2 = lab.nodes
    for n in lab.nodes:
        lab.start_agent(n)
    records = {n.name: lab.wait_node(n) for n in lab.nodes}
    lab.apply_pod("srv", n2, ["python", "-m", "harness.workloads.iperf", "--port", str(PORT)])
    lab.apply_pod("cli", n1, ["sleep", "infinity"])
    srv, cli = lab.wait_running("srv"), lab.wait_running("cli")
    ping = ["ping", "-c1", "-W1", srv["podIP"]]
    wait_for("server pod reachable",
             lambda: lab.pod_run(n1, cli["netns"], ping, check=False).returncode == 0)  # fmt: skip
    backend = records["n1"].get("backend", {})
    impls = {"ipip": str(backend.get("IPIPImpl", "kernel")),
             "wireguard": str(backend.get("WireguardImpl", ""))}  # fmt: skip
    targets = [
        rounds.Target("pod-pod", n1.pod_netns(cli["netns"]), srv["podIP"], PORT),
        rounds.Target("node-node", f"/run/netns/{n1.ns}", n2.ip, PORT),
    ]
    return lab, targets, impls, n2.pod_netns(srv["netns"])


def _save(ns: str) -> tuple[str, str]:
    """A node's ruleset and bridge-nf setting, to put back after an ablation."""
    ruleset = run(["nft", "list", "ruleset"], netns=ns).stdout
    key = ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"]
    return ruleset, run(key, netns=ns, check=False).stdout.strip()


def ablate(
    lab: AgentLab, parts: list[str], targets: list[rounds.Target], n_rounds: int, secs: int
) -> dict[str, Results]:
    """Measure the targets with each part taken away in turn; restore after each."""
    out = {}
    pids = [n.proc.pid for n in lab.nodes if n.proc is not None]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        for part in parts:
            saved = {n.ns: _save(n.ns) for n in lab.nodes}
            try:
                for n in lab.nodes:
                    for argv, stdin in ABLATIONS[part]:
                        run(argv, netns=n.ns, input=stdin, check=False)
                out[part] = rounds.iperf_rounds(targets, n_rounds, secs)
            finally:
                for ns, (ruleset, brnf) in saved.items():
                    run(["nft", "-f", "-"], netns=ns, input="flush ruleset\n" + ruleset)
                    if brnf:
                        run(["sysctl", "-qw", f"net.bridge.bridge-nf-call-iptables={brnf}"],
                            netns=ns, check=False)  # fmt: skip
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    return out


def ab_rounds(
    lab: AgentLab, toggle: str, targets: list[rounds.Target], n_rounds: int, secs: int
) -> Results:
    """The targets, plus pod→pod with ``toggle`` switched on, in the same rotated rounds.

    The change is switched on right before its contender runs and off before any
    other (agents paused meanwhile, so none of them undoes it), so A and B see the
    same neighbours' bursts as the reference and the underlay; it is off at the end.
    A and B are never adjacent in the cyclic order (with targets pod-pod,
    hand-built, node-node: A, hand-built, B, node-node).
    """
    on, off = TOGGLES[toggle]
    state = {"on": False}

    def switch(want: bool) -> None:
        if state["on"] != want:
            for n in lab.nodes:
                (on if want else off)(n.ns)
            state["on"] = want

    def contender(t: rounds.Target, want: bool) -> iperf3.IperfResult:
        switch(want)
        return rounds.iperf_once(t, secs)

    # B goes second after A (A, X, B, Y …): rotation keeps the cyclic order, so B right
    # after A would follow a test on the same server pod in almost every round
    runs: list[tuple[str, Callable[[], iperf3.IperfResult]]] = [
        (t.name, lambda t=t: contender(t, False))  # type: ignore[misc]
        for t in targets
    ]
    pod = next(t for t in targets if t.name == "pod-pod")
    at = (runs.index(next(r for r in runs if r[0] == "pod-pod")) + 2) % (len(runs) + 1)
    runs.insert(at, (f"pod-pod+{toggle}", lambda: contender(pod, True)))
    pids = [n.proc.pid for n in lab.nodes if n.proc is not None]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        return rounds.interleave(runs, n_rounds)
    finally:
        switch(False)
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _pod_packets(netns: str) -> int:
    """Packets in and out of a pod's eth0 (the flow's data and its ACKs)."""
    link = json.loads(run(["nsenter", f"--net={netns}", "ip", "-s", "-j", "link", "show",
                           "eth0"]).stdout)[0]["stats64"]  # fmt: skip
    return int(link["rx"]["packets"]) + int(link["tx"]["packets"])


def chain_passes(
    lab: AgentLab, server_pod: str, target: rounds.Target, secs: int, toggle: str = ""
) -> list[str]:
    """nftables base chains passed per packet of one pod→pod flow, per node (agents paused).

    Counting rules go first in every base chain of both nodes for one iperf3 run and
    are deleted after it; the counts are divided by the packets the server pod's
    eth0 saw (data in, ACKs out), so the figure does not depend on the machine's load.
    With ``toggle`` the change is switched on for the count and off after it.
    """
    pids = [n.proc.pid for n in lab.nodes if n.proc is not None]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    if toggle:
        for n in lab.nodes:
            TOGGLES[toggle][0](n.ns)

    def ruleset(ns: str) -> dict[str, Any]:
        return dict(json.loads(run(["nft", "-j", "list", "ruleset"], netns=ns).stdout))

    try:
        for n in lab.nodes:
            cmds = hooks.counter_commands(ruleset(n.ns))
            run(["nft", "-f", "-"], netns=n.ns, input="".join(c + "\n" for c in cmds))
        before = _pod_packets(server_pod)
        rounds.iperf_once(target, secs)
        packets = max(_pod_packets(server_pod) - before, 1)
        lines = []
        for n in lab.nodes:
            rs = ruleset(n.ns)
            total, detail = hooks.per_packet(hooks.passes(rs), packets)
            lines.append(f"  {n.name}: {total:.2f} base-chain passes per packet ({detail})")
            remove = hooks.removal_commands(rs)
            run(["nft", "-f", "-"], netns=n.ns, input="".join(c + "\n" for c in remove))
        what = f" with {toggle}" if toggle else ""
        return [f"  chain passes{what} over {packets} packets of one flow:", *lines]
    finally:
        if toggle:
            for n in lab.nodes:
                TOGGLES[toggle][1](n.ns)
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def measure_mode(
    mode: str,
    encryption: str,
    n_rounds: int,
    secs: int,
    parts: list[str],
    toggle: str = "",
    count: bool = False,
) -> list[str]:
    """One mode: build its lab and its reference, run the rounds, return the printed rows."""
    lab, targets, impls, server_pod = _mode_lab(mode, encryption)
    ref_path = None
    under = lab.ns_run_bg(lab.nodes[1], ["iperf3", "-s", "-p", str(PORT)])
    try:
        ref = spec.reference_for(mode, encryption, wireguard_impl=impls["wireguard"],
                                 ipip_impl=impls["ipip"])  # fmt: skip
        if isinstance(ref, spec.RefSpec):
            ref_path = build.build(ref, build.new_tag(), PORT, lifetime_s=3600)
            hb = rounds.Target("hand-built", ref_path.client_netns, ref_path.server_ip, PORT)
            targets.insert(1, hb)
        time.sleep(0.5)
        if toggle:
            got = ab_rounds(lab, toggle, targets, n_rounds, secs)
        else:
            got = rounds.iperf_rounds(targets, n_rounds, secs)
        pair = [t for t in targets if t.name != "node-node"]
        ablated = ablate(lab, parts, pair, n_rounds, secs) if parts and ref_path else {}
        counted = chain_passes(lab, server_pod, targets[0], secs) if count else []
        if count and toggle:
            counted += chain_passes(lab, server_pod, targets[0], secs, toggle)
    finally:
        under.kill()
        under.wait()
        if ref_path is not None:
            build.teardown(ref_path.tag)
        _stop_daemons(lab)
        lab.close()
    name = mode + ("+" + encryption if encryption != "none" else "")
    lines = [_row(name, ref, got)]
    if toggle:
        with_b = {**got, "pod-pod": got[f"pod-pod+{toggle}"]}
        lines.append(_row(f"  with {toggle}", ref, with_b))
        c = rounds.Comparison(_series(with_b["pod-pod"]), _series(got["pod-pod"]))
        cpu = _cpu_per_gbit(got["pod-pod"]) / _cpu_per_gbit(with_b["pod-pod"])
        lines.append(f"  {toggle} ÷ as deployed: {c.ratio:.3f} (above in "
                     f"{len(c.a.values) - c.rounds_below}/{len(c.a.values)} rounds; per round "
                     f"{', '.join(f'{x:.3f}' for x in c.round_ratios)}); CPU per bit "
                     f"as deployed ÷ {toggle} {cpu:.3f}")  # fmt: skip
    for part, res in ablated.items():
        lines.append(_row(f"  without {part}", ref, res))
    return lines + counted


def _series(results: list[iperf3.IperfResult]) -> rounds.Series:
    return rounds.Series("", tuple(r.received_bps for r in results))


def _cpu_per_gbit(results: list[iperf3.IperfResult]) -> float:
    """Median CPU (both iperf3 ends, cores) per Gbit/s received."""
    return statistics.median(
        (r.sender_cpu_cores + r.receiver_cpu_cores) / (r.received_bps / 1e9)
        for r in results
        if r.received_bps
    )


def _row(name: str, ref: spec.RefSpec | spec.NoReference, got: Results) -> str:
    s = {k: _series(v) for k, v in got.items()}

    def cell(k: str) -> str:
        return f"{s[k].median / 1e9:6.2f} ±{fmt_cv(s[k].cv):>7}" if k in s else f"{'—':>15}"

    vs_under = f"{rounds.Comparison(s['pod-pod'], s['node-node']).ratio:5.2f}" if (
        "node-node" in s) else "    —"  # fmt: skip
    if "hand-built" in s:
        c = rounds.Comparison(s["pod-pod"], s["hand-built"])
        vs_ref = f"{c.ratio:5.2f} ({c.rounds_below}/{len(c.a.values)} below)"
        cpu = f"{_cpu_per_gbit(got['hand-built']) / _cpu_per_gbit(got['pod-pod']):5.2f}"
        what = ref.name if isinstance(ref, spec.RefSpec) else ""
    else:
        vs_ref, cpu = "—", "    —"
        what = f"none: {ref.reason}" if isinstance(ref, spec.NoReference) else ""
    return (f"{name:22} {cell('pod-pod')} {cell('hand-built')} {cell('node-node')} "
            f"{vs_ref:18} {vs_under:>9} {cpu:>9}  {what}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=MODES)
    ap.add_argument("--wireguard", default=WIREGUARD, help="modes also measured with WireGuard")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--ablate", default="", help=f"parts to take away: {','.join(ABLATIONS)}")
    ap.add_argument(
        "--ab",
        default="",
        choices=["", *TOGGLES],
        help="also measure pod→pod with this change on, alternating in the rounds",
    )
    ap.add_argument(
        "--passes",
        action="store_true",
        help="count the nftables base chains each packet of a flow passes",
    )
    args = ap.parse_args()
    parts = [p for p in args.ablate.split(",") if p]
    unknown = [p for p in parts if p not in ABLATIONS]
    if unknown:
        ap.error(f"--ablate {','.join(unknown)}: unknown (parts: {', '.join(ABLATIONS)})")
    runs = [(m, "none") for m in args.modes.split(",") if m]
    runs += [(m, "wireguard") for m in args.wireguard.split(",") if m]
    print(f"iperf3 TCP, 1 stream, {args.rounds} interleaved rounds of {args.seconds} s; "
          f"Gbit/s median ± CV; load average before: {loadavg()}")  # fmt: skip
    print(f"{'mode':22} {'pod-pod Gbit/s':>15} {'hand-built':>15} {'underlay':>15} "
          f"{'mode/hand-built':18} {'/underlay':>9} {'CPU/bit':>9}  reference")  # fmt: skip
    for mode, enc in runs:
        for line in measure_mode(mode, enc, args.rounds, args.seconds, parts, args.ab, args.passes):
            print(line, flush=True)
    print(f"load average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
