"""Environment capture: version parsers on captured output, and a real capture here."""

from __future__ import annotations

import os
import platform

import pytest

from harness.results import env

# Output captured from the tools on Debian 12 (bird prints its version on stderr).
CAPTURED = {
    "iperf3": ("iperf 3.12 (cJSON 1.7.15)\nLinux vm 6.18.44 #1 SMP x86_64\n", "3.12"),
    "etcd": ("etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n", "3.4.23"),
    "bird": ("BIRD version 2.0.12\n", "2.0.12"),
    "wireguard-go": (
        "wireguard-go v0.0.20220316\n\nUserspace WireGuard daemon for linux-amd64.\n",
        "0.0.20220316",
    ),
    "wg": (
        "wireguard-tools v1.0.20210914 - https://git.zx2c4.com/wireguard-tools/\n",
        "1.0.20210914",
    ),
    "nft": ("nftables v1.0.6 (Lester Gooch #5)\n", "1.0.6"),
    "tcpdump": ("tcpdump version 4.99.3\nlibpcap version 1.10.3\n", "4.99.3"),
}


@pytest.mark.parametrize("tool", sorted(CAPTURED))
def test_parse_version(tool: str) -> None:
    output, expected = CAPTURED[tool]
    assert env.parse_version(tool, output) == expected
    assert env.parse_version(tool, "something else entirely") == "unknown"


def test_parse_cpu_model() -> None:
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
    assert env.parse_cpu_model(text) == "AMD EPYC 7B13"
    assert env.parse_cpu_model("processor: 0\n") == ""


def test_missing_tool_is_absent() -> None:
    def runner(argv: list[str], **_: object) -> object:
        from harness.errors import ToolError

        raise ToolError(argv, 127, f"{argv[0]}: not found")

    assert env.tool_version("iperf3", runner=runner) == env.ABSENT


def test_capture_describes_this_machine() -> None:
    e = env.capture(fallbacks=["wireguard-go", "wireguard-go"], tools=["nft", "iperf3"])
    assert e.kernel == platform.release()
    assert e.cpu_count == os.cpu_count()
    assert e.python == platform.python_version()
    assert e.fallbacks == ("wireguard-go",)
    assert set(e.tools) == {"nft", "iperf3"}
    assert all(v and v != "unknown" for v in e.tools.values()), e.tools
