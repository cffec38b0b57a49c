"""Host side of ``netcheck``: the argv that runs it on a node, and parsers of its JSON.

The commands run on the node (or in a pod's netns through its node) with the
node's podlab venv; the parsers turn one JSON document into typed results whose
``describe()`` reads like the spec line of an assertion message.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

NODE_PYTHON = "/opt/podlab/venv/bin/python"
MODULE = "harness.probes.netcheck"
SUCCESS = "success"


# How a node runs netcheck: its podlab venv, or (on a lab node podlab does not
# deploy, like an outside host) the standalone file copied next to any python3.
NODE_NETCHECK: tuple[str, ...] = (NODE_PYTHON, "-m", MODULE)
STANDALONE_PATH = "/run/podlab-netcheck.py"
STANDALONE_NETCHECK: tuple[str, ...] = ("python3", STANDALONE_PATH)


def _base(runner: tuple[str, ...], sub: str) -> list[str]:
    return [*runner, sub]


def probe_command(
    proto: str,
    target: str,
    port: int,
    count: int = 3,
    connect_timeout_s: float = 2.0,
    budget_s: float = 10.0,
    wait_s: float = 5.0,
    payload: str = "podlab-probe",
    runner: tuple[str, ...] = NODE_NETCHECK,
) -> list[str]:
    """``count`` TCP/UDP/HTTP echo attempts: Cilium-style connect timeout, answer wait, budget."""
    return [*_base(runner, "probe"), "--proto", proto, "--target", target, "--port", str(port),
            "--count", str(count), "--timeout", f"{connect_timeout_s:g}",
            "--wait", f"{wait_s:g}", "--budget", f"{budget_s:g}",
            "--payload", payload]  # fmt: skip


def rr_command(
    target: str, port: int, count: int, runner: tuple[str, ...] = NODE_NETCHECK
) -> list[str]:
    """TCP request/response round trips on one connection."""
    return [*_base(runner, "rr"), "--target", target, "--port", str(port), "--count", str(count)]


def reach_command(
    targets: list[tuple[str, int]],
    deadline_s: float,
    refused_ok: bool = False,
    runner: tuple[str, ...] = NODE_NETCHECK,
) -> list[str]:
    """Poll targets until each accepts a TCP connection (or refuses one, with ``refused_ok``)."""
    joined = ",".join(f"{ip}:{port}" for ip, port in targets)
    argv = [*_base(runner, "reach"), "--targets", joined, "--deadline", f"{deadline_s:g}"]
    return [*argv, "--refused-ok"] if refused_ok else argv


def flow_command(
    proto: str,
    target: str,
    port: int,
    duration_s: float,
    bucket_s: float = 0.5,
    stop_file: str = "",
    runner: tuple[str, ...] = NODE_NETCHECK,
    ready: tuple[str, float] | None = None,
) -> list[str]:
    """A steady request stream (every 50 ms, 0.3 s timeout) counted per bucket.

    With ``stop_file`` it ends early once that file exists on the node; with ``ready``
    (file, seconds) it creates that file once its first request was answered and the
    seconds more have passed (``ready_args``).
    """
    argv = [*_base(runner, "flow"), "--proto", proto, "--target", target, "--port", str(port),
            "--duration", f"{duration_s:g}", "--bucket", f"{bucket_s:g}",
            "--timeout", "0.3"]  # fmt: skip
    return [*argv, *(["--stop-file", stop_file] if stop_file else []), *ready_args(ready)]


def ready_args(ready: tuple[str, float] | None) -> list[str]:
    """``--ready-file F --ready-after S`` of flow/stream/hstream (none without ``ready``)."""
    return ["--ready-file", ready[0], "--ready-after", f"{ready[1]:g}"] if ready else []


CONNECT_TIMEOUT = "connect-timeout"  # netcheck stream's outcome for an unanswered SYN


def stream_command(
    target: str,
    port: int,
    duration_s: float,
    interval_s: float = 0.05,
    timeout_s: float = 1.0,
    stop_file: str = "",
    runner: tuple[str, ...] = NODE_NETCHECK,
    ready: tuple[str, float] | None = None,
    settled: tuple[str, float] | None = None,
) -> list[str]:
    """A new TCP connection every ``interval_s``, open loop: who answered each one
    (``ready``: as ``flow_command``'s; ``settled``: (file, seconds), the file created
    once a failed request was followed by that long without a failure)."""
    argv = [*_base(runner, "stream"), "--target", target, "--port", str(port),
            "--duration", f"{duration_s:g}", "--interval", f"{interval_s:g}",
            "--timeout", f"{timeout_s:g}"]  # fmt: skip
    if settled:
        argv += ["--settled-file", settled[0], "--settled-after", f"{settled[1]:g}"]
    return [*argv, *(["--stop-file", stop_file] if stop_file else []), *ready_args(ready)]


def serve_command(
    port: int, name: str, duration_s: float, runner: tuple[str, ...] = NODE_NETCHECK
) -> list[str]:
    """A bounded-lifetime TCP+UDP echo server answering ``NAME <request>``."""
    return [*_base(runner, "serve"), "--port", str(port), "--name", name,
            "--duration", f"{duration_s:g}"]  # fmt: skip


def routewait_command(
    subnet: str, present: bool, deadline_s: float, runner: tuple[str, ...] = NODE_NETCHECK
) -> list[str]:
    """Wait on a node until a route for ``subnet`` is present (or, with False, gone)."""
    argv = [*_base(runner, "routewait"), "--subnet", subnet, "--deadline", f"{deadline_s:g}"]
    return argv if present else [*argv, "--absent"]


def parse_routewait(output: str) -> float | None:
    """Epoch seconds when the route reached the wanted state, or None (deadline passed)."""
    at = _load(output).get("at")
    return float(at) if at is not None else None


class ProbeOutputError(ValueError):
    """netcheck printed something that is not its JSON (crashed, or not installed)."""


def _load(output: str) -> dict[str, Any]:
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                break
            if isinstance(data, dict):
                return data
    raise ProbeOutputError(f"no netcheck JSON in output: {output.strip()[-300:]!r}")


@dataclass(frozen=True)
class Attempt:
    outcome: str  # success | timeout | refused | unreachable | app-error
    rtt_s: float
    reply: str = ""
    error: str = ""


@dataclass(frozen=True)
class ProbeReport:
    """Every attempt of one probe run against one target."""

    proto: str
    target: str
    port: int
    attempts: tuple[Attempt, ...]

    @property
    def successes(self) -> int:
        return sum(a.outcome == SUCCESS for a in self.attempts)

    @property
    def all_ok(self) -> bool:
        return bool(self.attempts) and self.successes == len(self.attempts)

    def outcomes(self) -> Counter[str]:
        return Counter(a.outcome for a in self.attempts)

    def replies(self) -> list[str]:
        return [a.reply for a in self.attempts if a.outcome == SUCCESS]

    def describe(self) -> str:
        """ "5/5 lost (timeout 5)" or "3/3 answered"."""
        n = len(self.attempts)
        if self.all_ok:
            return f"{n}/{n} answered"
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes().items()) if k != SUCCESS)
        errors = sorted({a.error for a in self.attempts if a.error})
        tail = f"; {errors[0]}" if errors else ""
        return f"{n - self.successes}/{n} lost ({kinds}{tail})"


def parse_probe(output: str) -> ProbeReport:
    data = _load(output)
    attempts = tuple(
        Attempt(
            str(a["outcome"]),
            float(a.get("rtt_s", 0.0)),
            str(a.get("reply", "")),
            str(a.get("error", "")),
        )
        for a in data.get("attempts", [])
    )
    return ProbeReport(str(data["proto"]), str(data["target"]), int(data["port"]), attempts)


@dataclass(frozen=True)
class RoundTrips:
    rtts_s: tuple[float, ...]
    error: str = ""


def parse_rr(output: str) -> RoundTrips:
    data = _load(output)
    return RoundTrips(tuple(float(x) for x in data.get("rtts_s", [])), str(data.get("error", "")))


def parse_reach(output: str) -> dict[str, float | None]:
    """``"ip:port"`` → epoch seconds of the first accepted connection (None: never)."""
    data = _load(output)
    return {k: (float(v) if v is not None else None) for k, v in data["first_success"].items()}


def reach_started(output: str) -> float | None:
    """When a ``reach`` began polling (epoch s): a first success only measures a change
    made after this, so callers check the poller was already running."""
    started = _load(output).get("started")
    return float(started) if started is not None else None


@dataclass(frozen=True)
class FlowSamples:
    """A request stream: per bucket (offset s, sent, answered), started at ``start`` (epoch)."""

    start: float
    bucket_s: float
    samples: tuple[tuple[float, int, int], ...]

    @property
    def sent(self) -> int:
        return sum(s[1] for s in self.samples)

    @property
    def answered(self) -> int:
        return sum(s[2] for s in self.samples)

    def outage_s(self) -> float:
        """Total time of buckets where fewer than half the requests were answered."""
        return sum(self.bucket_s for _, sent, ok in self.samples if sent and ok * 2 < sent)

    def recovered_after(self, t_s: float) -> float | None:
        """Seconds after ``t_s`` (offset) until the first fully answered bucket, or None."""
        for offset, sent, ok in self.samples:
            if offset >= t_s and sent and ok == sent:
                return max(0.0, offset - t_s)
        return None


def parse_flow(output: str) -> FlowSamples:
    data = _load(output)
    samples = tuple((float(o), int(s), int(k)) for o, s, k in data.get("samples", []))
    return FlowSamples(float(data["start"]), float(data["bucket_s"]), samples)


@dataclass(frozen=True)
class Stream:
    """Requests of a ``stream``: (epoch s, answering pod's name or failure outcome)."""

    samples: tuple[tuple[float, str], ...]

    def failed(self, names: set[str]) -> list[tuple[float, str]]:
        return [s for s in self.samples if s[1] not in names]

    def last(self, who: set[str]) -> float | None:
        """Epoch of the last request answered by (or failed as) one of ``who``."""
        times = [t for t, w in self.samples if w in who]
        return max(times) if times else None


def parse_stream(output: str) -> Stream:
    data = _load(output)
    start = float(data["start"])
    return Stream(tuple((start + float(o), str(w)) for o, w in data.get("samples", [])))
