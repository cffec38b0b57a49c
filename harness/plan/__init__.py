"""The lab plan: a validated topology with every name and address decided."""

from harness.plan.build import build_plan, load_plan
from harness.plan.model import (
    ClusterPlan,
    Interface,
    LabPlan,
    NodePlan,
    Route,
    Segment,
)

__all__ = [
    "ClusterPlan",
    "Interface",
    "LabPlan",
    "NodePlan",
    "Route",
    "Segment",
    "build_plan",
    "load_plan",
]
