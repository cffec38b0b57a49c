"""podlab load's clean-up (harness/load/run.delete_run) against a real etcd.

It must find a run's objects by their label (so ``--cleanup RUN`` works for a
run that was killed), leave other runs' alone, keep going when the store fails
on some objects, and say what still stands instead of returning quietly.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from harness.api.client import ApiClient
from harness.errors import LabError
from harness.load.run import (
    LoadConfig,
    PodPlan,
    delete_run,
    located,
    pod_manifest,
    service_manifest,
)
from harness.store import StoreError
from harness.store.keys import kind_prefix
from harness.testlab.etcd import LocalEtcd

CFG = LoadConfig()
NS = CFG.namespace


@pytest.fixture
def client(etcd: LocalEtcd) -> ApiClient:
    return ApiClient(etcd.store(), "c1")


def _make(client: ApiClient, run_id: str, pods: int) -> None:
    for i in range(pods):
        client.apply(located(pod_manifest(PodPlan(f"{run_id}-p{i}", "w1", 0, True), run_id, CFG)))
    client.apply(
        located(
            service_manifest(0, run_id, CFG)
            | {
                "metadata": {
                    "name": f"{run_id}-g0",
                    "namespace": NS,
                    "labels": {"podlab.load/run": run_id},
                }
            }
        )
    )


def _names(client: ApiClient, plural: str) -> list[str]:
    kvs = client.store.get_prefix(kind_prefix("c1", plural, NS))[0]
    return sorted(kv.key.rsplit("/", 1)[-1] for kv in kvs)


def test_deletes_the_runs_objects_by_label_and_nothing_else(client: ApiClient) -> None:
    _make(client, "run-a", 3)
    _make(client, "run-b", 2)
    delete_run(client, client.store, NS, "run-a")
    assert _names(client, "pods") == ["run-b-p0", "run-b-p1"]
    assert _names(client, "services") == ["run-b-g0"]


class Flaky(ApiClient):
    """Deletes fail ``failures`` times per object before they work (a store timing out)."""

    def __init__(self, inner: ApiClient, failures: int) -> None:
        super().__init__(inner.store, inner.cluster)
        self.failures = failures
        self.seen: dict[str, int] = {}

    def delete(self, info, namespace, name, grace_s=None):  # type: ignore[no-untyped-def]
        n = self.seen[name] = self.seen.get(name, 0) + 1
        if n <= self.failures:
            raise StoreError(f"etcd: deadline exceeded deleting {name}")
        return super().delete(info, namespace, name, grace_s)


def test_a_store_failing_on_some_deletes_does_not_stop_the_rest(client: ApiClient) -> None:
    _make(client, "run-a", 3)
    flaky = Flaky(client, failures=1)
    delete_run(flaky, client.store, NS, "run-a")
    assert _names(client, "pods") == [] and _names(client, "services") == []
    assert set(flaky.seen.values()) == {2}  # every object tried, failed once, then deleted


def test_what_still_stands_is_named_with_the_command_to_finish(client: ApiClient) -> None:
    _make(client, "run-a", 2)
    with pytest.raises(LabError) as exc:
        delete_run(Flaky(client, failures=99), client.store, NS, "run-a")
    msg = str(exc.value)
    assert "left 3 objects" in msg and "deadline exceeded" in msg
    assert "podlab load LAB --cleanup run-a" in msg
    assert len(_names(client, "pods")) == 2  # the control: nothing was deleted after all


def test_breakdown_splits_a_mutating_call_into_its_etcd_round_trips_and_the_rest(
    client: ApiClient, tmp_path: Path
) -> None:
    """The breakdown podlab load prints (where a create's time goes) counts every round
    trip a create makes against etcd and no more: the sampler's and the watch's reads,
    on other threads, are not charged to it."""
    from harness.load import report, run

    client.store.put("/podlab/v1/c1/nodes/w1", '{"name": "w1"}')
    r = run.LoadRun(client, LoadConfig(rate=100.0), "run-x")
    try:
        plan = [PodPlan(f"p-{i}", "w1", 0, False) for i in range(6)]
        r.etcd_reading("start")
        r._paced("create", [partial(r._create, p) for p in plan])
        r.etcd_reading("created")
        client.store.get_prefix("/podlab/v1/c1/")  # a read outside any call
        r._paced("delete", [partial(r._delete, p.name, 0) for p in plan])
        r.etcd_reading("end")
    finally:
        r.cleanup()
    creates, deletes = r.samples.calls["create"], r.samples.calls["delete"]
    assert len(creates) == 6 and len(deletes) == 6
    for total, trips, etcd_s in creates + deletes:
        assert trips >= 1 and 0 < etcd_s <= total
    # a create: one read ahead (node, key, LimitRanges, ResourceQuotas), one transaction
    assert {c[1] for c in creates} == {2}
    assert len(r.samples.queued["create"]) == 6
    assert len(r.samples.etcd["kv/txn"]) == 6 * 2  # creates: a read, a write
    assert len(r.samples.etcd["kv/deleterange"]) >= 6  # deletes at grace 0
    assert len(r.samples.etcd["kv/range"]) >= 1  # the outside read, counted by its path
    assert client.store.on_call is None  # cleanup unhooks the store
    meta = report.RunMeta("x", "t", ("load",), report.env.capture())
    w = report.ResultsWriter(tmp_path / "r.json", meta)
    lines = report.breakdown_records(w, r.samples, {})
    assert lines[0].startswith("pod create (6): call p50") and "2 etcd round trips" in lines[0]
    assert any(ln.startswith("etcd kv/txn:") for ln in lines)
    # etcd's own view over the same windows: every create's transaction was fsynced
    etcd_lines = report.etcd_records(w, r.samples, {})
    assert [ln.split(" (")[0] for ln in etcd_lines] == ["etcd over the create", "etcd over the run"]
    fsyncs = {m.labels["window"]: int(m.labels["samples"]) for m in w._measurements
              if m.name == "etcd_wal_fsync_p99_s"}  # fmt: skip
    assert 6 <= fsyncs["create"] < fsyncs["run"]


def test_etcd_metrics_text_is_read_as_histograms_and_summed_counters() -> None:
    from harness.load import etcdmetrics

    text = "\n".join([
        "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 2',
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 5',
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 7',
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Range"} 3',
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Txn"} 4',
        "process_cpu_seconds_total 1.5",
    ])  # fmt: skip
    got = etcdmetrics.parse(text)
    assert got["etcd_disk_wal_fsync_duration_seconds"] == {"le": [0.001, 0.002], "counts": [2, 5]}
    assert got["grpc_server_handled_total"] == 7 and got["process_cpu_seconds_total"] == 1.5
    assert got["etcd_disk_backend_commit_duration_seconds"] == {"le": [], "counts": []}
