"""Scenario 23, a mode switch under live flows: the flows, their judging, and in a
lockstep run the whole-lab switch between two phases measured under them.

The flows (``start``/``stop``): a long-lived TCP connection and a UDP stream from a
client pod to a server pod on another node (the cross-node path), each request
counted per 0.5 s bucket (``harness.probes.echo.flow_command``). ``judge`` reads
them against the switch: healthy before it, recovered (a fully answered bucket)
after the agents were ready again; how long they stopped is a measurement. The
suite's test (suites/test_modeswitch.py: a single-cluster or per-cluster run,
where the switch is its session's switch to the next entry) and this module's
``main`` share them.

``python -m harness.conformance.switchflows --lab LAB --results DIR --from E --to F``:
what ``make conformance`` runs in a lockstep run (ADR 0018, amendment 6) after the
barrier of a phase where the matrix selects 23 (``matrix.switch_flows``), instead
of the bare whole-lab switch: a client and a server pod on two nodes of EACH
cluster, the flows started, the same switch the script ran (``podlab deploy
--switch``, else the full deploy), the agents' ready wait, ``SETTLE_S`` of flow,
then one scenario-23 check per cluster (mode: the phase's entry, label ``to``: the
next) with its outages and timelines, the switch's seconds and the step's timings,
in its own results file in DIR; the pods are removed. Not a pytest session: pytest's
start-up cost 5-8 s here. Exit 0: passed; 1: a check failed, the switch was made
(the run goes on); 3: the switch failed or was interrupted (the run stops); 2: bad
arguments.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from harness.conformance import services as svc
from harness.conformance.pods import TCP_PORT, UDP_PORT, Pod
from harness.conformance.remote import output
from harness.probes import echo

SETTLE_S = 5.0  # of flow after the agents are ready: the recovery's evidence
# before the deploy: this long after each flow's first answer (its ready file; it was a
# fixed SETTLE_S from the start, ssh and the interpreter's start-up included), so the
# flows show several healthy 0.5 s buckets before the switch
LEAD_S = 2.0
FLOW_MAX_S = 240.0
PROTOS = (("tcp", TCP_PORT), ("udp", UDP_PORT))
CHECK = "test_flows_survive_a_mode_switch"  # the suite test's name: one check, two places


@dataclass
class Flows:
    """The TCP and UDP flows running from ``client`` to ``server``."""

    client: Pod
    server: Pod
    stop_file: str
    lead: dict[str, str]  # proto -> its ready file (the flow answered, LEAD_S passed)
    running: dict[str, Future[Any]]


def start(pool: ThreadPoolExecutor, client: Pod, server: Pod) -> Flows:
    """Start both flows in ``pool`` (each holds a thread until ``stop``)."""
    stop_file = f"/run/podlab-flow-{uuid.uuid4().hex[:8]}.stop"  # node-private /run
    lead = {proto: svc.ready_file(f"flow-{proto}") for proto, _ in PROTOS}
    client.node.run(["rm", "-f", stop_file, *lead.values()], timeout_s=10)
    running = {
        proto: pool.submit(
            client.run,
            echo.flow_command(proto, server.ip, port, FLOW_MAX_S, stop_file=stop_file,
                              ready=(lead[proto], LEAD_S)),
            FLOW_MAX_S + 30,
        )
        for proto, port in PROTOS
    }  # fmt: skip
    return Flows(client, server, stop_file, lead, running)


def wait_lead(flows: Flows) -> bool:
    """Wait until both flows were answered and ran LEAD_S more."""
    return svc.wait_ready([flows.client.node], *flows.lead.values())


def stop(flows: Flows) -> dict[str, echo.FlowSamples]:
    """End both flows (at their next request) and read what they counted."""
    flows.client.node.check(["touch", flows.stop_file], timeout_s=10)
    results = {proto: echo.parse_flow(output(f.result())) for proto, f in flows.running.items()}
    flows.client.node.run(["rm", "-f", flows.stop_file, *flows.lead.values()], timeout_s=10)
    return results


@dataclass(frozen=True)
class Judged:
    """One flow judged against a switch: its outage, timeline and problems (none: passed)."""

    proto: str
    outage_s: float
    events: tuple[tuple[float, str], ...]
    samples: tuple[tuple[float, float], ...]  # (offset s, share of requests answered)
    problems: tuple[str, ...]


def judge(
    results: Mapping[str, echo.FlowSamples], began: float, ready: float, target: str
) -> list[Judged]:
    """Each flow against a switch that began at ``began`` and whose agents were ready at
    ``ready`` (epoch seconds): healthy before (every bucket wholly before the switch but
    the first answered in full), and a fully answered bucket after ``ready``."""
    out = []
    for proto, flow in results.items():
        switch_t, ready_t = began - flow.start, ready - flow.start
        before = [s for s in flow.samples if s[0] + flow.bucket_s <= switch_t]
        problems = []
        if not before or any(ok < sent for _, sent, ok in before[1:]):
            problems.append(f"{proto} flow was not healthy before the switch")
        if flow.recovered_after(ready_t) is None:
            problems.append(f"{proto} flow did not recover after the switch to {target}")
        out.append(Judged(
            proto, flow.outage_s(), ((switch_t, "deploy starts"), (ready_t, "agents ready")),
            tuple((t, ok / sent if sent else 0.0) for t, sent, ok in flow.samples),
            tuple(problems),
        ))  # fmt: skip
    return out


# --- the whole-lab switch of a lockstep run (main) -------------------------------------

EXIT_FAILED, EXIT_USAGE, EXIT_NO_SWITCH = 1, 2, 3


class Interrupted(Exception):
    """SIGTERM/SIGHUP from the script (its Ctrl-C): unwind, pods removed, then exit 3."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def switch_argv(podlab: str, lab: str, to: str, switch: bool, clusters: Sequence[str] = ()
                ) -> list[str]:  # fmt: skip
    """The deploy scripts/conformance.sh runs between two phases (``switch``: the
    ``--switch`` one, else the full deploy it falls back to); ``to`` a phase token, a
    pair's (``c1=vxlan,c2=udp``) switching each of ``clusters`` to its own entry."""
    from harness.conformance.modes import deploy_mode, phase_entries

    if "=" in to:
        mode, enc = deploy_mode(phase_entries(to, clusters))
    else:
        mode, _, enc = to.partition("+")
    return [podlab, "deploy", lab, *(["--switch"] if switch else []), "--mode", mode,
            "--encryption", enc or "none", "--quiet"]  # fmt: skip


def _run(argv: Sequence[str]) -> bool:
    proc = subprocess.Popen(argv)
    try:
        return proc.wait() == 0
    except BaseException:
        proc.terminate()
        proc.wait()
        raise


def whole_lab_switch(podlab: str, lab: str, to: str, clusters: Sequence[str] = ()) -> bool:
    """The switch, falling back to the full deploy as the script does: whether it worked."""
    return _run(switch_argv(podlab, lab, to, True, clusters)) or _run(
        switch_argv(podlab, lab, to, False, clusters)
    )


@dataclass
class _Cluster:
    name: str
    frm: str = ""  # the entry it leaves and the one it enters (a pair: its own)
    to: str = ""
    factory: Any = None  # PodFactory
    flows: Flows | None = None
    problem: str = ""  # why its flows never ran (not applicable when ``na``)
    na: bool = False


def _prepare(c: _Cluster, lab: Any, nodes: Mapping[str, Any], pool: ThreadPoolExecutor) -> None:
    from harness.conformance import paths
    from harness.conformance.pods import PodFactory

    pair = paths.node_pair(lab, "cross-node", c.name)
    if pair is None:
        c.problem, c.na = f"cluster {c.name}: {paths.why_missing(lab, 'cross-node')}", True
        return
    c.factory = PodFactory(lab.client(c.name), dict(nodes))
    client, server = c.factory.create(list(pair), prefix="switchflows")
    c.flows = start(pool, client, server)
    if not wait_lead(c.flows):
        c.problem = f"cluster {c.name}: the flows {client} → {server} never answered"


def measure(
    lab_name: str, results_dir: Path, frm: str, to: str, podlab: str,
    ready_file: Path | None = None, quiet_lock: Path | None = None,
) -> int:  # fmt: skip
    """The whole-lab switch ``frm`` → ``to`` under flows in every cluster; the exit status.

    ``ready_file``: created once the switch is made and the agents are ready, so that the
    script starts the next phase's runs while the flows settle; with ``quiet_lock`` the
    settle, the judging and the clean-up hold it shared (every cluster shared, as an
    ordinary check of the whole lab), so no quiet check and no 26 runs beside the flows.
    """
    from contextlib import ExitStack
    from datetime import UTC, datetime

    from harness.conformance import labctl, quiet, remote
    from harness.conformance.modes import phase_entries
    from harness.results import env
    from harness.results.store import ResultsWriter, RunMeta

    lab = labctl.attach(lab_name)
    names_ = list(lab.plan.clusters)
    frm_of, to_of = phase_entries(frm, names_), phase_entries(to, names_)
    tag = "_".join(dict.fromkeys(str(s) for s in to_of.values()))
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{lab.topology}-switch-{tag}"
    meta = RunMeta(run_id=run_id, topology=lab.topology,
                   modes=tuple(dict.fromkeys(str(s) for s in frm_of.values())),
                   environment=env.capture(lab=lab_name))  # fmt: skip
    writer = ResultsWriter(results_dir / f"{run_id}.json", meta)
    step = time.monotonic()
    clusters = [_Cluster(c, str(frm_of[c]), str(to_of[c])) for c in names_]
    first = clusters[0]
    names = sorted({n.name for c in lab.plan.clusters for n in lab.cluster_nodes(c)})
    nodes: dict[str, Any] = {}
    flows_pool = ThreadPoolExecutor(max_workers=2 * len(clusters))
    began = ready = 0.0
    switched = False
    ready_problem = ""
    deploy_s = 0.0
    shared_s = None  # seconds the flows settled beside the next phase (ready_file)
    left: list[str] = []
    held = ExitStack()
    try:
        try:
            nodes = remote.connect_lab(lab.plan, lab.ssh_config, lab.lab_dir, names)
            with ThreadPoolExecutor(max_workers=len(clusters)) as prep:
                done = {c.name: prep.submit(_prepare, c, lab, nodes, flows_pool) for c in clusters}
            for c in clusters:
                exc = done[c.name].exception()
                if exc is not None:
                    c.problem = f"cluster {c.name}: flows not started: {exc}"
        except Exception as exc:  # the nodes: no flows anywhere, the switch still runs
            for c in clusters:
                c.problem = c.problem or f"cluster {c.name}: flows not started: {exc}"
        writer.timing("switch flows: pods and flows", time.monotonic() - step, mode=first.frm)
        began, t = time.time(), time.monotonic()
        switched = whole_lab_switch(podlab, lab_name, to, names_)
        deploy_s = time.monotonic() - t
        writer.timing("switch", deploy_s, mode=first.to)
        if switched:
            t = time.monotonic()
            try:
                labctl.wait_nodes_ready(lab, None, modes=to_of)
            except Exception as exc:
                ready_problem = str(exc)
            ready = time.time()
            writer.timing("switch flows: ready", time.monotonic() - t, mode=first.to)
            if ready_file is not None:  # the next phase starts beside the settle
                if quiet_lock is not None:
                    claim = quiet.Claim(shared=tuple(c.name for c in clusters))
                    held.enter_context(quiet.hold_claim(quiet_lock, claim))
                ready_file.touch()
                shared_s = time.monotonic()
            time.sleep(SETTLE_S)
        try:
            failed = _judge_and_record(writer, clusters, began, ready, switched,
                                       ready_problem, deploy_s, shared_s)  # fmt: skip
        except Exception as exc:  # judged nothing, but the switch is made: the run goes on
            failed = True
            for c in clusters:
                writer.check(23, CHECK, mode=c.frm, outcome="failed",
                             labels=_labels(c.name, c.to),
                             message=f"{c.frm} → {c.to}: flows not read: {exc}"[:2000])  # fmt: skip
    except Interrupted:
        switched = False
        failed = True
        for c in clusters:
            writer.check(23, CHECK, mode=c.frm, outcome="failed", labels=_labels(c.name, c.to),
                         message="interrupted: the run was stopped")  # fmt: skip
    finally:
        t = time.monotonic()
        left = _clean_up(clusters, nodes, flows_pool)
        held.close()
        writer.timing("switch flows: clean up", time.monotonic() - t, mode=first.to)
        if shared_s is not None:  # what the next phase's start-up ran beside
            writer.timing("switch flows: beside the next phase", time.monotonic() - shared_s,
                          mode=first.to)  # fmt: skip
        writer.timing("switch step", time.monotonic() - step, mode=first.to)
        writer.finish()
    for line in left:
        print(f"switchflows: {line}", file=sys.stderr)
    if not switched:
        return EXIT_NO_SWITCH
    return EXIT_FAILED if failed or left else 0


def _labels(cluster: str, to: str, shared_s: float | None = None) -> dict[str, str]:
    """The check's labels; ``machine``: alone through the switch, and shared (beside the
    next phase's ordinary start-up and checks) for the settle when ``shared_s`` is set."""
    out = {"cluster": cluster, "to": to, "at": "whole-lab switch", "machine": "alone"}
    if shared_s is not None:
        out |= {"machine": "shared", "machine_shared_s": f"{time.monotonic() - shared_s:.1f}"}
    return out


def _judge_and_record(
    writer: Any, clusters: Sequence[_Cluster], began: float, ready: float,
    switched: bool, ready_problem: str, deploy_s: float, shared_s: float | None = None,
) -> bool:  # fmt: skip
    """Stop every cluster's flows, judge them against the switch from the entry it left to
    the one it entered (a pair's: its own) and record; whether a check failed."""
    for frm, to in dict.fromkeys((c.frm, c.to) for c in clusters):
        writer.record("mode_switch_deploy_s", deploy_s, "s", mode=frm, scenario=23,
                      labels={"test": CHECK, "to": to, "at": "whole-lab switch"})  # fmt: skip
    failed = False
    flowing = {c.name: c.flows for c in clusters if c.flows is not None}
    with ThreadPoolExecutor(max_workers=max(1, len(flowing))) as pool:  # every cluster at once
        stopped = dict(zip(flowing, pool.map(stop, flowing.values()), strict=True))
    for c in clusters:
        frm, to = c.frm, c.to
        labels = _labels(c.name, to, shared_s)
        problems = [c.problem] if c.problem else []
        if c.name in stopped:
            results = stopped[c.name]
            if switched:
                for j in judge(results, began, ready, to):
                    problems += j.problems
                    writer.record(f"mode_switch_{j.proto}_outage_s", j.outage_s, "s", mode=frm,
                                  scenario=23, labels={"test": CHECK, **labels})  # fmt: skip
                    writer.timeline(f"{frm} → {to}: {j.proto} flow on {c.name}", mode=frm,
                                    events=j.events, samples=j.samples, sample_name="answered",
                                    sample_unit="ratio", scenario=23, labels=labels)  # fmt: skip
        if not switched:
            problems.append(f"the whole-lab switch to {to} failed")
        elif ready_problem:
            problems.append(ready_problem)
        if c.na and not problems[1:]:
            outcome, message = "not-applicable", c.problem
        else:
            outcome = "failed" if problems else "passed"
            where = f"{c.flows.client} → {c.flows.server}, " if c.flows else ""
            message = where + f"{frm} → {to}: " + ("; ".join(problems) or "flows recovered")
        failed |= outcome == "failed"
        writer.check(23, CHECK, mode=frm, outcome=outcome, message=message[:2000],
                     duration_s=time.time() - began if began else 0.0, labels=labels)  # fmt: skip
    return failed


def _clean_up(clusters: Sequence[_Cluster], nodes: Mapping[str, Any],
              pool: ThreadPoolExecutor) -> list[str]:  # fmt: skip
    """Stop flows still running, remove the pods, close the ssh masters; what was left."""
    left = []
    for c in clusters:
        if c.flows is not None and not all(f.done() for f in c.flows.running.values()):
            try:
                c.flows.client.node.run(["touch", c.flows.stop_file], timeout_s=10)
            except Exception as exc:
                left.append(f"cluster {c.name}: flows not stopped: {exc}")
    for c in clusters:
        if c.factory is not None:
            try:
                left += [f"pod {p} not removed" for p in c.factory.delete_all()]
            except Exception as exc:
                left.append(f"cluster {c.name}: pods not removed: {exc}")
    pool.shutdown(wait=True, cancel_futures=True)
    for node in nodes.values():
        node.close()
    return left


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.conformance.switchflows --lab LAB --results DIR --from E --to F``."""
    import argparse

    from harness.errors import PodlabError

    p = argparse.ArgumentParser(prog="python -m harness.conformance.switchflows")
    p.add_argument("--lab", required=True)
    p.add_argument("--results", required=True, type=Path)
    p.add_argument("--from", dest="frm", required=True, metavar="ENTRY|CLUSTER=ENTRY,…")
    p.add_argument("--to", required=True, metavar="ENTRY|CLUSTER=ENTRY,…",
                   help="a pair's phase (c1=vxlan,c2=udp): each cluster switched to, and "
                   "its flows judged against, its own entry")  # fmt: skip
    p.add_argument("--podlab", default=str(Path(sys.executable).with_name("podlab")))
    p.add_argument("--ready-file", type=Path,
                   help="created when the switch is made and the agents are ready: the "
                   "script then starts the next phase while the flows settle")  # fmt: skip
    p.add_argument(
        "--quiet-lock",
        type=Path,
        help="hold it shared from the ready file on (no quiet check beside)",
    )
    args = p.parse_args(argv)
    try:
        frm, to = _entry_token(args.frm), _entry_token(args.to)
    except PodlabError as exc:
        print(f"podlab: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    try:
        return measure(args.lab, args.results, frm, to, args.podlab, args.ready_file,
                       args.quiet_lock)  # fmt: skip
    except PodlabError as exc:  # before the switch (the lab not up): nothing switched
        print(f"podlab: {exc}", file=sys.stderr)
        return EXIT_NO_SWITCH


def _entry_token(text: str) -> str:
    """ENTRY or CLUSTER=ENTRY,… with every entry checked (the clusters: once the lab is known)."""
    from harness.conformance.modes import ModeSpec

    if "=" not in text:
        return str(ModeSpec.parse(text))
    parts = [item.partition("=") for item in text.split(",")]
    return ",".join(f"{c}={ModeSpec.parse(e)}" if eq else item
                    for (c, eq, e), item in zip(parts, text.split(","), strict=True))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
