"""Kernel samples per GB in netfilter, a mode as deployed against one ``--ab`` change.

``sudo .venv/bin/python bench/bench_nf_profile.py [--modes vxlan,calico-vxlan]
[--change oldhooks] [--runs 6] [--seconds 3]``

Per mode: ``bench_handbuilt``'s agent lab (agents paused), then ``--runs`` pairs
of one iperf3 pod→pod run each, as deployed and with the change on (the order
alternating per pair), each under ``perf record -F 2000`` of the iperf3 client
and its children (cpu-clock sampling works without a PMU; on a veth path the
forwarding, netfilter and encapsulation of both nodes run mostly in the sender's
context), and with the mode's hand-built path (``harness.refpath``) as a third
variant where it has one. Printed per variant: samples per GB received, in all, in nftables
chain evaluation and netfilter's hook loop (``nft_*``, ``nf_hook_slow``), and in
conntrack and NAT. A per-byte cost, like ``--passes`` a count rather than a
timing: the machine's load changes how long a run takes more than how many
samples each byte costs, though a busy machine still adds noise. Then the
symbols with the most samples per GB more than on the hand-built path. Needs
``perf`` (Debian: linux-perf).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_handbuilt as hb

from harness.probes import iperf3
from harness.refpath import build, rounds, spec

NETFILTER = ("nft_", "nf_hook_slow")
CONNTRACK = ("nf_conntrack", "__nf_conntrack", "nf_ct_", "__nf_ct", "nf_nat", "hash_conntrack")


def _samples(report: str) -> collections.Counter[str]:
    """``perf report -n --sort sym -q`` → samples per symbol, plus the sums ``(all)``,
    ``(netfilter)`` and ``(conntrack)``."""
    out: collections.Counter[str] = collections.Counter()
    for line in report.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[1].isdigit():
            continue
        n, sym = int(parts[1]), parts[-1]
        out[sym] += n
        out["(all)"] += n
        out["(netfilter)"] += n if sym.startswith(NETFILTER) else 0
        out["(conntrack)"] += n if sym.startswith(CONNTRACK) else 0
    return out


def _record(target: rounds.Target, secs: int, tmp: Path) -> tuple[float, collections.Counter[str]]:
    """GB received and samples of one iperf3 run under ``perf record``."""
    data = tmp / "perf.data"
    cmd = ["perf", "record", "-q", "-F", "2000", "-o", str(data), "--", *target.argv(secs)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 30)
    gb = iperf3.parse(res.stdout).received_bps * secs / 8e9
    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-n", "--sort", "sym",
                          "-q"], capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    return gb, _samples(rep)


def profile(mode: str, change: str, runs: int, secs: int, tmp: Path) -> list[str]:
    lab, targets, impls, _ = hb._mode_lab(mode, "none")
    under = lab.ns_run_bg(lab.nodes[1], ["iperf3", "-s", "-p", str(hb.PORT)])
    pids = [n.proc.pid for n in lab.nodes if n.proc is not None]
    on, off = hb.TOGGLES[change]
    ref = spec.reference_for(mode, "none", ipip_impl=impls["ipip"])
    ref_path = None
    pod: dict[str, rounds.Target] = {"as deployed": targets[0], change: targets[0]}
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        if isinstance(ref, spec.RefSpec):
            ref_path = build.build(ref, build.new_tag(), hb.PORT, lifetime_s=3600)
            pod["hand-built"] = rounds.Target("hand-built", ref_path.client_netns,
                                              ref_path.server_ip, hb.PORT)  # fmt: skip
        got = {k: collections.Counter[str]() for k in pod}
        gbytes = dict.fromkeys(pod, 0.0)
        for i in range(runs):
            order = list(pod)[i % len(pod) :] + list(pod)[: i % len(pod)]  # rotated
            for variant in order:
                if variant == change:
                    for n in lab.nodes:
                        on(n.ns)
                try:
                    gb, samples = _record(pod[variant], secs, tmp)
                finally:
                    if variant == change:
                        for n in lab.nodes:
                            off(n.ns)
                gbytes[variant] += gb
                got[variant] += samples
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        under.kill()
        under.wait()
        if ref_path is not None:
            build.teardown(ref_path.tag)
        hb._stop_daemons(lab)
        lab.close()
    return _lines(mode, runs, secs, got, gbytes)


def _lines(
    mode: str,
    runs: int,
    secs: int,
    got: dict[str, collections.Counter[str]],
    gbytes: dict[str, float],
) -> list[str]:
    per = {v: {k: n / max(gbytes[v], 1e-9) for k, n in c.items()} for v, c in got.items()}
    lines = [f"{mode}: {runs} runs of {secs} s per variant (rotated), samples per GB received"]
    for v, p in per.items():
        nf, ct = p.get("(netfilter)", 0.0), p.get("(conntrack)", 0.0)
        lines.append(f"  {v:14} all {p['(all)']:7.1f}  netfilter {nf:6.2f}"
                     f"  conntrack+NAT {ct:6.2f}  ({gbytes[v]:.1f} GB)")  # fmt: skip
    if "hand-built" in per:
        mine, ref = per["as deployed"], per["hand-built"]
        diff = {k: mine.get(k, 0) - ref.get(k, 0) for k in mine.keys() | ref.keys()}
        top = sorted((k for k in diff if not k.startswith("(")), key=lambda k: -diff[k])[:8]
        lines.append("  as deployed − hand-built, largest: "
                     + ", ".join(f"{k} {diff[k]:+.1f}" for k in top))  # fmt: skip
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="vxlan,calico-vxlan")
    ap.add_argument("--change", default="oldhooks", choices=sorted(hb.TOGGLES))
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("perf") is None:
        print("bench_nf_profile: perf not found (Debian: apt-get install linux-perf)",
              file=sys.stderr)  # fmt: skip
        return 2
    print(f"load average before: {hb.loadavg()}")
    with tempfile.TemporaryDirectory(prefix="podlab-nfprof-") as tmp:
        for mode in (m for m in args.modes.split(",") if m):
            for line in profile(mode, args.change, args.runs, args.seconds, Path(tmp)):
                print(line, flush=True)
    print(f"load average after: {hb.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
