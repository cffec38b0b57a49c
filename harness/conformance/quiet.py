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
checks, never a quiet one and never a check of a cluster it holds alone.

A quiet test whose goals are measured in some parts and whose other parts only wait on
a timer or an event that load does not move at its goals (13's 40 s node grace; 23's
switch back to the phase's mode was one until 23 moved to the whole-lab switch,
switchflows.py), marked ``waits`` in its suite, holds its run's
clusters alone throughout and may let the machine be shared for those parts
(``Holding.shared``): other runs' ordinary checks go on meanwhile, never a quiet one,
and it takes the machine back alone, through the turnstile, before it measures again.
Every test of a quiet scenario takes **the quiet turn** (``<lock>-turn``) first, so at
most one quiet test — measuring, breaking or waiting — is under way at a time: none
starts beside another's shared wait, and nobody but the turn's holder ever asks for the
machine alone (its re-take cannot deadlock). Locks are taken in one order: the turn,
the clusters by name, then the machine (every holder of the machine's lock holds all
its other locks already, so a re-take waits only for tests that are running).

Outside pytest, ``python -m harness.conformance.switchflows`` (scenario 23 at a lockstep
run's whole-lab switch) holds every cluster and the machine shared, as an ordinary check
of the whole lab, while its flows settle beside the next phase's start-up: no quiet test
and no 26 starts until they are judged.

``flock`` locks belong to open files, so a crashed run frees them with its process.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The roles a ``breaks`` marker may name: the mesh's first cluster (26's "A", the
# client's) and its second ("B", the remote one whose link and etcd it breaks).
ROLES = ("local", "remote")


class _Lock:
    """One flock lock file with its turnstile (``<path>.gate``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.gate = os.open(f"{path}.gate", os.O_CREAT | os.O_RDWR, 0o644)
        self.fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)

    def take(self, exclusive: bool) -> float:
        """Take (or convert to) shared or exclusive through the turnstile; the seconds waited.

        A waiting exclusive taker holds the gate, so shared takers that come later queue
        behind it. A conversion is not atomic in ``flock`` (the old lock goes first), which
        the gate covers for takers that use it."""
        started = time.monotonic()
        fcntl.flock(self.gate, fcntl.LOCK_EX)  # the turnstile: one taker at a time queues here
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(self.gate, fcntl.LOCK_UN)
        return time.monotonic() - started

    def share(self) -> None:
        """Exclusive → shared, past the turnstile: a shared taker waiting there for this
        lock holds the gate, and nobody else holds the lock, so this never blocks."""
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def close(self) -> None:
        os.close(self.fd)  # closing the descriptor releases its lock
        os.close(self.gate)


@contextmanager
def hold(path: Path, exclusive: bool) -> Iterator[float]:
    """Hold the quiet lock at ``path`` (exclusive or shared); yields the seconds waited."""
    lock = _Lock(path)
    try:
        yield lock.take(exclusive)
    finally:
        lock.close()


@dataclass(frozen=True)
class Claim:
    """What one test holds: the machine (alone if it measures) and clusters, shared
    (touched) or alone (broken); ``turn``: the quiet turn (a test of a quiet scenario);
    ``waits``: it may let the machine be shared while it only waits (its clusters are
    then all in ``broken``)."""

    exclusive: bool = False
    shared: tuple[str, ...] = ()
    broken: tuple[str, ...] = ()
    turn: bool = False
    waits: bool = False

    @property
    def machine(self) -> str:
        """How the test holds the machine, as the results say it: alone or shared."""
        return "alone" if self.exclusive else "shared"


def cluster_lock(path: Path, cluster: str) -> Path:
    return path.with_name(f"{path.name}.{cluster}")


def turn_lock(path: Path) -> Path:
    """The quiet turn's lock file (``-turn``: no cluster's name can make it)."""
    return path.with_name(f"{path.name}-turn")


class Holding:
    """What a test holds while it runs (``hold_claim``): the seconds it waited for its locks,
    and the seconds it let the machine be shared (``shared``) and waited to have it back."""

    def __init__(self, claim: Claim | None = None, machine: _Lock | None = None) -> None:
        self.claim = claim
        self._machine = machine
        self.waited_s = 0.0
        self.shared_s = 0.0  # the machine shared in ``shared`` windows
        self.retake_s = 0.0  # waiting, at the end of those windows, to have it alone again

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Let the machine be shared while the body runs (it only waits on a timer or an
        event), then take it back alone through the turnstile before returning.

        Without a quiet lock, or for a test that holds the machine shared anyway, it changes
        nothing. A test whose claim does not ``waits`` (its clusters are not held alone) may
        not: that is a mistake in the suite, refused."""
        claim, machine = self.claim, self._machine
        if claim is None or machine is None or not claim.exclusive:
            yield
            return
        if not claim.waits:
            raise RuntimeError(
                "a quiet test shares the machine only when marked @pytest.mark.waits "
                "(it then holds its clusters alone): harness/conformance/quiet.py"
            )
        machine.share()
        started = time.monotonic()
        try:
            yield
        finally:
            asked = time.monotonic()
            self.shared_s += asked - started
            self.retake_s += machine.take(True)

    def labels(self) -> dict[str, str]:
        """How the test held the machine, for its check in the results: ``machine`` alone
        or shared, and with ``shared`` windows their seconds (``machine_shared_s``)."""
        if self.claim is None:
            return {}
        out = {"machine": self.claim.machine}
        if self.shared_s:
            out["machine_shared_s"] = f"{self.shared_s:.1f}"
            out["machine_retake_s"] = f"{self.retake_s:.1f}"
        return out


@contextmanager
def hold_claim(path: Path, claim: Claim) -> Iterator[Holding]:
    """Hold everything ``claim`` names: the quiet turn, then the clusters by name, then the
    machine's lock; yields the ``Holding`` (its ``waited_s``: the seconds waited in all)."""
    locks: list[_Lock] = []
    try:
        waited = 0.0
        if claim.turn:
            locks.append(_Lock(turn_lock(path)))
            waited += locks[-1].take(True)
        for cluster in sorted({*claim.shared, *claim.broken}):
            locks.append(_Lock(cluster_lock(path, cluster)))
            waited += locks[-1].take(cluster in claim.broken)
        locks.append(_Lock(path))
        waited += locks[-1].take(claim.exclusive)
        holding = Holding(claim, locks[-1])
        holding.waited_s = waited
        yield holding
    finally:
        for lock in reversed(locks):
            lock.close()


def claim(
    quiet: bool,
    breaks: Sequence[str] | None,
    cluster: str | None,
    clusters: Sequence[str],
    mesh: Sequence[str],
    waits: bool = False,
) -> Claim:
    """The claim of a scenario test (pure).

    ``quiet``: the catalogue's flag; ``breaks``: None for a test with no ``breaks``
    marker, else the roles it names (``ROLES``: the mesh's first or second cluster);
    ``cluster``: the run's ``--cluster`` (None: the whole lab's run, which touches
    ``clusters``); ``mesh``: the clusters of the lab's mesh, in the mesh's order;
    ``waits``: the test is marked ``waits`` (a quiet one then holds the clusters it
    touches alone, so that it may let the machine be shared while it waits). A
    ``breaks`` marker in a lab without two meshed clusters changes nothing (the test
    is not applicable there): a quiet test then holds the machine alone as before.
    Every test of a quiet scenario takes the quiet turn.
    """
    touched = (cluster,) if cluster else tuple(clusters)
    if waits and breaks is not None:
        raise ValueError("a test is marked breaks (it shares the machine throughout) or waits "
                         "(alone, shared while it waits), not both")  # fmt: skip
    if waits and quiet:
        return Claim(exclusive=True, broken=touched, turn=True, waits=True)
    if breaks is None or len(mesh) < 2:
        return Claim(exclusive=quiet, shared=touched, turn=quiet)
    unknown = [r for r in breaks if r not in ROLES]
    if unknown:
        raise ValueError(f"breaks({', '.join(unknown)}): not a role ({', '.join(ROLES)})")
    roles = dict(zip(ROLES, mesh, strict=False))
    broken = tuple(dict.fromkeys(roles[r] for r in breaks))
    return Claim(False, tuple(c for c in touched if c not in broken), broken, turn=quiet)
