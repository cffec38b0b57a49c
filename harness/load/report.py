"""A load run's samples → SLIs, the results file and clusterloader2's PerfData summary.

Results names (docs/load.md): ``pod_startup_p{50,90,99}_s`` (``labels.kind`` =
``real`` or ``hollow``), ``api_call_p*_s`` (``labels.verb`` = ``mutating``,
``get``, ``list``), ``network_programming_p*_s`` (scenario 13, ``labels.how`` =
``agent-histogram`` or ``probe``), ``dns_lookup_p*_s`` and ``dns_errors_percent``, and the
costs ``rss_bytes`` / ``cpu_cores`` with ``labels.process`` (``hollow-per-node``,
``etcd``, ``agent``) and ``labels.node``. Only the p99 (and DNS p50) records
carry the threshold, so the report's SLO table judges each SLI once.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.api.target import Target
from harness.load import etcdmetrics, sli
from harness.load.cost import Cost
from harness.load.run import LoadConfig, Samples
from harness.results import env
from harness.results.store import ResultsWriter, RunMeta

NETPROG_SCENARIO = 13  # CONFORMANCE.md: network programming latency


def slis_of(samples: Samples) -> list[sli.Sli]:
    """Every latency SLI the samples allow (one without samples is left out, not zero)."""
    out = []
    for kind in ("real", "hollow"):
        vals = samples.startup(kind == "hollow")
        if vals:
            out.append(sli.Sli("pod_startup", sli.quantiles(vals), len(vals), {"kind": kind}))
    for verb, vals in samples.api.items():
        if vals:
            out.append(sli.Sli(f"api_{verb}", sli.quantiles(vals), len(vals), {"verb": verb}))
    le, pooled = sli.diff_histograms(samples.netprog_before, samples.netprog_after)
    if pooled and pooled[-1] > 0:
        p = {q: sli.histogram_quantile(q, le, pooled) for q in sli.QUANTILES}
        out.append(sli.Sli("network_programming", p, int(pooled[-1]), {"how": "agent-histogram"}))
    if samples.probe_s:
        p = sli.quantiles(samples.probe_s)
        out.append(sli.Sli("network_programming_probe", p, len(samples.probe_s), {"how": "probe"}))
    if samples.dns_s:
        out.append(sli.Sli("dns_lookup", sli.quantiles(samples.dns_s), len(samples.dns_s)))
    return out


def record_results(
    path: Path,
    run_id: str,
    target: Target,
    samples: Samples,
    cost: Cost,
    hollow: int,
    real: int,
    cfg: LoadConfig,
    notes: str = "",
) -> tuple[list[sli.Sli], list[str]]:
    """Write the results file and its PerfData summary; return the SLIs and cost lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = RunMeta(
        run_id=run_id, topology=target.lab or target.cluster, modes=("load",),
        environment=env.capture(lab=target.lab), notes=notes,
    )  # fmt: skip
    w = ResultsWriter(path, meta)
    common = {"cluster": target.cluster, "hollow_nodes": str(hollow), "real_nodes": str(real),
              "pods_per_node": str(cfg.pods_per_node), "rate": f"{cfg.rate:g}"}  # fmt: skip
    slis = slis_of(samples)
    for s in slis:
        name = "api_call" if s.family.startswith("api_") else s.family
        name = "network_programming" if name.startswith("network_programming") else name
        t = s.threshold
        for q, v in s.p.items():
            bound = t.bound if t and t.quantile == q else None
            if s.family == "dns_lookup" and q == 50:
                bound = sli.DNS_P50_S
            labels = {**common, **s.labels, "samples": str(s.samples)}
            scenario = NETPROG_SCENARIO if s.family.startswith("network_programming") else None
            w.record(f"{name}_p{q}_s", v, "s", mode="load", threshold=bound, labels=labels,
                     scenario=scenario)  # fmt: skip
    lookups = len(samples.dns_s) + samples.dns_errors
    if lookups:
        pct = 100.0 * samples.dns_errors / lookups
        w.record("dns_errors_percent", pct, "percent", mode="load",
                 threshold=sli.DNS_ERRORS_PERCENT, labels=common)  # fmt: skip
    lines = cost_records(w, cost, hollow, common)
    lines += hold_records(w, samples, common)
    lines += breakdown_records(w, samples, common)
    lines += etcd_records(w, samples, common)
    for phase, seconds in samples.phases.items():
        w.timing(phase, seconds, mode="load")
    w.finish()
    summary = sli.perf_data(slis)
    path.with_suffix(".perfdata.json").write_text(json.dumps(summary, indent=2) + "\n")
    return slis, lines


def cost_records(w: ResultsWriter, cost: Cost, hollow: int, common: dict[str, str]) -> list[str]:
    """RSS and CPU per process; the hollow runner's also per hollow node."""
    lines = []
    for (node, role), rss in sorted(cost.rss.items()):
        cores = cost.cores.get((node, role), 0.0)
        labels = {**common, "process": role, "node": node}
        w.record("rss_bytes", float(rss), "bytes", mode="load", labels=labels)
        w.record("cpu_cores", cores, "cores", mode="load", labels=labels)
        waited = cost.waits.get((node, role))
        if waited is not None:
            w.record("cpu_wait_cores", waited, "cores", mode="load", labels=labels)
        line = f"{role:7} on {node}: RSS {rss / 2**20:.1f} MB, CPU {cores:.3f} cores"
        if waited is not None:
            line += f", waited for a CPU {waited:.3f}"
        if role == "hollow" and hollow:
            per = {**labels, "process": "hollow-per-node"}
            w.record("rss_bytes", rss / hollow, "bytes", mode="load", labels=per)
            w.record("cpu_cores", cores / hollow, "cores", mode="load", labels=per)
            line += f" ({rss / hollow / 1024:.0f} KiB, {cores / hollow * 1000:.2f} mcores per node)"
        lines.append(line)
    return lines


def hold_records(w: ResultsWriter, samples: Samples, common: dict[str, str]) -> list[str]:
    """The hold phase (``--hold``): nodes marked dead and leases lost, each judged ≤ 0."""
    h = samples.held
    if h is None:
        return []
    labels = {**common, "hold_s": f"{h.seconds:.0f}", "nodes": str(h.nodes)}
    w.record("hold_nodes_dead_count", float(len(h.dead)), "count", mode="load", threshold=0.0,
             labels=labels)  # fmt: skip
    w.record("hold_leases_lost_count", float(len(h.leases_lost)), "count", mode="load",
             threshold=0.0, labels={**labels, "leases": str(h.leases)})  # fmt: skip
    w.record("hold_heartbeat_age_max_s", h.max_heartbeat_age_s, "s", mode="load", labels=labels)
    runners = ""
    if h.runners:  # the hollow runners' own view: how late their heartbeats landed
        rl = {**labels, "runners": str(h.runners), "beats": str(h.beats)}
        for q, v in sorted(h.tick_lag_s.items()):
            w.record(f"hold_hollow_tick_lag_p{q}_s", v, "s", mode="load", labels=rl)
        w.record("hold_hollow_beats_late_count", float(h.beats_late), "count", mode="load",
                 labels=rl)  # fmt: skip
        w.record("hold_hollow_runner_lease_lost_count", float(h.runner_leases_lost), "count",
                 mode="load", threshold=0.0, labels=rl)  # fmt: skip
        lag = ", ".join(f"p{q} {v:.3f} s" for q, v in sorted(h.tick_lag_s.items())) or "no beats"
        runners = (
            f"; {h.runners} hollow runner(s): {h.beats} heartbeats, tick lag {lag}, "
            f"{h.beats_late} more than a period late, {h.runner_leases_lost} runner leases lost"
        )
    dead = f" ({', '.join(sorted(h.dead)[:5])}{' …' if len(h.dead) > 5 else ''})" if h.dead else ""
    return [
        f"hold {h.seconds:.0f} s over {h.nodes} nodes, {h.samples} samples: {len(h.dead)} marked "
        f"dead{dead}, {len(h.leases_lost)} of {h.leases} leases lost, oldest heartbeat seen "
        f"{h.max_heartbeat_age_s:.1f} s{runners}"
    ]


def breakdown_records(w: ResultsWriter, samples: Samples, common: dict[str, str]) -> list[str]:
    """Where a mutating call's time went (issue 15: mutating p99 2.58 s at 1,000 nodes).

    Per pod create and delete: the call's seconds, the etcd round trips it made and their
    seconds (measured around each HTTP request to etcd's gateway: etcd's own time, the
    gateway's and the request's), the rest being the client's own work in Python (admission,
    JSON, waiting for the interpreter and the CPU). Per gateway path: every round trip of
    the load process. Per phase: how long a paced job waited for a free worker, which is
    what holds the rate below ``--rate`` (records ``api_breakdown_*``, no threshold).
    """
    lines = []
    for what, calls in samples.calls.items():
        if not calls:
            continue
        total = sli.quantiles([c[0] for c in calls])
        etcd = sli.quantiles([c[2] for c in calls])
        rest = sli.quantiles([max(0.0, c[0] - c[2]) for c in calls])
        trips = sorted(c[1] for c in calls)[len(calls) // 2]
        share = sum(c[2] for c in calls) / max(1e-9, sum(c[0] for c in calls))
        labels = {**common, "call": what, "samples": str(len(calls)), "round_trips": str(trips)}
        for part, p in (("call", total), ("etcd", etcd), ("client", rest)):
            for q, v in p.items():
                w.record(f"api_breakdown_{part}_p{q}_s", v, "s", mode="load", labels=labels)
        w.record("api_breakdown_etcd_ratio", share, "ratio", mode="load", labels=labels)
        lines.append(
            f"pod {what} ({len(calls)}): call p50 {total[50]:.3f} / p99 {total[99]:.3f} s; "
            f"{trips} etcd round trips (median), their sum p50 {etcd[50]:.3f} / p99 "
            f"{etcd[99]:.3f} s ({share:.0%} of all call time); the rest (client) p50 "
            f"{rest[50]:.3f} / p99 {rest[99]:.3f} s"
        )
    for path, vals in sorted(samples.etcd.items()):
        p = sli.quantiles(vals)
        labels = {**common, "path": path, "samples": str(len(vals))}
        for q, v in p.items():
            w.record(f"api_breakdown_etcd_round_trip_p{q}_s", v, "s", mode="load", labels=labels)
        lines.append(
            f"etcd {path}: {len(vals)} round trips, p50 {p[50]:.4f} / p90 {p[90]:.4f} / "
            f"p99 {p[99]:.4f} s"
        )
    for phase, waits in samples.queued.items():
        if not waits:
            continue
        p = sli.quantiles(waits)
        busy = sum(1 for x in waits if x > 0.05)
        labels = {**common, "phase": phase, "samples": str(len(waits))}
        for q, v in p.items():
            w.record(f"api_breakdown_worker_wait_p{q}_s", v, "s", mode="load", labels=labels)
        lines.append(
            f"{phase}: waited for a free worker p50 {p[50]:.3f} / p99 {p[99]:.3f} s "
            f"({busy} of {len(waits)} jobs over 50 ms)"
        )
    return lines


def etcd_records(w: ResultsWriter, samples: Samples, common: dict[str, str]) -> list[str]:
    """etcd's own figures over the creates and over the whole run (etcdmetrics.py):
    WAL fsync and backend commit quantiles, applies slower than 100 ms, etcd's CPU."""
    lines = []
    got = samples.etcd_metrics
    for window, (a, b) in (("create", ("start", "created")), ("run", ("start", "end"))):
        if a not in got or b not in got:
            continue
        before, after = got[a], got[b]
        labels = {**common, "window": window}
        parts = []
        for h, short in ((etcdmetrics.HISTOGRAMS[0], "wal_fsync"),
                         (etcdmetrics.HISTOGRAMS[1], "backend_commit")):  # fmt: skip
            le, grown = sli.diff_histograms({"e": before[h]}, {"e": after[h]})
            if not grown or grown[-1] <= 0:
                continue
            p = {q: sli.histogram_quantile(q, le, grown) for q in sli.QUANTILES}
            for q, v in p.items():
                w.record(f"etcd_{short}_p{q}_s", v, "s", mode="load",
                         labels={**labels, "samples": str(int(grown[-1]))})  # fmt: skip
            parts.append(f"{short} p50 {p[50] * 1000:.1f} / p99 {p[99] * 1000:.1f} ms "
                         f"({int(grown[-1])})")  # fmt: skip
        seconds = max(1e-9, after["time"] - before["time"])
        cores = (after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]) / seconds
        slow = after["etcd_server_slow_apply_total"] - before["etcd_server_slow_apply_total"]
        calls = after["grpc_server_handled_total"] - before["grpc_server_handled_total"]
        w.record("etcd_cpu_cores", cores, "cores", mode="load", labels=labels)
        w.record("etcd_slow_apply_count", slow, "count", mode="load", labels=labels)
        w.record("etcd_grpc_rps", calls / seconds, "rps", mode="load", labels=labels)
        lines.append(
            f"etcd over the {window} ({seconds:.0f} s): {', '.join(parts) or 'no fsync'}; "
            f"{slow:.0f} applies over 100 ms; {calls / seconds:.1f} gRPC calls/s; "
            f"CPU {cores:.3f} cores"
        )
    return lines
