"""The agent's network programming latency histogram (harness/agent/netprog.py)."""

from __future__ import annotations

from harness.agent.netprog import LE, Histogram, ProgrammingLatency, ready_transition


def status(ready_at: str | None) -> dict:
    cond = {"type": "Ready", "status": "True"}
    if ready_at:
        cond["lastTransitionTime"] = ready_at
    return {"conditions": [{"type": "PodScheduled", "status": "True"}, cond]}


def test_ready_transition_reads_the_ready_condition() -> None:
    assert ready_transition(status("1970-01-01T00:01:40.5Z")) == 100.5
    assert ready_transition(status(None)) is None
    assert ready_transition({"conditions": [{"type": "Ready", "lastTransitionTime": "x"}]}) is None


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram()
    for v in (0.003, 0.3, 2.5):
        h.observe(v)
    rec = h.record()
    counts = dict(zip(rec["le"], rec["counts"], strict=True))
    assert counts[0.005] == 1 and counts[0.25] == 1 and counts[0.5] == 2
    assert counts[2.0] == 2 and counts[3.0] == 3 and counts[300.0] == 3
    assert rec["count"] == 3 and abs(rec["sum_s"] - 2.803) < 1e-9
    assert list(LE) == sorted(LE)


def test_a_change_is_observed_once_after_the_pass_that_applied_it() -> None:
    now = [200.0]
    lat = ProgrammingLatency(clock=lambda: now[0])
    lat.listed("podstatus/d/a", status("1970-01-01T00:01:40Z"))  # t=100, from a listing
    lat.changed("podstatus/d/a", status("1970-01-01T00:01:40Z"))  # same transition: no trigger
    assert lat.begin() == []
    lat.changed("podstatus/d/b", status("1970-01-01T00:03:19.8Z"))  # t=199.8
    lat.changed("podstatus/d/b", status("1970-01-01T00:03:19.8Z"))  # a heartbeat rewrite
    taken = lat.begin()
    assert taken == [199.8]
    lat.retry(taken)  # a failed pass: kept for the next one
    taken = lat.begin()
    now[0] = 200.1
    lat.done(taken)
    assert lat.hist.count == 1 and abs(lat.hist.sum_s - 0.3) < 1e-6
    assert lat.begin() == [] and lat.version == 1
    lat.changed("podstatus/d/b", None)  # deleted: forgotten, a new pod of that name counts
    lat.changed("podstatus/d/b", status("1970-01-01T00:03:19.8Z"))
    assert lat.begin() == [199.8]
