"""VM labs: image build, up/down, memory per guest; proxies and datapaths in guests.

``sudo .venv/bin/python bench/bench_vm.py updown --guests 3,8 [--rounds 2]``
    up (every guest answering ssh) and down of N-guest labs from the cached
    image, and host memory per idle guest (qemu RSS, and what the guest sees).
``sudo .venv/bin/python bench/bench_vm.py image``
    a first image build into a throwaway cache (packages downloaded too).
``sudo .venv/bin/python bench/bench_vm.py proxy --lab LAB [--sizes 1000,10000]``
    ``bench_proxy.py`` inside a deployed guest of LAB: ipvs vs nftables vs
    iptables programming time (full sync, one-endpoint update) at each size.
``sudo .venv/bin/python bench/bench_vm.py datapath --lab LAB [--rounds 3]``
    pod→pod TCP throughput across two guests of LAB, kernel IPIP vs the
    userspace IPIP fallback and kernel WireGuard vs wireguard-go, each pair in
    the same run (the lab is switched, ``deploy --switch``, with
    ``ipip_impl``/``wireguard_impl``).

Every figure comes with the accelerator (KVM or TCG) and the load average.
Under TCG (no usable KVM) guest CPU is emulated 10–30x slower: boot, deploy and
programming times are this machine's, and throughput ratios say nothing about
the datapaths — they are meaningful only with KVM. Goals (issue 13): image
built once ≤ 5 min; from the cache a 3-guest lab up ≤ 30 s with KVM, ≤ 3 min
emulated; down ≤ 10 s; ≤ 350 MB of host memory per idle guest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.lab import netns, vmspec  # noqa: E402
from harness.lab.backend import UpRequest  # noqa: E402
from harness.lab.state import Ledger, find  # noqa: E402
from harness.lab.vm import VmBackend  # noqa: E402
from harness.plan.build import load_plan  # noqa: E402


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def accel_line() -> str:
    why = vmspec.kvm_status()
    return "KVM" if why is None else f"TCG (emulated: {why})"


def hosts_topology(n: int, dest: Path) -> Path:
    """N plain hosts on one bridge: what a lab of N guests costs, nothing deployed."""
    nodes: dict[str, Any] = {f"h{i}": {} for i in range(n)}
    nodes["fabric"] = {"kind": "bridge"}
    data = {
        "name": f"bench-vm-{n}",
        "mgmt": {"ipv4-subnet": f"172.31.{240 + n % 10}.0/24"},
        "topology": {
            "defaults": {"kind": "linux", "labels": {"podlab.role": "host"}},
            "nodes": nodes,
            "links": [{"endpoints": [f"h{i}:eth1", f"fabric:p{i}"]} for i in range(n)],
        },
    }
    path = dest / f"bench-vm-{n}.clab.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ssh(lab: str, node: str, command: str, timeout: float = 600) -> str:
    cfg = find(lab).ssh_config
    argv = ["ssh", "-F", str(cfg), node, command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True).stdout


def updown(args: argparse.Namespace) -> int:
    print(f"accel: {accel_line()}")
    work = Path(tempfile.mkdtemp(prefix="bench-vm-"))
    for n in (int(g) for g in args.guests.split(",")):
        ups, downs, mems = [], [], []
        for r in range(args.rounds):
            plan = load_plan(str(hosts_topology(n, work)))
            before = load()
            t = time.monotonic()
            VmBackend().up(UpRequest(file=Path(plan.source), plan=plan))
            up_s = time.monotonic() - t
            ledger = Ledger.load(find(plan.name))
            time.sleep(args.settle)
            mem = [rss_mb(node.pid or 0) for node in ledger.nodes.values()]
            seen = ssh(plan.name, "h0", "free -m | awk '/Mem:/ {print $2, $3}'").split()
            t = time.monotonic()
            netns.down(plan.name)
            down_s = time.monotonic() - t
            ups.append(up_s)
            downs.append(down_s)
            mems += mem
            print(
                f"{n} guests round {r + 1}: up {up_s:.1f} s (ssh on every guest), down "
                f"{down_s:.1f} s, qemu RSS per guest {min(mem):.0f}–{max(mem):.0f} MB after "
                f"{args.settle:.0f} s idle (guest sees {seen[0]} MB, {seen[1]} used); "
                f"load {before}",
                flush=True,
            )
        print(
            f"== {n} guests: up median {statistics.median(ups):.1f} s "
            f"(min {min(ups):.1f}, max {max(ups):.1f}), down median "
            f"{statistics.median(downs):.1f} s, RSS per idle guest median "
            f"{statistics.median(mems):.0f} MB (max {max(mems):.0f})"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


def image(args: argparse.Namespace) -> int:
    cache = Path(tempfile.mkdtemp(prefix="bench-vm-image-", dir="/var/tmp"))
    env = {**os.environ, "PODLAB_IMAGE_CACHE": str(cache)}
    before = load()
    t = time.monotonic()
    try:
        subprocess.run([sys.executable, "-m", "harness.cli", "image", "build"], env=env,
                       check=True, cwd=REPO)  # fmt: skip
        took = time.monotonic() - t
        (manifest,) = cache.glob("*/manifest.json")
        info = json.loads(manifest.read_text())
        print(
            f"first image build (empty cache, packages downloaded): {took:.1f} s; steps "
            f"{info['step_s']}; qcow2 {info['disk_bytes'] / 2**20:.0f} MB; kernel "
            f"{info['kernel_release']}; load before {before}, after {load()}"
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


def proxy(args: argparse.Namespace) -> int:
    ledger = Ledger.load(find(args.lab))
    node = args.node or next(iter(ledger.nodes))
    accel = ledger.nodes[node].vm_accel
    cfg = find(args.lab).ssh_config
    script = (REPO / "bench" / "bench_proxy.py").read_text()
    subprocess.run(["ssh", "-F", str(cfg), node, "cat > /run/bench_proxy.py"], input=script,
                   text=True, check=True, timeout=60)  # fmt: skip
    print(f"proxy programming inside guest {node} of {args.lab} ({accel}); load {load()}")
    command = (f"/opt/podlab/venv/bin/python /run/bench_proxy.py --modes {args.modes} "
               f"--sizes {args.sizes} --endpoints {args.endpoints}")  # fmt: skip
    subprocess.run(["ssh", "-F", str(cfg), node, command], check=True, timeout=7200)
    print(f"load after: {load()}")
    return 0


def _throughput(lab: Any, nodes: dict[str, Any], seconds: int) -> float:
    from harness.conformance import pods
    from harness.probes import iperf3

    factory = pods.PodFactory(lab.client(), nodes)
    a, b = factory.create(list(nodes)[:2], prefix="tput", wait_s=300)
    try:
        b.node.start(["ip", "netns", "exec", b.netns, *iperf3.server_command(lifetime_s=120)], 130)
        time.sleep(3)
        res = a.run(iperf3.client_command(b.ip, seconds=seconds), timeout_s=seconds + 60)
        return iperf3.parse(res.stdout).received_bps
    finally:
        factory.delete_all()


def datapath(args: argparse.Namespace) -> int:
    from harness.conformance import labctl, remote
    from harness.deploy.deploy import deploy, request_for

    lab = labctl.attach(args.lab)
    names = [n.name for n in lab.cluster_nodes()][:2]
    nodes = {n: remote.connect(lab.plan.nodes[n], lab.ssh_config, lab.lab_dir / "bench") for n in
             names}  # fmt: skip
    accel = {n.vm_accel for n in Ledger.load(find(args.lab)).nodes.values()}
    print(f"pod→pod TCP across {names} of {args.lab}, accel {accel}; load {load()}")
    if "tcg" in accel:
        print("NOTE: emulated guests: these ratios are NOT meaningful (only with KVM)")
    pairs = {
        "ipip": [("kernel IPIP", {"podlab_ipip_impl": "auto"}),
                 ("userspace IPIP", {"podlab_ipip_impl": "userspace"})],
        "wireguard": [("kernel WireGuard", {"podlab_wireguard_impl": "auto"}),
                      ("wireguard-go", {"podlab_wireguard_impl": "wireguard-go"})],
    }  # fmt: skip
    figures: dict[str, list[float]] = {}
    try:
        for what, configs in pairs.items():
            base = {"podlab_mode": "ipip", "podlab_encryption": "none" if what == "ipip" else what}
            for r in range(args.rounds):
                for label, extra in configs:
                    result = deploy(request_for(args.lab, None, {**base, **extra}, switch=True))
                    assert result.ok, f"deploy for {label} failed: {result.failures}"
                    labctl.wait_nodes_ready(lab, None)
                    bps = _throughput(lab, nodes, args.seconds)
                    figures.setdefault(label, []).append(bps)
                    print(f"round {r + 1} {label}: {bps / 1e6:.1f} Mbit/s; load {load()}",
                          flush=True)  # fmt: skip
    finally:
        for node in nodes.values():
            node.close()
    for a, b in (("kernel IPIP", "userspace IPIP"), ("kernel WireGuard", "wireguard-go")):
        if figures.get(a) and figures.get(b):
            ratios = [x / y for x, y in zip(figures[a], figures[b], strict=False) if y]
            print(f"{a} / {b}: median {statistics.median(ratios):.2f}x over {len(ratios)} rounds "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f}); medians "
                  f"{statistics.median(figures[a]) / 1e6:.1f} vs "
                  f"{statistics.median(figures[b]) / 1e6:.1f} Mbit/s")  # fmt: skip
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("updown")
    p.add_argument("--guests", default="3,8")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--settle", type=float, default=20.0, help="idle seconds before memory")
    p.set_defaults(func=updown)
    p = sub.add_parser("image")
    p.set_defaults(func=image)
    p = sub.add_parser("proxy")
    p.add_argument("--lab", required=True)
    p.add_argument("--node")
    p.add_argument("--modes", default="ipvs,nftables,iptables")
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--endpoints", type=int, default=5)
    p.set_defaults(func=proxy)
    p = sub.add_parser("datapath")
    p.add_argument("--lab", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10)
    p.set_defaults(func=datapath)
    args = ap.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
