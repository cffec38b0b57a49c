"""A capture with a stop file ends when the file appears, not when its window is over."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from pyroute2 import netns

from harness.exec import run
from harness.probes import capture

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed"),
]


def test_a_capture_stops_at_its_stop_file_and_keeps_what_it_saw(tmp_path: Path) -> None:
    ns = f"podlab-t-cap-{os.getpid() % 100000}"
    netns.create(ns)
    try:
        run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
        stop = tmp_path / "stop"
        argv = ["ip", "netns", "exec", ns, *capture.command("lo", "icmp", 60, stop_file=str(stop))]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)  # tcpdump attaches
        run(
            ["ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-p", "c0ffee", "127.0.0.1"]
        )
        started = time.monotonic()
        stop.touch()
        out, _ = proc.communicate(timeout=15)
        assert time.monotonic() - started < 5, "the capture did not stop at its stop file"
        assert capture.parse(out).packets == 4, out  # 2 requests + 2 replies, flushed at the stop
        assert not stop.exists(), "the stop file is removed with the capture"
    finally:
        netns.remove(ns)
