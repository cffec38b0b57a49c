"""The report renders in a real headless Chromium with no console errors and no network.

Debian's chromium is driven over the DevTools protocol (plain CDP over
websocket-client): a report built from the stored synthetic results is opened
as a file:// URL, and the test records every request the page makes, every
console error and uncaught exception, then checks that plotly drew each chart.
A full-page screenshot is kept next to the report (and its path printed) so a
person can look at it.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness.report import render
from harness.results import store

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
GOLDEN = Path(__file__).parent.parent / "golden" / "results"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
]

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")


class Cdp:
    """A minimal DevTools-protocol client for one page: commands and collected events."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and wait for its reply, keeping events that arrive meanwhile."""
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until an event named ``method`` has arrived (it may already have)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.events:
                if ev["method"] == method:
                    return ev
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(f"no {method} within {timeout} s")

    def evaluate(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return res["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def chromium(tmp_path: Path):
    """A headless Chromium with a fresh profile; stopped by its process group id."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    profile = tmp_path / "profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        cdp = Cdp(pages[0]["webSocketDebuggerUrl"])
        try:
            yield cdp
        finally:
            cdp.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _render_report(out: Path) -> Path:
    runs = [store.load(GOLDEN / "synthetic-one-failed.json")]
    baseline = store.load(GOLDEN / "synthetic-baseline.json")
    html = render.render(runs, render.Sources(("synthetic-one-failed.json",), "baseline"), baseline)
    return render.write(html, out)


def _open(cdp: Cdp, url: str) -> None:
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.send(f"{domain}.enable")
    cdp.send("Page.navigate", url=url)
    cdp.wait_event("Page.loadEventFired")


def _console_errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for ev in events:
        p = ev.get("params", {})
        if ev["method"] == "Runtime.exceptionThrown":
            errors.append(json.dumps(p["exceptionDetails"])[:300])
        elif ev["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            errors.append(json.dumps(p["args"])[:300])
        elif ev["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(p["entry"]["text"][:300])
    return errors


def test_report_renders_offline_without_errors(chromium: Cdp, tmp_path: Path) -> None:
    report = _render_report(tmp_path / "report.html")
    url = report.resolve().as_uri()
    _open(chromium, url)
    expected = chromium.evaluate("document.querySelectorAll('script.figure').length")
    assert expected >= 3, "the stored results should give throughput, latency and timeline charts"
    drawn = 0
    for _ in range(100):
        drawn = chromium.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length")
        if drawn >= expected:
            break
        time.sleep(0.1)
    plots = chromium.evaluate("document.querySelectorAll('.js-plotly-plot').length")
    assert plots == expected, f"plotly drew {plots} of {expected} charts"
    bars = chromium.evaluate("document.querySelectorAll('.js-plotly-plot g.point').length")
    assert bars > 0, "the charts have no bars or points"
    titles = chromium.evaluate(
        "[...document.querySelectorAll('.js-plotly-plot .ytitle')].map(e => e.textContent)"
    )
    assert "Throughput (Gbit/s)" in titles and "Round-trip time (ms)" in titles, titles
    failed_cell = chromium.evaluate(
        'document.querySelector(\'td.cell[data-scenario="3"][data-mode="vxlan"]\').className'
    )
    assert "failed" in failed_cell

    requests = [
        e["params"]["request"]["url"]
        for e in chromium.events
        if e["method"] == "Network.requestWillBeSent"
    ]
    others = [u for u in requests if u != url]
    assert requests.count(url) == 1 and not others, f"unexpected requests: {others}"
    assert _console_errors(chromium.events) == []

    metrics = chromium.send("Page.getLayoutMetrics")["cssContentSize"]
    chromium.send(
        "Emulation.setDeviceMetricsOverride",
        width=1400, height=int(metrics["height"]), deviceScaleFactor=1, mobile=False,
    )  # fmt: skip
    shot = chromium.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    png = tmp_path / "report.png"
    import base64

    png.write_bytes(base64.b64decode(shot["data"]))
    assert png.stat().st_size > 10_000
    print(f"screenshot: {png}")
