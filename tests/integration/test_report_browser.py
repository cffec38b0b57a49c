"""The report renders in a real headless Chromium with no console errors and no network.

Debian's chromium is driven over the DevTools protocol (plain CDP over
websocket-client): a report built from the stored synthetic results is opened
as a file:// URL, and the test records every request the page makes, every
console error and uncaught exception, then checks that plotly drew each chart.
In a 1280-pixel-wide window every table and every chart must fit inside its
card (nothing cut off or scrolled out of sight), also for a full 14-entry matrix
with long messages, which the test adds to the stored results.
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
from harness.results.model import RunResults
from harness.results.store import ResultsWriter, RunMeta

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
WIDTH = 1280  # the narrowest window the report is made for
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
    f"--window-size={WIDTH},1000",
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


def _wide_run(path: Path) -> RunResults:
    """A synthetic full matrix (14 entries) with long names and messages everywhere."""
    from harness.conformance import coverage as plan
    from harness.conformance.matrix import preset

    full = preset("full")
    meta = RunMeta("synthetic-wide", "synthetic", full.modes,
                   store.load(GOLDEN / "synthetic-baseline.json").environment,
                   notes="Synthetic fixture: every number is invented.")  # fmt: skip
    w = ResultsWriter(path, meta)
    w.set_plan(plan.results_plan(full, []))
    long = "c1-w1 (pod leak-7-0) → c1-w2 10.244.2.17:8081/udp: " + "very-long-token-" * 12
    for i, mode in enumerate(full.modes):
        for scenario in (1, 3, 10, 19, 20, 23):
            outcome = ("passed", "not-applicable", "not-selected", "failed")[(i + scenario) % 4]
            w.check(scenario, f"test_{'long_name_' * 4}{scenario}", mode=mode, outcome=outcome,
                    message=long, duration_s=1.0 + i)  # fmt: skip
        for what in ("leak_non_wireguard_node_packets_count", "strict_leaked_packets_count"):
            w.record(what, 0.0, "count", mode=mode, scenario=19, threshold=0.0,
                     labels={"capture": "c1-control-plane-node:eth1", "encryption": "on",
                             "control": "no", "note": long})  # fmt: skip
        w.timing("deploy", 12.0 + i, mode)
        w.timing("mode", 30.0 + i, mode)
    w.check(20, "test_traffic_to_a_removed_peer_is_dropped_not_sent_in_clear", mode="vxlan",
            outcome="failed", message=long * 3, duration_s=9.0)  # fmt: skip
    return w.finish()


def _render_report(out: Path) -> Path:
    runs = [store.load(GOLDEN / "synthetic-one-failed.json"), _wide_run(out.with_suffix(".json"))]
    baseline = store.load(GOLDEN / "synthetic-baseline.json")
    html = render.render(runs, render.Sources(("synthetic-one-failed.json",), "baseline"), baseline)
    return render.write(html, out)


# Every table and chart of the page whose right edge lies beyond its card's content box,
# or that is wider than the box it scrolls in (then a part is out of sight).
OVERFLOWS = """
[...document.querySelectorAll('table, .js-plotly-plot')].flatMap(el => {
  const card = el.closest('section');
  const box = card.getBoundingClientRect();
  const pad = parseFloat(getComputedStyle(card).paddingRight);
  const r = el.getBoundingClientRect();
  const where = (card.id || '?') + ' ' + el.tagName.toLowerCase() + '.' + el.className;
  const out = [];
  if (r.right > box.right - pad + 1)
    out.push(where + ' ends at ' + r.right + ' > ' + (box.right - pad));
  const scroller = el.closest('.scroll');
  if (scroller && scroller.scrollWidth > scroller.clientWidth + 1)
    out.push(where + ' scrolls: ' + scroller.scrollWidth + ' > ' + scroller.clientWidth);
  return out;
})
"""


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
    width = chromium.evaluate("window.innerWidth")
    assert width == WIDTH, f"the window is {width} px wide, not {WIDTH}"
    tables = chromium.evaluate("document.querySelectorAll('table').length")
    assert tables >= 10, f"only {tables} tables: the page is not the whole report"
    assert chromium.evaluate(OVERFLOWS) == [], "a table or chart does not fit at 1280 px"
    verdicts = chromium.evaluate(
        "[...document.querySelectorAll('table.evidence tbody tr')].map(tr => "
        "tr.lastElementChild.getBoundingClientRect().right <= "
        "tr.closest('section').getBoundingClientRect().right)"
    )
    assert verdicts and all(verdicts), "an encryption verdict is cut off"

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
        width=WIDTH, height=int(metrics["height"]), deviceScaleFactor=1, mobile=False,
    )  # fmt: skip
    shot = chromium.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    png = tmp_path / "report.png"
    import base64

    png.write_bytes(base64.b64decode(shot["data"]))
    assert png.stat().st_size > 10_000
    print(f"screenshot: {png}")
