"""Runs that share a machine take turns for what must be measured on a quiet one.

Two conformance runs may test one lab at once, one per cluster
(docs/adr/0010-per-cluster-conformance-runs.md), and in a lockstep run a third for the
mesh (docs/adr/0018-mesh-in-the-default-run.md). Every scenario test holds the lab's quiet
lock while it runs (setup, call and teardown): shared for ordinary tests,
exclusive for the ``quiet`` ones of the catalogue (throughput, latency, SLOs),
so that a throughput figure is never taken while the other cluster deploys or
probes. A turnstile keeps an exclusive taker from starving: once it waits, new
shared takers queue behind it.

Beside it, one lock per cluster (``<lock>.<cluster>``): every scenario test holds the
clusters it touches shared (its run's ``--cluster``, or all of them for the whole lab's
run). A test that breaks a cluster but measures nothing a busy neighbour distorts at its
goals (scenario 26, marked ``breaks`` in its suite) holds the machine shared and alone
the clusters it breaks or whose agents it times: it overlaps another cluster's ordinary
checks, never a quiet one and never a check of a cluster it holds alone. Locks are taken
in one order (the machine, then clusters by name), so takers cannot deadlock.

``flock`` locks belong to open files, so a crashed run frees them with its process.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

# The roles a ``breaks`` marker may name: the mesh's first cluster (26's "A", the
# client's) and its second ("B", the remote one whose link and etcd it breaks).
ROLES = ("local", "remote")


@contextmanager
def hold(path: Path, exclusive: bool) -> Iterator[float]:
    """Hold the quiet lock at ``path`` (exclusive or shared); yields the seconds waited."""
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    gate = os.open(f"{path}.gate", os.O_CREAT | os.O_RDWR, 0o644)
    lock = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)  # the turnstile: one taker at a time queues here
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield time.monotonic() - started
    finally:
        os.close(lock)  # closing the descriptor releases its lock
        os.close(gate)


@dataclass(frozen=True)
class Claim:
    """What one test holds: the machine (alone if it measures) and clusters, shared
    (touched) or alone (broken)."""

    exclusive: bool = False
    shared: tuple[str, ...] = ()
    broken: tuple[str, ...] = ()


def cluster_lock(path: Path, cluster: str) -> Path:
    return path.with_name(f"{path.name}.{cluster}")


@contextmanager
def hold_claim(path: Path, claim: Claim) -> Iterator[float]:
    """Hold everything ``claim`` names, the machine's lock first, then clusters by name;
    yields the seconds waited in all."""
    with ExitStack() as stack:
        waited = stack.enter_context(hold(path, claim.exclusive))
        for cluster in sorted({*claim.shared, *claim.broken}):
            lock = cluster_lock(path, cluster)
            waited += stack.enter_context(hold(lock, cluster in claim.broken))
        yield waited


def claim(
    quiet: bool,
    breaks: Sequence[str] | None,
    cluster: str | None,
    clusters: Sequence[str],
    mesh: Sequence[str],
) -> Claim:
    """The claim of a scenario test (pure).

    ``quiet``: the catalogue's flag; ``breaks``: None for a test with no ``breaks``
    marker, else the roles it names (``ROLES``: the mesh's first or second cluster);
    ``cluster``: the run's ``--cluster`` (None: the whole lab's run, which touches
    ``clusters``); ``mesh``: the clusters of the lab's mesh, in the mesh's order. A
    ``breaks`` marker in a lab without two meshed clusters changes nothing (the test
    is not applicable there): a quiet test then holds the machine alone as before.
    """
    touched = (cluster,) if cluster else tuple(clusters)
    if breaks is None or len(mesh) < 2:
        return Claim(exclusive=quiet, shared=touched)
    unknown = [r for r in breaks if r not in ROLES]
    if unknown:
        raise ValueError(f"breaks({', '.join(unknown)}): not a role ({', '.join(ROLES)})")
    roles = dict(zip(ROLES, mesh, strict=False))
    broken = tuple(dict.fromkeys(roles[r] for r in breaks))
    return Claim(False, tuple(c for c in touched if c not in broken), broken)
