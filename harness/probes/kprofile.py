"""Where a flow's CPU goes, by kernel function family: ``perf record -a`` around a run.

Throughput on a shared machine moves with the neighbours; CPU per bit moves far
less, and a sampling profile says what that CPU is made of. ``Profiler`` samples
every CPU (``perf record -a``, the ``cpu-clock`` software event: a VM has no
hardware counters) while a measurement runs; ``samples`` reads the samples of
the given commands (``iperf3``: on a veth path the kernel's forwarding,
encapsulation and netfilter work for a flow runs in its two ends' contexts)
per function; ``by_family`` folds functions into families (copy, checksum,
netfilter, VXLAN/UDP, bridge, veth, …) by name, first match wins, so two paths'
profiles can be compared per Gbit and the difference named
(``bench/bench_mesh_throughput.py --profile``).
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

#: (family, pattern on the symbol name); the first that matches wins, so the specific
#: families come first (``csum_partial_copy_generic`` is checksum, ``ipv4_conntrack_in``
#: netfilter, ``vxlan_xmit_one`` VXLAN, before the generic copy/IP/memory patterns)
FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("checksum", r"csum|checksum"),
        ("netfilter", r"^_*nf_|^_*nft_|conntrack|^ipt_|^xt_|^br_nf|ip_sabotage|nf_hook"),
        ("vxlan/udp", r"vxlan|udp_tunnel|iptunnel|^_*udp|gro_cell|skb_udp"),
        ("bridge", r"^_*br_|^nbp_|fdb"),
        ("veth", r"veth"),
        ("copy", r"copy|rep_movs|memcpy|memmove"),
        ("gro/gso", r"gro|gso|skb_segment"),
        ("tcp", r"tcp"),
        ("ip/route/dev", r"^_*ip_|^_*ipv4|fib|^_*dst_|neigh|^_*rt_|netif|napi|net_rx|"
                         r"process_backlog|^_*dev_|xmit|qdisc|sch_|^eth_|inet_|sock_"),
        ("memory/skb", r"alloc|free|kmem|slab|page|skb|memcg|folio"),
        ("locks/sched/syscall", r"spin|lock|sched|switch|wake|irq|rcu|futex|sys_|syscall|"
                                r"entry_|ret_from|poll|select|epoll"),
    )
)  # fmt: skip
OTHER = "other"


def family(symbol: str) -> str:
    """The family of one kernel function name (``OTHER`` when none matches)."""
    for name, pattern in FAMILIES:
        if pattern.search(symbol):
            return name
    return OTHER


def parse_report(text: str, comms: tuple[str, ...]) -> Counter[str]:
    """Samples per kernel symbol of the given commands, from ``perf report`` with
    ``--sort comm,sym -F sample,comm,sym --field-separator='|'`` (user-space symbols,
    ``[.]``, count as ``[user]``)."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        n, comm, sym = int(parts[0]), parts[1], parts[2]
        if comm not in comms:
            continue
        kernel = sym.startswith("[k] ")
        out[sym[4:] if kernel else "[user]"] += n
    return out


def by_family(symbols: Counter[str]) -> Counter[str]:
    """Samples per family (``[user]`` is its own family: iperf3's own code)."""
    out: Counter[str] = Counter()
    for sym, n in symbols.items():
        out["user" if sym == "[user]" else family(sym)] += n
    return out


@dataclass(frozen=True)
class Profile:
    """One profiled run: samples per symbol of the flow's processes, at ``hz``."""

    symbols: Counter[str]
    hz: int
    lost: int = 0  # samples perf dropped (all processes)

    def ms(self, samples: float) -> float:
        return samples * 1000 / self.hz

    def families(self) -> Counter[str]:
        return by_family(self.symbols)


class Profiler:
    """``perf record -a -F HZ`` from ``start()`` to ``stop()`` (SIGINT, by its pid)."""

    def __init__(self, path: Path, hz: int = 999) -> None:
        self.path, self.hz = path, hz
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # 16 MiB of ring buffer: on a busy machine perf's writer runs late and the
        # default buffer drops samples (``Profile.lost`` says how many)
        argv = ["perf", "record", "-q", "-a", "-m", "16M", "-F", str(self.hz),
                "-o", str(self.path)]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self, comms: tuple[str, ...] = ("iperf3",)) -> Profile:
        if self.proc is None:
            raise RuntimeError("profiler not started")
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"perf record did not stop; {self.path} may be incomplete") from None
        finally:
            self.proc = None
        argv = ["perf", "report", "-i", str(self.path), "--stdio", "--no-children",
                "--sort", "comm,sym", "-F", "sample,comm,sym", "--field-separator=|"]  # fmt: skip
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        self.path.unlink(missing_ok=True)
        if res.returncode != 0:
            raise RuntimeError(f"perf report failed: {res.stderr.strip()[:200]}")
        lost = re.search(r"Total Lost Samples: (\d+)", res.stdout)
        return Profile(parse_report(res.stdout, comms), self.hz, int(lost.group(1)) if lost else 0)
