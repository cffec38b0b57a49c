"""``podlab load LAB``: clusterloader2's load test on a running lab, with its SLIs.

Creates pods at a fixed rate (default 10 pods/s, 30 per worker node, hollow and
real), a Service over every other group of pods (or ``--services N`` of them),
churns half of them, deletes
everything; a progress bar shows each phase and Ctrl-C (or a failure) deletes
what the run created (``--cleanup RUN`` finishes that for a run that was killed).
Writes a results file (docs/results-format.md; ``podlab report`` shows its SLOs)
and clusterloader2's ``PerfData`` summary beside it, and prints p50/p90/p99 of
each SLI with its threshold (docs/load.md).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from harness.api.cli import connect, hinted
from harness.api.objects import NodeRecord
from harness.errors import LabError, Problem, UserError
from harness.load import preflight
from harness.load.cost import CostSampler
from harness.load.probe import observe
from harness.load.report import record_results
from harness.load.run import (
    WORKERS,
    LoadConfig,
    LoadRun,
    cleaning,
    delete_run,
    dns_lookups,
    group_count,
    service_groups,
)

STORE_TIMEOUT_S = 30.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``load``."""
    p = sub.add_parser(
        "load",
        help="clusterloader2's load test on a running lab: pods at a fixed rate, SLIs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("lab")
    p.add_argument("--cluster", "-c", help="the cluster (default: the lab's only one)")
    p.add_argument("--etcd", metavar="URL", help="etcd endpoint, bypassing lab discovery")
    p.add_argument("--pods-per-node", type=int, default=30, metavar="N")
    p.add_argument("--rate", type=float, default=10.0, help="pods per second (default 10)")
    p.add_argument("--group-size", type=int, default=10, help="pods per group (Service)")
    p.add_argument(
        "--services",
        type=int,
        metavar="N",
        help="Services, each over one group, spread evenly over the groups "
        "(default: every other group, as CL2); e.g. --group-size 3 --services 10000",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=WORKERS,
        metavar="N",
        help=f"API calls in flight at most (default {WORKERS}); the rate needs rate × a "
        "call's latency of them",
    )
    p.add_argument("--churn", type=float, default=0.5, help="fraction replaced (default 0.5)")
    p.add_argument("--namespace", default="podlab-load")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per wait")
    p.add_argument("--dns-rounds", type=int, default=3, help="lookups per Service per node")
    p.add_argument("--probes", type=int, default=3, help="observed-latency probe Services")
    p.add_argument(
        "--hold",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="hold the full size this long, watching for dead nodes and lost leases",
    )
    p.add_argument(
        "--node-grace",
        type=float,
        default=40.0,
        metavar="SECONDS",
        help="heartbeat age that marks a node dead (the agents' node_grace_s)",
    )
    p.add_argument("--results", metavar="DIR", default="reports/results")
    p.add_argument(
        "--cleanup",
        metavar="RUN",
        help="only delete what run RUN created (its pods and Services, by their label): "
        "after a run that was killed before its own clean-up",
    )
    p.set_defaults(func=hinted(cmd_load))


def check_args(args: argparse.Namespace) -> None:
    bad = []
    if args.pods_per_node < 1:
        bad.append(("--pods-per-node", "must be at least 1", "e.g. --pods-per-node 30"))
    if args.rate <= 0:
        bad.append(("--rate", "must be positive", "e.g. --rate 10"))
    if args.group_size < 1:
        bad.append(("--group-size", "must be at least 1", "e.g. --group-size 10"))
    if args.workers < 1:
        bad.append(("--workers", "must be at least 1", f"e.g. --workers {WORKERS}"))
    if args.services is not None and args.services < 0:
        bad.append(("--services", "must be 0 or more", "e.g. --services 3000"))
    if args.hold < 0:
        bad.append(("--hold", "must be 0 or more seconds", "e.g. --hold 600"))
    if args.node_grace <= 0:
        bad.append(("--node-grace", "must be positive", "e.g. --node-grace 40"))
    if not 0 <= args.churn <= 1:
        bad.append(("--churn", "must be a fraction from 0 to 1", "e.g. --churn 0.5"))
    if bad:
        raise UserError([Problem("podlab load", w, m, h) for w, m, h in bad])


def check_fit(
    nodes: list[NodeRecord], cfg: LoadConfig, service_cidr: str | None, cluster: str
) -> None:
    """Pods per node within each node's subnet and max-pods; Services within the CIDR."""
    out = []
    if not nodes:
        out.append(Problem(f"cluster {cluster}", "nodes", "has no worker node", "deploy the lab"))
    for n in nodes:
        if not n.podCIDR:
            continue
        room = ipaddress.IPv4Network(n.podCIDR).num_addresses - 3  # network, gateway, broadcast
        if cfg.pods_per_node > min(room, 110):
            out.append(Problem(
                "--pods-per-node", str(cfg.pods_per_node),
                f"node {n.name}'s subnet {n.podCIDR} holds {room} pods (and max-pods is 110)",
                f"use --pods-per-node {min(room, 110)} or less",
            ))  # fmt: skip
            break
    groups = group_count(cfg.pods_per_node * len(nodes), cfg)
    services = len(service_groups(groups, cfg))
    if cfg.services is not None and cfg.services > groups:
        out.append(Problem(
            "--services", str(cfg.services),
            f"a Service selects one group of pods and {cfg.pods_per_node} pods on "
            f"{len(nodes)} nodes make {groups} groups of {cfg.group_size}",
            f"use --services {groups} or less, or a smaller --group-size "
            f"({max(1, cfg.pods_per_node * len(nodes) // cfg.services)} gives enough groups)",
        ))  # fmt: skip
    if service_cidr:
        room = ipaddress.IPv4Network(service_cidr).num_addresses - 12  # kube-dns and reserved
        if services > room:
            flag, value, fix = (
                ("--services", str(cfg.services), f"use --services {room} or fewer")
                if cfg.services is not None
                else ("--group-size", str(cfg.group_size),
                      f"use --group-size {cfg.group_size * (services // room + 1)} or more")
            )  # fmt: skip
            out.append(Problem(
                flag, value,
                f"{services} Services do not fit the service CIDR {service_cidr} ({room} free)",
                fix,
            ))  # fmt: skip
    if out:
        raise UserError(out)


def netns_paths(lab: str | None, nodes: list[str]) -> dict[str, Path]:
    """Each node's network namespace (a netns lab's node process), when reachable from here."""
    if not lab:
        return {}
    from harness.lab.status import find_node

    out = {}
    for n in nodes:
        try:
            out[n] = Path(f"/proc/{find_node(n, lab).pid}/ns/net")
        except UserError:
            continue
    return out


def cmd_load(args: argparse.Namespace) -> int:
    check_args(args)
    # a starved etcd answers late: a slow call is an API latency sample (an SLI miss above
    # 1 s), not the end of the run (a 1,000-node run at load 47 died on one 5 s timeout)
    client, target = connect(args, timeout=STORE_TIMEOUT_S)
    if args.cleanup:
        delete_run(client, client.store, args.namespace, args.cleanup)
        Console(highlight=False).print(f"{args.cleanup}: nothing of it is left in {args.namespace}")
        return 0
    cfg = LoadConfig(
        namespace=args.namespace, pods_per_node=args.pods_per_node, rate=args.rate,
        group_size=args.group_size, services=args.services, churn=args.churn,
        timeout_s=args.timeout, dns_rounds=args.dns_rounds, hold_s=args.hold,
        node_grace_s=args.node_grace, workers=args.workers,
    )  # fmt: skip
    every = client.nodes()
    nodes = [n for n in every if getattr(n, "role", "worker") != "control-plane"]
    check_fit(nodes, cfg, target.service_cidr, target.cluster)
    hollow = sum(1 for n in nodes if n.hollow)
    need = preflight.Need(
        hollow_pods=hollow * cfg.pods_per_node,
        real_pods=(len(nodes) - hollow) * cfg.pods_per_node,
    )
    refused = preflight.problems(need, preflight.Have.read(), f"podlab load {args.lab}")
    if refused:
        raise UserError(refused)
    out = Console(highlight=False)
    run_id = f"load-{args.lab}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    real = [n.name for n in every if not n.hollow]
    spaces = netns_paths(target.lab, real)
    sampler = CostSampler(spaces)
    skipped = ""
    if not spaces:
        skipped = (
            "DNS, observed network programming and process costs not measured: they enter "
            "the real nodes' namespaces from this host (a netns lab's)"
        )
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    out.print(
        f"{run_id}: {len(nodes)} worker nodes ({hollow} hollow), {cfg.pods_per_node} pods each "
        f"at {cfg.rate:g} pods/s; load average {' '.join(load_before)}"
    )
    if skipped:
        out.print(skipped)
    run = LoadRun(client, cfg, run_id)
    agents = [spaces[n] for n in real if n in spaces and n in {x.name for x in nodes}]
    started = time.monotonic()
    failure: LabError | None = None
    with Progress(
        TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=out, transient=not sys.stdout.isatty(),
    ) as bar, cleaning(run):  # fmt: skip
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        run.progress = progress
        sampler.start()
        dns = dns_lookups(sys.executable, agents, target.service_cidr or "10.96.0.0/12",
                          cfg.dns_rounds, run.samples)  # fmt: skip
        probe_at = {n: spaces[n] for n in real if n in spaces}
        workers = {n: p for n, p in probe_at.items() if n in {x.name for x in nodes}}

        def probe() -> list[float]:
            if not workers or args.probes == 0:
                return []
            return observe(client, cfg.namespace, run_id, probe_at, sys.executable,
                           args.probes, workers=sorted(workers))  # fmt: skip

        try:
            samples = run.run(nodes, dns, probe)
        except LabError as exc:  # what was measured up to the failure is still written
            failure, samples = exc, run.samples
    cost = sampler.finish()
    wall = time.monotonic() - started
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    results = Path(args.results) / f"{run_id}.json"
    slis, cost_lines = record_results(
        results, run_id, target, samples, cost, hollow, len(nodes) - hollow, cfg,
        notes=(f"FAILED: {failure}; " if failure else "") +
        f"podlab load {' '.join(sys.argv[2:])}; load average before "
        f"{' '.join(load_before)}, after {' '.join(load_after)}; {wall:.0f} s. {skipped}",
    )  # fmt: skip
    table = Table("SLI", "p50", "p90", "p99", "n", "threshold", "verdict")
    for s in slis:
        t = s.threshold
        verdict = "-" if s.passed is None else ("[green]pass[/]" if s.passed else "[red]FAIL[/]")
        table.add_row(
            s.family + (f" ({s.labels['kind']})" if "kind" in s.labels else ""),
            *(f"{s.p[q]:.3f} s" for q in (50, 90, 99)), str(s.samples),
            f"p{t.quantile} ≤ {t.bound:g} s" if t else "", verdict,
        )  # fmt: skip
    out.print(table)
    for line in cost_lines:
        out.print(line)
    out.print(f"results: {results} (PerfData: {results.with_suffix('.perfdata.json')})")
    out.print(f"{wall:.0f} s; load average after {' '.join(load_after)}")
    if failure is not None:
        raise failure
    held = samples.held
    unsteady = held is not None and bool(held.dead or held.leases_lost)
    return 1 if unsteady or any(s.passed is False for s in slis) else 0
