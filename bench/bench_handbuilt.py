"""Each mode against the same pod path built by hand, interleaved rounds, medians and CVs.

``sudo .venv/bin/python bench/bench_handbuilt.py [--modes host-gw,vxlan,bgp,calico-vxlan]
[--wireguard host-gw] [--rounds 5] [--seconds 2] [--ablate nft,brnf,...]``

Per mode: a throwaway lab (``harness.testlab.agentlab``) runs the real agent on two
node namespaces with an iperf3 server pod on n2 and a client pod on n1; beside
it ``harness.refpath`` builds the mode's hand-built path (iproute2 through
pyroute2, no agent, no nftables) in its own namespaces. Then ``--rounds``
rounds, each running iperf3 TCP (one stream, ``--seconds``) pod→pod in the mode,
pod→pod on the hand-built path and node→node on the lab's underlay, in an order
rotated every round. Prints per mode the three medians with their coefficients
of variation, mode ÷ hand-built (ratio of medians, and in how many rounds the
mode was below), and mode ÷ underlay. Modes without an iproute2 equivalent
(udp, userspace ipip) are measured against the underlay only, with the reason.
Figures on a shared machine are indicative: the load average is printed with them.

``--ablate`` finds what costs: after the rounds above, each named part of what
the agent adds is taken away on both nodes (agents paused with SIGSTOP, the
ruleset saved), the mode is measured against its hand-built path again in the
same kind of rounds, and everything is put back. Parts: ``policy``, ``proxy``,
``masq`` (the agent's three nftables tables), ``nft`` (all of them, and with
them conntrack), ``brnf`` (bridge-nf-call-iptables=0), ``notrack`` (a raw
``notrack`` rule for the tunnel's outer packets, as a candidate fix).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from harness.exec import run
from harness.probes import iperf3
from harness.refpath import build, rounds, spec
from harness.report.fmt import fmt_cv
from harness.testlab.agentlab import AgentLab
from harness.testlab.wait import wait_for

MODES = "host-gw,vxlan,bgp,calico-vxlan,cross-subnet,ipip,udp"
WIREGUARD = "host-gw,bgp"
PORT = 5201


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


def _client(target: str, secs: int) -> list[str]:
    return iperf3.client_command(target, PORT, secs)


def _iperf(argv: list[str], secs: int, netns_path: str) -> float:
    """One iperf3 client run inside the namespace at ``netns_path``; received bit/s."""
    for _ in range(3):
        res = run(["nsenter", f"--net={netns_path}", *argv], timeout=secs + 20, check=False)
        try:
            return iperf3.parse(res.stdout or res.stderr).received_bps
        except iperf3.IperfError as exc:  # the server is between two tests: try again
            err = exc
            time.sleep(0.3)
    raise RuntimeError(f"iperf3 {' '.join(argv)}: {err}")


def _mode_lab(mode: str, encryption: str) -> tuple[AgentLab, dict[str, str], dict[str, str]]:
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
    return lab, {"srv": srv["podIP"], "cli": lab.nodes[0].pod_netns(cli["netns"])}, impls


def measure_mode(
    mode: str, encryption: str, n_rounds: int, secs: int, parts: list[str] | None = None
) -> str:
    """One mode: build its lab and its reference, run the rounds, return the printed rows."""
    lab, pods, impls = _mode_lab(mode, encryption)
    ref_path = None
    under = lab.ns_run_bg(lab.nodes[1], ["iperf3", "-s", "-p", str(PORT)])
    try:
        ref = spec.reference_for(mode, encryption, wireguard_impl=impls["wireguard"],
                                 ipip_impl=impls["ipip"])  # fmt: skip
        n1_ns = f"/run/netns/{lab.nodes[0].ns}"
        contenders = [
            ("mode", lambda: _iperf(_client(pods["srv"], secs), secs, pods["cli"])),
            ("underlay", lambda: _iperf(_client(lab.nodes[1].ip, secs), secs, n1_ns)),
        ]
        if isinstance(ref, spec.RefSpec):
            ref_path = build.build(ref, build.new_tag(), PORT, lifetime_s=3600)
            ref_ns = f"/run/netns/{ref_path.client_netns}"
            ip = ref_path.server_ip
            contenders.insert(1, ("hand-built", lambda: _iperf(_client(ip, secs), secs, ref_ns)))
        time.sleep(0.5)
        got = rounds.interleave(contenders, n_rounds)
        pair = [c for c in contenders if c[0] != "underlay"]
        ablated = ablate(lab, parts, pair, n_rounds) if parts and ref_path else {}
    finally:
        under.kill()
        under.wait()
        if ref_path is not None:
            build.teardown(ref_path.tag)
        _stop_daemons(lab)
        lab.close()
    lines = [_row(mode, encryption, ref, got)]
    for part, res in ablated.items():
        c = rounds.Comparison(rounds.Series("mode", tuple(res["mode"])),
                              rounds.Series("hand-built", tuple(res["hand-built"])))  # fmt: skip
        how = "with" if part in ADDED else "without"
        lines.append(
            f"  {how} {part:9} mode {c.a.median / 1e9:6.2f} ±{fmt_cv(c.a.cv):>7} "
            f"hand-built {c.b.median / 1e9:6.2f} ±{fmt_cv(c.b.cv):>7} "
            f"mode/hand-built {c.ratio or 0:5.2f} ({c.rounds_below}/{n_rounds} below)"
        )
    return "\n".join(lines)


# what each ablation does in a node's namespace (argv lists, and nft input)
ABLATIONS: dict[str, list[tuple[list[str], str | None]]] = {
    "policy": [(["nft", "delete", "table", "inet", "podlab-policy"], None)],
    "proxy": [(["nft", "delete", "table", "ip", "podlab-proxy"], None)],
    "masq": [(["nft", "delete", "table", "ip", "podlab"], None)],
    "nft": [(["nft", "flush", "ruleset"], None)],
    "brnf": [(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"], None)],
    "notrack": [(["nft", "-f", "-"], "table ip bench-notrack {\n"
                 " chain pre { type filter hook prerouting priority raw; "
                 "udp dport { 8472, 4789, 51820 } notrack; ip protocol 4 notrack; }\n"
                 " chain out { type filter hook output priority raw; "
                 "udp dport { 8472, 4789, 51820 } notrack; ip protocol 4 notrack; }\n}\n")],
}  # fmt: skip


ADDED = ("notrack",)  # ablations that add something rather than take it away


def _save(ns: str) -> tuple[str, str]:
    """A node's ruleset and bridge-nf setting, to put back after an ablation."""
    ruleset = run(["nft", "list", "ruleset"], netns=ns).stdout
    key = ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"]
    return ruleset, run(key, netns=ns, check=False).stdout.strip()


def ablate(lab: AgentLab, parts: list[str], contenders, n_rounds: int):  # type: ignore[no-untyped-def]
    """Measure mode vs hand-built with each part taken away in turn; restore after each."""
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
                out[part] = rounds.interleave(contenders, n_rounds)
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


def _row(mode: str, enc: str, ref: spec.RefSpec | spec.NoReference,
         got: dict[str, list[float]]) -> str:  # fmt: skip
    s = {k: rounds.Series(k, tuple(v)) for k, v in got.items()}
    name = mode + ("+" + enc if enc != "none" else "")

    def cell(k: str) -> str:
        return f"{s[k].median / 1e9:6.2f} ±{fmt_cv(s[k].cv):>7}" if k in s else f"{'—':>15}"

    vs_under = rounds.Comparison(s["mode"], s["underlay"])
    if "hand-built" in s:
        c = rounds.Comparison(s["mode"], s["hand-built"])
        vs_ref = f"{c.ratio:5.2f} ({c.rounds_below}/{len(c.a.values)} below)"
        ref_name = ref.name if isinstance(ref, spec.RefSpec) else ""
    else:
        vs_ref, ref_name = "—", f"none: {ref.reason}" if isinstance(ref, spec.NoReference) else ""
    return (f"{name:18} {cell('mode')} {cell('hand-built')} {cell('underlay')} "
            f"{vs_ref:18} {vs_under.ratio or 0:5.2f}  {ref_name}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=MODES)
    ap.add_argument("--wireguard", default=WIREGUARD, help="modes also measured with WireGuard")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--ablate", default="", help=f"parts to take away: {','.join(ABLATIONS)}")
    args = ap.parse_args()
    parts = [p for p in args.ablate.split(",") if p]
    unknown = [p for p in parts if p not in ABLATIONS]
    if unknown:
        ap.error(f"--ablate {','.join(unknown)}: unknown (parts: {', '.join(ABLATIONS)})")
    runs = [(m, "none") for m in args.modes.split(",") if m]
    runs += [(m, "wireguard") for m in args.wireguard.split(",") if m]
    print(f"iperf3 TCP, 1 stream, {args.rounds} interleaved rounds of {args.seconds} s; "
          f"Gbit/s median ± CV; load average before: {loadavg()}")  # fmt: skip
    print(f"{'mode':18} {'mode Gbit/s':>15} {'hand-built':>15} {'underlay':>15} "
          f"{'mode/hand-built':18} {'/underlay':>5}  reference")  # fmt: skip
    for mode, enc in runs:
        print(measure_mode(mode, enc, args.rounds, args.seconds, parts), flush=True)
    print(f"load average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
