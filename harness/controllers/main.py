"""``podlab-controllers``: one cluster's controller manager (kube-controller-manager +
kube-scheduler for podlab), a supervised process on the control-plane node.

Start-up: wait for etcd, take the cluster's leadership (``controllers/leader``,
a key bound to an etcd lease: a second instance waits until the first is gone,
as kube-controller-manager's leader election makes it), list everything it
watches, then loop: on every change (and every ``resync_s``) one pass of the
garbage collector, the Deployment and ReplicaSet controllers, the scheduler
and the quota counter; every ``hpa_sync_period_s`` the autoscaler. Each pass
decides from the current view of etcd only, and every write is guarded by the
revision it decided on: a restart (or a ``kill -9``) loses nothing, the next
process lists etcd and carries on where the last one stopped. SIGTERM releases
the leadership at once.

``podlab-controllers --check`` exits 0 while this cluster's leader record is
fresh (the deploy's health check).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import __version__, daemon
from harness.controllers import common, deployment, gc, hpa, replicaset, scheduler
from harness.controllers.common import log
from harness.controllers.view import View
from harness.kube.hpacalc import Config as HPAConfig
from harness.store import Store, StoreError, keys, wait_ready

DEFAULT_PATH = "/etc/podlab/controllers.yaml"
Controller = Literal["scheduler", "replicaset", "deployment", "hpa", "resourcequota", "gc"]
ALL: tuple[Controller, ...] = (
    "scheduler",
    "replicaset",
    "deployment",
    "hpa",
    "resourcequota",
    "gc",
)


class ControllersConfig(BaseModel):
    """``/etc/podlab/controllers.yaml`` (rendered by the deploy's ``controllers`` role)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str
    etcd_endpoints: list[str] = Field(min_length=1)
    node: str = ""
    controllers: list[Controller] = Field(default_factory=lambda: list(ALL))
    resync_s: float = Field(10.0, gt=0)
    leader_ttl_s: int = Field(15, ge=3)
    # kube-controller-manager's --horizontal-pod-autoscaler-* flags, same defaults
    hpa_sync_period_s: float = Field(15.0, gt=0)
    hpa_tolerance: float = Field(0.1, ge=0)
    hpa_downscale_stabilization_s: float = Field(300.0, ge=0)
    hpa_cpu_initialization_period_s: float = Field(300.0, ge=0)
    hpa_initial_readiness_delay_s: float = Field(30.0, ge=0)

    def hpa(self) -> HPAConfig:
        return HPAConfig(
            sync_period_s=self.hpa_sync_period_s,
            tolerance=self.hpa_tolerance,
            downscale_stabilization_s=self.hpa_downscale_stabilization_s,
            cpu_initialization_s=self.hpa_cpu_initialization_period_s,
            initial_readiness_delay_s=self.hpa_initial_readiness_delay_s,
        )


def load(path: str | Path) -> ControllersConfig:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
        return ControllersConfig.model_validate(data)
    except OSError as exc:
        raise SystemExit(f"podlab-controllers: {p}: cannot read: {exc.strerror}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise SystemExit(f"podlab-controllers: {p}: {exc}") from exc


def leader_key(cluster: str) -> str:
    return f"{keys.controllers_prefix(cluster)}leader"


class ControllerManager:
    def __init__(self, cfg: ControllersConfig) -> None:
        self.cfg = cfg
        self.store = Store(cfg.etcd_endpoints)
        self.view = View(self.store, cfg.cluster)
        self.stop = threading.Event()
        self.lease = 0
        self.identity = f"{cfg.node or socket.gethostname()}/{os.getpid()}"
        self.next_hpa = 0.0

    # -- leadership ----------------------------------------------------------------------
    def _record(self) -> str:
        return json.dumps({"holder": self.identity, "version": __version__,
                           "renewTime": time.time()})  # fmt: skip

    def lead(self) -> bool:
        """Block until this process holds the cluster's leadership (False if stopped)."""
        waiting = False
        while not self.stop.is_set():
            lease = self.store.grant(self.cfg.leader_ttl_s)
            if self.store.create(leader_key(self.cfg.cluster), self._record(), lease):
                self.lease = lease
                log.info("leading cluster %s as %s", self.cfg.cluster, self.identity)
                return True
            self.store.revoke(lease)
            if not waiting:
                log.info("another controller manager leads cluster %s; waiting", self.cfg.cluster)
                waiting = True
            self.stop.wait(self.cfg.leader_ttl_s / 3)
        return False

    def renew(self) -> None:
        if self.store.refresh(self.lease) <= 0:
            log.error("lost the leadership lease; exiting so the supervisor restarts us")
            self.stop.set()
            return
        self.store.put(leader_key(self.cfg.cluster), self._record(), self.lease)

    def release(self) -> None:
        if self.lease:
            try:
                self.store.revoke(self.lease)
            except StoreError:
                log.warning("could not release the leadership lease (it expires)")

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        threading.Thread(
            target=self.view.watch, args=(self.stop,), name="watch", daemon=True
        ).start()
        self.view.synced.wait()
        renew_every = self.cfg.leader_ttl_s / 3
        next_renew = time.monotonic() + renew_every
        next_resync = 0.0
        wake_at: float | None = None
        while not self.stop.is_set():
            timeout = min(next_renew, next_resync) - time.monotonic()
            if wake_at is not None:
                timeout = min(timeout, wake_at - time.time())
            if self.view.changed.wait(max(0.0, timeout)):
                time.sleep(0.02)  # let a burst of events land, then act once
            self.view.changed.clear()
            try:
                if time.monotonic() >= next_renew:
                    self.renew()
                    next_renew = time.monotonic() + renew_every
                if time.monotonic() >= next_resync:
                    next_resync = time.monotonic() + self.cfg.resync_s
                wake_at = self.one_pass(time.time())
            except StoreError as exc:
                log.error("etcd: %s (retrying)", exc)
                self.stop.wait(1.0)
            except Exception:
                log.exception("controller pass failed; retrying")
                self.stop.wait(1.0)
        self.release()
        log.info("stopped")

    def one_pass(self, now: float) -> float | None:
        """Every controller once; returns the next time something is due (or None)."""
        on = set(self.cfg.controllers)
        wakes: list[float] = []
        if "gc" in on:
            gc.collect(self.view, now)
        if "deployment" in on:
            for rec in self.view.records("deployments"):
                if (t := deployment.sync(self.view, rec, now)) is not None:
                    wakes.append(t)
        if "replicaset" in on:
            for rec in self.view.records("replicasets"):
                pods = common.pods(self.view, common.ns_name(rec.obj)[0])
                if (t := replicaset.sync(self.view, rec, pods, now)) is not None:
                    wakes.append(t)
        if "scheduler" in on:
            scheduler.sync(self.view, now)
        if "resourcequota" in on:
            gc.quotas(self.view, now)
        if "hpa" in on:
            if now >= self.next_hpa:
                usage = hpa.samples(self.view)
                cfg = self.cfg.hpa()
                for rec in self.view.records("horizontalpodautoscalers"):
                    hpa.sync(self.view, rec, cfg, usage, now)
                self.next_hpa = now + self.cfg.hpa_sync_period_s
            wakes.append(self.next_hpa)
        return min(wakes) if wakes else None


def check(cfg: ControllersConfig) -> int:
    """``--check``: 0 when the cluster's leader record is fresh."""
    try:
        kv = Store(cfg.etcd_endpoints, timeout=3).get(leader_key(cfg.cluster))
    except StoreError as exc:
        print(f"unhealthy: {exc}")
        return 1
    if kv is None:
        print(f"unhealthy: no controller manager leads cluster {cfg.cluster}")
        return 1
    rec = kv.json()
    age = time.time() - float(rec.get("renewTime") or 0)
    if age > cfg.leader_ttl_s:
        print(f"unhealthy: the leader record of {cfg.cluster} is {age:.0f}s old")
        return 1
    print(f"ok: {rec.get('holder')} leads cluster {cfg.cluster} (renewed {age:.1f}s ago)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = daemon.parse_args(
        "podlab-controllers",
        __doc__,
        DEFAULT_PATH,
        "controllers.yaml (%(default)s)",
        "health check: exit 0 if leading",
        argv,
    )
    cfg = load(args.config)
    if args.check:
        return check(cfg)
    mgr = ControllerManager(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: mgr.stop.set())
    try:
        wait_ready(mgr.store, timeout=60)
        if not mgr.lead():
            return 0
    except StoreError as exc:
        log.error("start-up failed: %s", exc)
        return 1
    mgr.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
