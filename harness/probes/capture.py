"""Packet capture on an underlay interface (tcpdump): command and parser.

The leak and encapsulation checks only need to count packets matching a BPF
filter and to know whether a canary string crossed the wire in clear text, so
the capture prints headers with epoch timestamps (``-tt``) and payloads as ASCII
(``-A``), and the parser counts header lines and searches for the canary.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

_HEADER = re.compile(r"^\d{9,}\.\d{6} (IP|ARP|IP6)\b", re.MULTILINE)
_CAPTURED = re.compile(r"(\d+) packets? captured")


def command(
    iface: str, bpf: str, duration_s: float, snaplen: int = 0, stop_file: str = ""
) -> list[str]:
    """Capture on ``iface`` for ``duration_s`` seconds (bounded by ``timeout``), no DNS.

    With ``stop_file`` the capture ends as soon as that file exists on the node
    (``duration_s`` is then only the upper bound): a check that has sent its
    traffic stops waiting for a fixed window, so what follows it (a retry timed
    against the agent's resync) is not pushed back by seconds of idle capture.
    """
    argv = ["timeout", f"{duration_s:g}", "tcpdump", "-i", iface, "-n", "-l", "-tt", "-A",
            "-s", str(snaplen), bpf]  # fmt: skip
    if not stop_file:
        return argv
    stop = shlex.quote(stop_file)
    script = (
        f"{shlex.join(argv)} & p=$!; "
        f"while kill -0 $p 2>/dev/null && [ ! -e {stop} ]; do sleep 0.05; done; "
        f"kill $p 2>/dev/null; wait $p; rm -f {stop}"
    )  # SIGTERM (a background job ignores SIGINT): timeout passes it on, tcpdump flushes
    return ["sh", "-c", script]


@dataclass(frozen=True)
class Capture:
    """What a capture saw: packet count and whether the canary appeared in clear."""

    packets: int
    canary_seen: bool
    headers: tuple[str, ...]

    def describe(self) -> str:
        canary = "canary seen in clear" if self.canary_seen else "no canary"
        return f"{self.packets} packets, {canary}"


def parse(output: str, canary: str = "") -> Capture:
    """Count packets (header lines; tcpdump's own total when larger) and look for ``canary``."""
    headers = tuple(line for line in output.splitlines() if _HEADER.match(line))
    total = _CAPTURED.search(output)
    packets = max(len(headers), int(total[1]) if total else 0)
    return Capture(packets, bool(canary) and canary in output, headers[:50])
