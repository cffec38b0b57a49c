"""Drive clusterloader2's load test against one cluster and collect its SLI samples.

Phases, as CL2's ``testing/load``: create the pods at a fixed rate (default 10
pods/s, 30 per node, over every Ready node, hollow and real, round-robin) with a
Service over every other group of pods (CL2: Services are half the
Deployments) or over ``--services`` groups spread evenly; wait until all run;
optionally hold that size for a while, watching that no node dies and no lease
is lost (hold.py); churn (delete a fraction and create as many new ones, at the
same rate); delete everything at the same rate. Everything goes through
podlab's API code (``ApiClient``: admission, one guarded transaction per apply),
the path ``podlab apply`` takes.

Pods are bound by the load itself (``spec.nodeName``), spread as a scheduler with
equal nodes would; so pod startup latency measures the node side (agent or hollow
node), not the scheduler (a decision recorded in docs/load.md).

Samples: pod startup (created → ``Running`` seen through a watch on the pod
statuses, real and hollow separately), the latency of every API call the load
makes (mutating) plus a sampler's gets and lists, DNS lookups of every Service
from each real node, the agents' network programming histograms
(``netprog/<node>``) read before and after, and the processes' RSS and CPU.
A failure or Ctrl-C deletes everything the run created before it returns.
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from harness.api.client import ApiClient
from harness.api.objects import KINDS, NodeRecord
from harness.api.validate import Located, load_documents, validate_documents
from harness.errors import LabError
from harness.load import etcdmetrics, hold
from harness.store import KV, Event, StoreError
from harness.store.keys import kind_prefix, podstatus_prefix

POD, SERVICE = KINDS["Pod"], KINDS["Service"]
LABEL = "podlab.load/run"
DOMAIN = "cluster.local"  # the agents' DNS domain (the host side imports no agent code)
# API calls in flight at most: the rate needs rate x latency of them (Little's law). At
# 1,000 hollow nodes under load 31-34 a create took 0.39 s at p50 and 5.8 s at p99: four
# in flight made ~7.8 creates/s of the 10 asked, sixteen made 10.0 (docs/load.md)
WORKERS = 16


@dataclass(frozen=True)
class LoadConfig:
    """What one run does (``podlab load`` flags)."""

    namespace: str = "podlab-load"
    pods_per_node: int = 30
    rate: float = 10.0  # pods per second, creating and deleting
    group_size: int = 10  # pods per group; a Service selects one group
    services: int | None = None  # Services (each over one group); None: every other group (CL2)
    churn: float = 0.5  # fraction of pods deleted and replaced in the churn phase
    timeout_s: float = 600.0  # per wait (all running, all gone)
    dns_rounds: int = 3  # lookups of every Service name per real node
    hold_s: float = 0.0  # seconds at full size, every pod running, watching node health
    node_grace_s: float = hold.NODE_GRACE_S  # a heartbeat older than this: a dead node
    workers: int = WORKERS  # API calls in flight at most


LIST_OBJECTS_PER_S = 1000  # the sampler's lists read about this many pods a second at most


def list_period(pods: int) -> float:
    """Seconds between the sampler's lists: every second up to 1,000 pods, then as many
    seconds as thousands of pods. A list of the namespace is the load's own read, not
    the cluster's (CL2 measures the lists its controllers make anyway); listing 30,000
    pods (and their statuses, ~24 MB through etcd's gateway) every second would make
    the sampler the heaviest client of the run. Each list is still one SLI sample."""
    return max(1.0, pods / LIST_OBJECTS_PER_S)


@dataclass(frozen=True)
class PodPlan:
    name: str
    node: str
    group: int
    hollow: bool


def plan_pods(nodes: list[NodeRecord], cfg: LoadConfig, prefix: str = "p") -> list[PodPlan]:
    """``pods_per_node`` pods on every node, node by node in turn, grouped in creation order."""
    out: list[PodPlan] = []
    for _ in range(cfg.pods_per_node):
        for n in nodes:
            i = len(out)
            out.append(PodPlan(f"{prefix}-{i:05d}", n.name, i // cfg.group_size, n.hollow))
    return out


def service_groups(groups: int, cfg: LoadConfig) -> list[int]:
    """The groups that get a Service: every other one by default (CL2's load test makes
    Services for half its Deployments), or ``cfg.services`` of them spread evenly over
    the groups, so 10,000 Services beside 30,000 pods (the SIG-scalability envelope) is
    ``--group-size 3 --services 10000``. A count above the groups is refused before the
    run (``check_fit``); here it is capped, as a Service selects one whole group."""
    if cfg.services is None:
        return list(range(0, groups, 2))
    n = min(cfg.services, groups)
    return [i * groups // n for i in range(n)] if n else []


def group_count(pods: int, cfg: LoadConfig) -> int:
    return (pods + cfg.group_size - 1) // cfg.group_size


def pod_manifest(p: PodPlan, run_id: str, cfg: LoadConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p.name,
            "namespace": cfg.namespace,
            "labels": {LABEL: run_id, "group": f"g{p.group}"},
        },
        "spec": {
            "nodeName": p.node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "pause", "command": ["sleep", "infinity"]}],
        },
    }


def service_manifest(group: int, run_id: str, cfg: LoadConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"g{group}", "namespace": cfg.namespace, "labels": {LABEL: run_id}},
        "spec": {"selector": {"group": f"g{group}"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def located(manifest: dict[str, Any]) -> list[Located]:
    objs, problems = validate_documents(load_documents(yaml.safe_dump(manifest), "podlab-load"))
    if problems:
        raise LabError(f"podlab load built an invalid object: {problems[0]}")
    return objs


@dataclass
class Samples:
    """What the run measured; ``sli.py`` turns it into percentiles."""

    created: dict[str, float] = field(default_factory=dict)  # pod → epoch before its apply
    running: dict[str, float] = field(default_factory=dict)  # pod → first Running seen
    hollow: dict[str, bool] = field(default_factory=dict)
    api: dict[str, list[float]] = field(
        default_factory=lambda: {"mutating": [], "get": [], "list": []}
    )
    dns_s: list[float] = field(default_factory=list)
    probe_s: list[float] = field(default_factory=list)  # backend Ready → first answer
    dns_errors: int = 0
    held: hold.HoldResult | None = None  # the hold phase's findings (--hold)
    netprog_before: dict[str, dict[str, Any]] = field(default_factory=dict)
    netprog_after: dict[str, dict[str, Any]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # phase → seconds
    services: int = 0
    # where a mutating call's time goes: per pod create/delete (seconds in the call,
    # etcd round trips it made, seconds of them); per gateway path, every round trip
    # the load process made; per phase, seconds a paced job waited for a free worker
    calls: dict[str, list[tuple[float, int, float]]] = field(
        default_factory=lambda: {"create": [], "delete": []}
    )
    etcd: dict[str, list[float]] = field(default_factory=dict)
    # etcd's /metrics (etcdmetrics.py) at "start", "created" (the creates done), "end"
    etcd_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    queued: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def startup(self, hollow: bool) -> list[float]:
        return [
            self.running[n] - t
            for n, t in self.created.items()
            if n in self.running and self.hollow.get(n) == hollow
        ]


class LoadRun:
    """One run against one cluster; ``progress(phase, done, total)`` reports as it goes."""

    def __init__(
        self,
        client: ApiClient,
        cfg: LoadConfig,
        run_id: str,
        progress: Callable[[str, int, int], None] = lambda *_: None,
    ) -> None:
        self.client, self.cfg, self.run_id, self.progress = client, cfg, run_id, progress
        self.store = client.store
        self.samples = Samples()
        self.pods: dict[str, PodPlan] = {}  # created and not deleted
        self.services: list[str] = []
        self.stop = threading.Event()
        self._allocating = threading.Lock()
        self.listed = threading.Event()  # the watch has its first listing: no change is missed
        self.pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="load")
        self._op = threading.local()  # the create/delete a worker thread is in
        self.store.on_call = self._on_call

    def _on_call(self, path: str, seconds: float) -> None:
        """Every etcd round trip of this process (Store.on_call): by path, and counted
        against the create or delete the calling thread is in."""
        with self.samples.lock:
            self.samples.etcd.setdefault(path.strip("/"), []).append(seconds)
        acc = getattr(self._op, "acc", None)
        if acc is not None:
            acc[0] += 1
            acc[1] += seconds

    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Time one mutating call and the etcd round trips inside it."""
        acc: list[Any] = [0, 0.0]
        self._op.acc = acc
        t0 = time.monotonic()
        try:
            yield
        finally:
            self._op.acc = None
        dt = time.monotonic() - t0
        with self.samples.lock:
            self.samples.api["mutating"].append(dt)
            if what in self.samples.calls:
                self.samples.calls[what].append((dt, int(acc[0]), float(acc[1])))

    # --- the watch -----------------------------------------------------------------
    def _watch(self) -> None:
        prefix = podstatus_prefix(self.client.cluster, self.cfg.namespace)

        def seen(kvs: list[KV], now: float) -> None:
            for kv in kvs:
                try:
                    phase = json.loads(kv.value).get("phase")
                except (ValueError, AttributeError):
                    continue
                name = kv.key.rsplit("/", 1)[-1]
                if phase == "Running":
                    with self.samples.lock:
                        self.samples.running.setdefault(name, now)

        def events(evs: list[Event]) -> None:
            seen([e.kv for e in evs if e.type == "PUT"], time.time())

        def reset(kvs: list[KV]) -> None:
            seen(kvs, time.time())
            self.listed.set()

        self.store.watch_prefix(prefix, events, reset, self.stop)

    def _sampler(self) -> None:
        """A get of one pod every second and a list of the namespace's pods every
        ``list_period(pods)`` seconds (CL2's reads)."""
        listed = 0.0
        while not self.stop.wait(1.0):
            with self.samples.lock:
                names = list(self.pods)
            if names:
                t0 = time.monotonic()
                try:
                    self.client.get(POD, self.cfg.namespace, random.choice(names))
                    self._api("get", time.monotonic() - t0)
                except LabError:
                    pass  # deleted meanwhile
            if time.monotonic() - listed < list_period(len(names)):
                continue
            t0 = listed = time.monotonic()
            try:
                self.client.list_objects(POD, self.cfg.namespace)
                self._api("list", time.monotonic() - t0)
            except StoreError:
                pass

    def _api(self, verb: str, seconds: float) -> None:
        with self.samples.lock:
            self.samples.api[verb].append(seconds)

    # --- phases ----------------------------------------------------------------------
    def _paced(self, phase: str, jobs: list[Callable[[], None]]) -> None:
        """Start ``jobs`` at ``cfg.rate`` per second; wait for all; the first error raises."""
        done = [0]
        lock = threading.Lock()

        errors: list[Future[None]] = []

        def finished(f: Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                errors.append(f)
            with lock:
                done[0] += 1
                self.progress(phase, done[0], len(jobs))

        futures: list[Future[None]] = []
        waits = self.samples.queued.setdefault(phase, [])

        def started(job: Callable[[], None], at: float) -> None:
            waits.append(time.monotonic() - at)  # > 0: every worker was busy
            job()

        t0 = time.monotonic()
        for i, job in enumerate(jobs):
            delay = t0 + i / self.cfg.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if errors:  # stop at the first failure: cleanup follows
                errors[0].result()
            f = self.pool.submit(started, job, time.monotonic())
            f.add_done_callback(finished)
            futures.append(f)
        for f in futures:
            f.result()
        self.samples.phases[phase] = time.monotonic() - t0

    def _create(self, p: PodPlan) -> None:
        objs = located(pod_manifest(p, self.run_id, self.cfg))
        with self.samples.lock:
            self.samples.hollow[p.name] = p.hollow
            self.pods[p.name] = p
            self.samples.created[p.name] = time.time()
        with self._call("create"):
            self.client.apply(objs)

    def _delete(self, name: str, grace_s: int | None = None) -> None:
        with self._call("delete"):
            self.client.delete(POD, self.cfg.namespace, name, grace_s)
        with self.samples.lock:
            self.pods.pop(name, None)

    def _service(self, group: int) -> None:
        objs = located(service_manifest(group, self.run_id, self.cfg))
        with self._allocating, self._call("service"):  # ClusterIPs: one index, else retries
            self.client.apply(objs)
        self.services.append(f"g{group}")

    def wait_running(self, names: list[str], phase: str) -> None:
        deadline = time.monotonic() + self.cfg.timeout_s
        while True:
            with self.samples.lock:
                left = [n for n in names if n not in self.samples.running]
            self.progress(phase, len(names) - len(left), len(names))
            if not left:
                return
            if time.monotonic() > deadline:
                raise LabError(
                    f"{len(left)} of {len(names)} pods not Running after {self.cfg.timeout_s:g} s "
                    f"(first: {', '.join(left[:3])})"
                )
            time.sleep(0.2)

    def wait_gone(self, phase: str) -> None:
        prefix = kind_prefix(self.client.cluster, "pods", self.cfg.namespace)
        deadline = time.monotonic() + self.cfg.timeout_s
        total = max(1, self.store.count_prefix(prefix))  # counted: 30,000 pods are 12 MB
        while left := self.store.count_prefix(prefix):
            self.progress(phase, total - left, total)
            if time.monotonic() > deadline:
                raise LabError(f"{left} pods still there {self.cfg.timeout_s:g} s after deletion")
            time.sleep(0.5)
        self.progress(phase, total, total)

    def etcd_reading(self, when: str) -> None:
        """etcd's fsync, commit, slow-apply and CPU counters now (report.py: their growth)."""
        got = etcdmetrics.scrape(self.store.session, self.store.url)
        if got:
            self.samples.etcd_metrics[when] = {**got, "time": time.monotonic()}

    def netprog(self) -> dict[str, dict[str, Any]]:
        kvs, _ = self.store.get_prefix(kind_prefix(self.client.cluster, "netprog"))
        out = {}
        for kv in kvs:
            try:
                out[kv.key.rsplit("/", 1)[-1]] = json.loads(kv.value)
            except ValueError:
                continue
        return out

    def run(
        self,
        nodes: list[NodeRecord],
        dns: Callable[[list[str]], None],
        probe: Callable[[], list[float]] = list,
    ) -> Samples:
        """All phases; ``dns(names)`` looks the Services up from the real nodes, ``probe()``
        measures network programming from outside (harness/load/probe.py) under full load."""
        threads = [
            threading.Thread(target=self._watch, daemon=True, name="load-watch"),
            threading.Thread(target=self._sampler, daemon=True, name="load-sampler"),
        ]
        for t in threads:
            t.start()
        if not self.listed.wait(30):
            raise LabError("the watch on pod statuses got no listing from etcd in 30 s")
        self.samples.netprog_before = self.netprog()
        self.etcd_reading("start")
        plan = plan_pods(nodes, self.cfg)
        groups = service_groups(group_count(len(plan), self.cfg), self.cfg)
        self._paced("services", [partial(self._service, g) for g in groups])
        self.samples.services = len(self.services)
        self._paced("create", [partial(self._create, p) for p in plan])
        self.etcd_reading("created")
        self.wait_running([p.name for p in plan], "running")
        dns([f"{s}.{self.cfg.namespace}.svc.{DOMAIN}" for s in self.services])
        self.progress("probe", 0, 1)
        self.samples.probe_s = probe()
        self.progress("probe", 1, 1)
        if self.cfg.hold_s > 0:  # issue 15: the full size held, no lease lost, no node dead
            t0 = time.monotonic()
            self.samples.held = hold.hold(
                self.store, self.client.cluster, [n.name for n in self.client.nodes()],
                self.cfg.hold_s, self.cfg.node_grace_s, progress=partial(self.progress, "hold (s)"),
            )  # fmt: skip
            self.samples.phases["hold"] = time.monotonic() - t0
        gone = random.Random(self.run_id).sample(plan, int(len(plan) * self.cfg.churn))
        fresh = [PodPlan(f"c-{i:05d}", p.node, p.group, p.hollow) for i, p in enumerate(gone)]
        churn: list[Callable[[], None]] = []
        for old, new in zip(gone, fresh, strict=True):
            churn += [partial(self._delete, old.name), partial(self._create, new)]
        self._paced("churn", churn)
        self.wait_running([p.name for p in fresh], "running after churn")
        time.sleep(2.5)  # the agents publish their histograms once a second
        self.samples.netprog_after = self.netprog()
        with self.samples.lock:
            remaining = list(self.pods)
        self._paced("delete", [partial(self._delete, n) for n in remaining])
        self.wait_gone("pods gone")
        self._paced("delete services", [partial(self._delete_service, s) for s in self.services])
        self.services = []
        self.etcd_reading("end")
        return self.samples

    def _delete_service(self, name: str) -> None:
        with self._allocating, self._call("service"):
            self.client.delete(SERVICE, self.cfg.namespace, name)

    def cleanup(self) -> None:
        """Delete whatever the run created and still stands (after a failure or Ctrl-C)."""
        self.stop.set()
        self.store.on_call = None
        self.pool.shutdown(wait=True, cancel_futures=True)
        delete_run(self.client, self.store, self.cfg.namespace, self.run_id)


def delete_run(client: ApiClient, store: Any, namespace: str, run_id: str) -> None:
    """Delete every pod and Service labelled with ``run_id``, or say what still stands.

    Found by label rather than from the run's memory, so ``podlab load --cleanup RUN``
    finishes the job of a run that was killed. A store that times out under load must
    not stop the rest: every object is tried, the stragglers again in a second and
    third pass, and what still stands ends in one error naming the command to retry.
    """
    left: list[str] = []
    first_error = ""
    for attempt in range(3):
        left, first_error = [], ""
        for kind in (POD, SERVICE):
            try:
                kvs = store.get_prefix(kind_prefix(client.cluster, kind.plural, namespace))[0]
            except StoreError as exc:
                left.append(f"{kind.plural} (not listed)")
                first_error = first_error or str(exc)
                continue
            for kv in kvs:
                try:
                    mine = json.loads(kv.value)["metadata"]["labels"].get(LABEL) == run_id
                except (ValueError, KeyError, TypeError, AttributeError):
                    mine = False
                if not mine:
                    continue
                name = kv.key.rsplit("/", 1)[-1]
                try:
                    if kind is POD:
                        client.delete(POD, namespace, name, 0)
                    else:
                        client.delete(SERVICE, namespace, name)
                except LabError as exc:
                    left.append(f"{kind.plural}/{name}")
                    first_error = first_error or str(exc)
        if not left:
            return
        time.sleep(1.0 + attempt)
    raise LabError(
        f"run {run_id} left {len(left)} objects in namespace {namespace} "
        f"(first: {', '.join(left[:3])}; {first_error}); "
        f"delete them with: podlab load LAB --cleanup {run_id}"
    )


@contextmanager
def cleaning(run: LoadRun) -> Iterator[LoadRun]:
    """Run's everything-created removal on any way out, Ctrl-C included."""
    try:
        yield run
    finally:
        run.cleanup()


# Runs inside a real node's network namespace: looks up each name (stdin, one per line)
# at the cluster DNS address, prints one JSON line {"ok": [seconds...], "errors": n}.
DNS_CLIENT = r"""
import json, socket, sys, time
from dnslib import DNSRecord
server, rounds = sys.argv[1], int(sys.argv[2])
names = sys.stdin.read().split()
ok, errors = [], 0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0)
for _ in range(rounds):
    for name in names:
        q = DNSRecord.question(name)
        t0 = time.monotonic()
        try:
            s.sendto(q.pack(), (server, 53))
            while True:
                reply = DNSRecord.parse(s.recv(4096))
                if reply.header.id == q.header.id:
                    break
            if reply.header.rcode != 0 or not reply.rr:
                errors += 1
            else:
                ok.append(time.monotonic() - t0)
        except (OSError, Exception):
            errors += 1
print(json.dumps({"ok": ok, "errors": errors}))
"""


def dns_ip(service_cidr: str) -> str:
    """kube-dns' conventional address, the service CIDR's 10th, where each agent answers."""
    return str(ipaddress.IPv4Network(service_cidr).network_address + 10)


def dns_lookups(
    python: str, netns_paths: list[Path], service_cidr: str, rounds: int, samples: Samples
) -> Callable[[list[str]], None]:
    """A ``dns(names)`` for LoadRun: each real node looks every name up ``rounds`` times."""

    def look(names: list[str]) -> None:
        for path in netns_paths:
            argv = ["nsenter", f"--net={path}", python, "-c", DNS_CLIENT,
                    dns_ip(service_cidr), str(rounds)]  # fmt: skip
            out = subprocess.run(
                argv, input="\n".join(names), capture_output=True, text=True, timeout=600
            )
            if out.returncode != 0:
                raise LabError(f"DNS lookups from {path} failed: {out.stderr.strip()[-300:]}")
            got = json.loads(out.stdout.strip().splitlines()[-1])
            samples.dns_s += got["ok"]
            samples.dns_errors += int(got["errors"])

    return look
