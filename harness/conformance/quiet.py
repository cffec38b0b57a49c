"""Runs that share a machine take turns for what must be measured on a quiet one.

Two conformance runs may test one lab at once, one per cluster
(docs/adr/0010-per-cluster-conformance-runs.md). Every scenario test holds the lab's quiet
lock while it runs (setup, call and teardown): shared for ordinary tests,
exclusive for the ``quiet`` ones of the catalogue (throughput, latency, SLOs),
so that a throughput figure is never taken while the other cluster deploys or
probes. A turnstile keeps an exclusive taker from starving: once it waits, new
shared takers queue behind it.

``flock`` locks belong to open files, so a crashed run frees them with its process.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
