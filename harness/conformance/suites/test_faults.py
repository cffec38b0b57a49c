"""Control-plane faults during traffic: kill -9 a node agent, restart etcd.

A pod streams UDP requests to a pod on another node (every 50 ms, counted per
half second) from 1 s after its first answer (the probe's ready file; no longer a
fixed 4 s lead) until 3 s after the control plane is
whole again (a heartbeat written after the fault, from every node concerned).
Kernel datapaths keep forwarding without their agent or etcd, so the pods must
keep talking; the userspace ``udp`` mode forwards inside the agent (there the
flow lasts 14 s at least, as before), and so does the userspace IPIP fallback the agent
picks where the kernel has no ``ipip`` module (its backend says ``IPIPImpl:
userspace``), so there the check is that traffic resumes once the agent is
back. Recorded: the outage, the time until the control plane is whole again
(agent Ready / every node heartbeating), and a timeline.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.api.schedule import is_ready
from harness.conformance import services as svc
from harness.conformance.fixtures import EchoPods
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.pods import UDP_PORT, Pod
from harness.conformance.remote import Node, output
from harness.conformance.run import Recorder
from harness.probes import echo

RECOVERY_S = 60.0
# The flow ends TAIL_S after the control plane is back (the event), not at a fixed 14 s:
# what a fault can break in a kernel datapath happens between the fault and the agent's
# first pass after it; where the control plane is back late, at the old end or at once
# (it never ran longer than FLOW_MIN_S before). Where the agent forwards itself, at
# least FLOW_MIN_S, as before, and at least TAIL_S after the recovery.
TAIL_S = 3.0
FLOW_MIN_S = 14.0
FLOW_MAX_S = svc.READY_WAIT_S + RECOVERY_S + TAIL_S
USERSPACE_MODES = ("udp",)
# A kernel datapath forwards without its agent: at most two 0.5 s buckets may
# fall below half answered (a scheduling hiccup on a loaded machine), not more.
MAX_KERNEL_OUTAGE_S = 1.0


@pytest.fixture(scope="module")
def flow_pods(echo_pods: EchoPods) -> tuple[Pod, Pod]:
    """The mode's shared echo pods on two nodes (the cross-node path)."""
    return echo_pods.pair("cross-node")


def _during_flow(
    client: Pod, server: Pod, fault: Callable[[], None], recovered: Callable[[float], bool],
    *, in_agent: bool,
) -> tuple[echo.FlowSamples, float, float | None]:  # fmt: skip
    """Stream client→server, inject ``fault`` once the stream has been answered for
    svc.LEAD_S (its ready file); (samples, fault t, recovery s).

    ``recovered(done)`` gets the epoch at which ``fault`` returned: only what happened
    after it (a heartbeat written then) is recovery, not a write from before the fault.
    The flow stops TAIL_S after ``recovered`` (or after RECOVERY_S without it), in the
    kernel cut short at FLOW_MIN_S from its start; with ``in_agent`` not before
    FLOW_MIN_S."""
    stop = f"/run/podlab-fault-{uuid.uuid4().hex[:8]}.stop"  # node-private /run
    ready = svc.ready_file("fault")
    client.node.run(["rm", "-f", stop, ready])
    argv = echo.flow_command("udp", server.ip, UDP_PORT, FLOW_MAX_S, bucket_s=0.5,
                             stop_file=stop, ready=(ready, svc.LEAD_S))  # fmt: skip
    with ThreadPoolExecutor(max_workers=1) as pool:
        submitted = time.time()
        fut = pool.submit(client.run, argv, FLOW_MAX_S + 20)
        try:
            svc.wait_ready([client.node], ready)
            fault_at = time.time()
            fault()
            done = time.time()
            back = None
            while time.time() - fault_at < RECOVERY_S:
                if recovered(done):
                    back = time.time() - fault_at
                    break
                time.sleep(0.25)
            now, old_end = time.time(), submitted + FLOW_MIN_S
            # in the kernel: TAIL_S after the recovery, but not past the old fixed end
            # unless the recovery itself came later (then it stops at once)
            until = max(now + TAIL_S, old_end) if in_agent else min(now + TAIL_S, max(now, old_end))
            time.sleep(max(0.0, until - time.time()))
        finally:
            client.node.run(["touch", stop])
        res = fut.result()
    client.node.run(["rm", "-f", stop, ready])
    samples = echo.parse_flow(output(res))
    return samples, fault_at - samples.start, back


def _agent_pid(node: Node) -> int:
    pid = node.service_pid("podlab-agent")
    assert pid > 0, f"no running podlab-agent on {node.name} ({node.supervisor})"
    return pid


def _forwards_in_agent(lab: Lab, mode: str, node: str) -> bool:
    """Whether ``node``'s pod traffic is forwarded by its agent process itself.

    The ``udp`` mode always is; ``ipip`` is where the agent fell back to its
    userspace tunnel (no ``ipip`` module: the host kernel here), which only the
    agent knows, so its node record is asked.
    """
    if ModeSpec.parse(mode).mode in USERSPACE_MODES:
        return True
    for rec in lab.client().nodes():
        backend = (rec.model_extra or {}).get("backend")
        if rec.name == node and isinstance(backend, dict):
            return backend.get("IPIPImpl") == "userspace"
    return False


def _node_ready_after(lab: Lab, node: str, after: float) -> bool:
    """The node's record carries a heartbeat newer than ``after`` (its agent is back)."""
    client = lab.client()
    for rec in client.nodes():
        if rec.name == node and is_ready(rec, client.clock()):
            beat = rec.heartbeat
            if isinstance(beat, int | float) and float(beat) > after:
                return True
            if isinstance(beat, str):
                from harness.api.schedule import heartbeat_age_s

                age = heartbeat_age_s(rec, client.clock())
                return age is not None and client.clock() - age > after
    return False


def _judge(
    record: Recorder, mode: str, what: str, samples: echo.FlowSamples, fault_t: float,
    back: float | None, *, in_agent: bool,
) -> None:  # fmt: skip
    outage = samples.outage_s()
    record(f"{what}_outage_s", outage, "s")
    if back is not None:
        record(f"{what}_reconvergence_s", back, "s")
    answered = samples.answered / samples.sent if samples.sent else 0.0
    record(f"{what}_answered_ratio", answered, "ratio")
    events = [(fault_t, what.replace("_", " "))]
    if back is not None:
        events.append((fault_t + back, "control plane back"))
    record.timeline(
        f"{what} during pod traffic", events,
        [(t, ok / sent if sent else 0.0) for t, sent, ok in samples.samples],
        sample_name="answered", sample_unit="ratio",
    )  # fmt: skip
    assert back is not None, f"{what}: the control plane did not recover within {RECOVERY_S:.0f} s"
    if in_agent:
        last = samples.samples[-1] if samples.samples else (0.0, 0, 0)
        resumed = samples.recovered_after(fault_t) is not None and last[1] == last[2] > 0
        assert resumed, (
            f"{what}: pod traffic did not resume after the fault ({mode}, forwarded by the "
            f"agent): "
            f"{samples.answered}/{samples.sent} answered, last bucket {last[2]}/{last[1]}"
        )
    else:
        assert outage <= MAX_KERNEL_OUTAGE_S, (
            f"{what}: pods stopped talking for {outage:.1f} s ({samples.answered}/{samples.sent} "
            f"requests answered) although the {mode} datapath is in the kernel"
        )


@pytest.mark.scenario(6)
def test_pods_keep_talking_when_an_agent_is_killed(
    lab: Lab, mode: str, flow_pods: tuple[Pod, Pod], record: Recorder
) -> None:
    client, server = flow_pods
    victim = server.node
    pid = _agent_pid(victim)
    in_agent = _forwards_in_agent(lab, mode, victim.name)

    def kill() -> None:
        victim.check(["kill", "-9", str(pid)], timeout_s=10)

    samples, fault_t, back = _during_flow(
        client, server, kill, lambda done: _node_ready_after(lab, victim.name, done),
        in_agent=in_agent,
    )  # fmt: skip
    new_pid = _agent_pid(victim)
    assert new_pid != pid, f"podlab-agent on {victim.name} was not restarted (pid {pid})"
    _judge(record, mode, "agent_kill", samples, fault_t, back, in_agent=in_agent)


@pytest.mark.scenario(6)
def test_pods_keep_talking_when_etcd_restarts(
    lab: Lab, mode: str, nodes: dict[str, Node], flow_pods: tuple[Pod, Pod], record: Recorder
) -> None:
    client, server = flow_pods
    cp = nodes[lab.plan.clusters[lab.first_cluster].control_plane]

    def restart() -> None:
        cp.service("restart", "etcd")

    def all_ready(done: float) -> bool:
        try:
            return all(_node_ready_after(lab, n.name, done) for n in lab.cluster_nodes())
        except Exception:  # etcd still down: not recovered yet
            return False

    in_agent = ModeSpec.parse(mode).mode in USERSPACE_MODES
    samples, fault_t, back = _during_flow(client, server, restart, all_ready, in_agent=in_agent)
    _judge(record, mode, "etcd_restart", samples, fault_t, back, in_agent=in_agent)
