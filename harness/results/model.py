"""The results file: versioned, typed data with units in the names.

A conformance run writes one results file; ``podlab report`` reads only these
files (never a lab), so this model is the whole contract between the two. It is
versioned (``schema_version``) so a report can refuse a file it would misread,
and every measurement names its unit twice — in its name (``throughput_bps``,
``latency_p99_s``) and in ``unit`` — so a number never travels without one.
docs/results-format.md describes the format for people.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 2
# Versions this podlab reads: version 2 only added optional parts (the run's plan,
# its timings, the outcomes "not-applicable" and "not-selected"), so a version 1
# file is read as it is.
READABLE_VERSIONS = (1, 2)

# Units a measurement may carry, with what each means. The last "_" token of a
# measurement's name must be its unit (``latency_p99_s`` → "s"), except ratios,
# whose names contain "ratio" (``ratio_to_underlay``).
UNITS: dict[str, str] = {
    "bps": "bits per second",
    "s": "seconds",
    "ratio": "dimensionless ratio",
    "bytes": "bytes",
    "count": "a count of events, packets or objects",
    "percent": "percent (0–100)",
    "cores": "CPU cores (1.0 = one core busy)",
    "pps": "packets per second",
    "rps": "requests or connections per second",
}

Comparison = Literal["<=", ">="]
# "skipped": did not run, for a reason found at run time; "not-applicable": the mode
# or lab cannot have it (the reason says why); "not-selected": the run's matrix chose
# other modes for it. None of the three counts as checked.
Outcome = Literal["passed", "failed", "skipped", "not-applicable", "not-selected"]
NOT_RUN: tuple[str, ...] = ("skipped", "not-applicable", "not-selected")

# Scenario numbers and short titles from CONFORMANCE.md, for files without a plan
# (version 1); a run's plan carries the titles of its own catalogue.
SCENARIOS: dict[int, str] = {
    1: "Pod→pod (same node, across nodes)",
    2: "Node→pod and pod→node",
    3: "Path MTU",
    4: "Egress to the outside (masquerade)",
    5: "Pod network-ready latency",
    6: "Datapath convergence",
    7: "ClusterIP backends and spread",
    8: "Hairpin",
    9: "Multi-port services",
    10: "NodePort",
    11: "Session affinity",
    12: "No endpoints → reject",
    13: "Network programming latency",
    14: "Proxy scale",
    15: "DNS records",
    16: "DNS latency",
    17: "Network policy allow/deny",
    18: "Policy enforcement latency",
    19: "Encryption leak test",
    20: "Encryption strict mode",
    21: "BGP sessions and withdrawal",
    22: "Cross-subnet encapsulation",
    23: "Mode switch interruption",
    24: "Cross-cluster pod→pod",
    25: "Global services",
    26: "Cross-cluster failover",
    27: "Cross-cluster policy",
    28: "Throughput",
    29: "Latency and connection rate",
    30: "Hygiene after the run",
}
MAX_SCENARIO = 99

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def judge(value: float, threshold: float, comparison: Comparison) -> bool:
    """Whether ``value`` meets ``threshold`` ("<=": at most, ">=": at least)."""
    return value <= threshold if comparison == "<=" else value >= threshold


class NodeEnvironment(_Frozen):
    """One lab node as the run saw it: a namespace on the host, or a VM and its kernel."""

    node: str
    backend: str = "netns"  # netns | vm | ssh
    kernel: str = ""
    accel: str = ""  # vm: kvm | tcg ("" elsewhere)


class Environment(_Frozen):
    """Where a run happened: absolute numbers mean nothing without it."""

    kernel: str
    cpu_count: int = Field(ge=0)
    cpu_model: str = ""
    python: str = ""
    podlab: str = ""
    git_commit: str = "unknown"
    git_dirty: bool | None = None
    hostname: str = ""
    tools: dict[str, str] = Field(default_factory=dict)
    # Fallbacks the run reported using, e.g. "userspace-ipip", "wireguard-go".
    fallbacks: tuple[str, ...] = ()
    # The lab's backend and its nodes. ``emulated``: some node was a VM under
    # TCG, so every figure of this run is an emulated one, never to be compared
    # with native figures (the report refuses such a comparison).
    backend: str = "netns"
    emulated: bool = False
    nodes: tuple[NodeEnvironment, ...] = ()


class Measurement(_Frozen):
    """One number with its unit, what it is judged against, and where it came from."""

    name: str
    value: float
    unit: str
    threshold: float | None = None
    comparison: Comparison = "<="
    passed: bool | None = None
    mode: str
    topology: str
    scenario: int | None = Field(default=None, ge=1, le=MAX_SCENARIO)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_is_snake(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"name {name!r} must be snake_case ([a-z][a-z0-9_]*)")
        return name

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r} must match [a-z][a-z0-9_.-]*")
        return labels

    @model_validator(mode="after")
    def _unit_in_name(self) -> Measurement:
        if self.unit not in UNITS:
            raise ValueError(f"unit {self.unit!r} is not one of {', '.join(UNITS)}")
        if self.unit == "ratio":
            if "ratio" not in self.name:
                raise ValueError(f"a ratio's name must contain 'ratio' (got {self.name!r})")
        elif self.name.rsplit("_", 1)[-1] != self.unit:
            raise ValueError(
                f"name {self.name!r} must end with its unit '_{self.unit}' "
                f"(e.g. throughput_bps, latency_p99_s)"
            )
        t = self.threshold
        if (
            t is not None
            and self.passed is not None
            and judge(self.value, t, self.comparison) != self.passed
        ):
            raise ValueError(
                f"passed={self.passed} contradicts {self.value} {self.comparison} {self.threshold}"
            )
        return self

    @property
    def base_mode(self) -> str:
        """The datapath mode without an encryption suffix ("vxlan+wireguard" → "vxlan")."""
        return base_mode(self.mode)


class Check(_Frozen):
    """The outcome of one conformance test for one scenario and mode."""

    scenario: int = Field(ge=1, le=MAX_SCENARIO)
    name: str
    mode: str
    outcome: Outcome
    message: str = ""
    duration_s: float = Field(default=0.0, ge=0)
    topology: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class TimelineEvent(_Frozen):
    """Something that happened at ``t_s`` seconds after the timeline's start."""

    t_s: float
    label: str


class TimelineSample(_Frozen):
    """One sample of a series over time (e.g. replies per 100 ms)."""

    t_s: float
    value: float


class Timeline(_Frozen):
    """A failover or fault timeline: events plus an optional sampled series."""

    name: str
    mode: str
    topology: str = ""
    scenario: int | None = Field(default=None, ge=1, le=MAX_SCENARIO)
    events: tuple[TimelineEvent, ...] = ()
    samples: tuple[TimelineSample, ...] = ()
    sample_name: str = ""
    sample_unit: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class PlannedMode(_Frozen):
    """A matrix entry and its mode families (bridged/routed, encapsulated/direct, …)."""

    mode: str
    families: tuple[str, ...] = ()
    cluster: str = ""  # the cluster it ran on, when runs were split per cluster


class PlannedScenario(_Frozen):
    """A catalogue scenario as the run saw it: cost class, and how many tests it has."""

    number: int = Field(ge=1, le=MAX_SCENARIO)
    title: str
    cost: str = "light"
    scope: str = "cluster"
    tests: int = Field(default=0, ge=0)  # 0: no shipped suite checks it
    elsewhere: str = ""  # where it is measured instead (a bench), if anywhere


class Plan(_Frozen):
    """What a run set out to do: its matrix, the cover of its heavy checks, its catalogue."""

    matrix: str
    policy: str = "default"
    modes: tuple[PlannedMode, ...] = ()
    heavy_cover: tuple[str, ...] = ()
    scenarios: tuple[PlannedScenario, ...] = ()


class Timing(_Frozen):
    """Where a run's time went: lab bring-up, each deploy, each mode, the tear-down."""

    what: str  # "lab up", "deploy", "mode", "tear down", …
    seconds: float = Field(ge=0)
    mode: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class RunResults(_Frozen):
    """A whole results file: one run (or several merged), versioned."""

    schema_version: int
    run_id: str = Field(min_length=1)
    started_at: datetime
    finished_at: datetime | None = None
    topology: str
    modes: tuple[str, ...] = ()
    environment: Environment
    notes: str = ""
    measurements: tuple[Measurement, ...] = ()
    checks: tuple[Check, ...] = ()
    timelines: tuple[Timeline, ...] = ()
    plan: Plan | None = None
    timings: tuple[Timing, ...] = ()

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if version not in READABLE_VERSIONS:
            raise ValueError(f"schema_version {version} is not one of {READABLE_VERSIONS}")
        return version


def base_mode(mode: str) -> str:
    """Strip an encryption suffix from a mode name ("bgp+wireguard" → "bgp")."""
    return mode.split("+", 1)[0]
