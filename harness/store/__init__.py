"""podlab's one etcd client and its key layout.

``harness.store.client`` (``Store``: keys, guarded transactions, leases, TLS,
users), ``harness.store.watch`` (resumable prefix watches) and
``harness.store.keys`` (the layout of docs/etcd-layout.md). Imported by the host
side (``podlab apply/get``, the conformance suites) and by the node agent alike,
so this package imports nothing of podlab but ``harness.errors`` (ADR 0003).
"""

from __future__ import annotations

import time

from harness.store import keys
from harness.store.client import (
    KV,
    MAX_TXN_OPS,
    TLS,
    Event,
    Reading,
    Store,
    StoreError,
    StoreUnreachable,
    Write,
    endpoint_url,
)

__all__ = [
    "KV",
    "MAX_TXN_OPS",
    "TLS",
    "Event",
    "Reading",
    "Store",
    "StoreError",
    "StoreUnreachable",
    "Write",
    "endpoint_url",
    "keys",
    "wait_ready",
]


def wait_ready(store: Store, timeout: float = 30.0) -> None:
    """Block until etcd answers, so start-up ordering between etcd and agents is free."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            store.get_prefix(keys.ROOT + "/")
            return
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
