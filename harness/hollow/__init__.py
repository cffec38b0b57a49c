"""Hollow nodes: many simulated nodes of one cluster in one asyncio process.

A hollow node does, against the cluster's etcd, what a real agent does there and
nothing it does in the kernel: it holds a real subnet lease (same record, same
etcd lease TTL), heartbeats its node record at the agent's period, publishes
backend data (a VTEP MAC; the runner host's underlay address), and moves the
pods scheduled to it through kwok-like stages to Running/Ready with an IP from
its subnet. Real agents therefore program a route/FDB/neighbour per hollow peer
and put hollow pods into their Services' endpoints (ADR 0013).

Imports ``harness.store`` (the one etcd client), never ``harness.agent``.
"""
