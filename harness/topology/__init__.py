"""Containerlab topology files: loading, inheritance and structure checks."""

from harness.topology.load import load_topology, parse_topology
from harness.topology.model import Endpoint, LinkSpec, NodeSpec, Topology

__all__ = ["Endpoint", "LinkSpec", "NodeSpec", "Topology", "load_topology", "parse_topology"]
