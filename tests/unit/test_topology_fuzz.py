"""Fuzzing: no input makes the loader crash; it returns a plan or a UserError."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import Collector, UserError
from harness.plan.build import build_plan
from harness.topology.load import parse_topology

names = st.sampled_from(["c1-cp", "c1-w1", "c2-w1", "router", "fabric", "x", "Bad Name", ""])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.text(max_size=12),
    st.sampled_from(["10.244.0.0/16", "10.0.0.1/24", "vxlan", "bridge", "1"]),
)
labels = st.dictionaries(
    st.sampled_from(
        [
            "podlab.cluster",
            "podlab.role",
            "podlab.pod-cidr",
            "podlab.mode",
            "podlab.cluster-id",
            "podlab.node-prefix",
            "podlab.typo",
            "other",
        ]
    ),
    st.one_of(scalars, st.sampled_from(["c1", "c2", "control-plane", "router", "worker"])),
)
node = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["linux", "bridge", "srl", 3]),
        "group": names,
        "labels": st.one_of(labels, scalars),
        "mgmt-ipv4": scalars,
    },
)
endpoint = st.one_of(
    st.builds(
        lambda n, i: f"{n}:{i}", names, st.sampled_from(["eth1", "eth2", "eth0", "p1", "p2", ""])
    ),
    scalars,
)
link = st.fixed_dictionaries(
    {"endpoints": st.lists(endpoint, min_size=0, max_size=3)},
    optional={"ipv4": st.lists(scalars, max_size=3), "mtu": scalars},
)
topology = st.fixed_dictionaries(
    {"name": st.one_of(names, scalars)},
    optional={
        "mgmt": st.one_of(scalars, st.fixed_dictionaries({"ipv4-subnet": scalars})),
        "topology": st.one_of(
            scalars,
            st.fixed_dictionaries(
                {},
                optional={
                    "nodes": st.one_of(scalars, st.dictionaries(names, node, max_size=6)),
                    "groups": st.dictionaries(names, node, max_size=3),
                    "links": st.one_of(scalars, st.lists(link, max_size=6)),
                    "defaults": node,
                },
            ),
        ),
    },
)


def _check(text: str) -> None:
    c = Collector("fuzz.yml")
    try:
        topo = parse_topology(text, "fuzz.yml", c, keep=True)
        build_plan(topo, c)
    except UserError as exc:
        assert exc.problems
        assert all(str(p) for p in exc.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topology)
def test_structured_topologies_never_crash(doc: dict) -> None:
    _check(yaml.safe_dump(doc))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    _check(text)
