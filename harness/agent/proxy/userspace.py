"""The ``userspace`` proxy mode: kube-proxy's first design, a relay process on the node.

Kernel objects: the ``local`` route for the service CIDR (so the node owns every
ClusterIP and can bind it) and one listening TCP socket per service port on
``ClusterIP:port``; each accepted connection is relayed to the next endpoint,
round-robin (ClientIP affinity: the endpoint the client got last, until the
timeout), by two pump threads. A service port without endpoints has no
listener, so the kernel answers a connection with a reset (refused). TCP only:
UDP service ports are skipped in this mode (a documented limit).

Costs two copies through user space per byte — the reason kube-proxy left it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterable

from pyroute2.netns import setns

from harness.agent.proxy.base import local_service_route
from harness.agent.proxy.model import Endpoint, ServicePort

log = logging.getLogger("podlab.proxy.userspace")
CONNECT_TIMEOUT_S = 2.0


class _Listener:
    """One ClusterIP:port: accept, choose an endpoint, relay."""

    def __init__(self, svc: ServicePort) -> None:
        self.svc = svc
        self.next = 0
        self.affinity: dict[str, tuple[Endpoint, float]] = {}
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((svc.cluster_ip, svc.port))
        self.sock.listen(512)
        self.thread = threading.Thread(target=self._serve, daemon=True, name=f"usp-{svc.ident}")
        self.thread.start()

    def retarget(self, svc: ServicePort) -> None:
        with self.lock:
            self.svc = svc

    def choose(self, client: str) -> Endpoint:
        with self.lock:
            eps = self.svc.endpoints
            now = time.monotonic()
            sticky = self.affinity.get(client)
            if self.svc.affinity_s and sticky and sticky[1] > now and sticky[0] in eps:
                ep = sticky[0]
            else:
                ep = eps[self.next % len(eps)]
                self.next += 1
            if self.svc.affinity_s:
                self.affinity[client] = (ep, now + self.svc.affinity_s)
            return ep

    def _serve(self) -> None:
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(conn, addr[0]), daemon=True).start()

    def _relay(self, conn: socket.socket, client: str) -> None:
        ep = self.choose(client)
        try:
            up = socket.create_connection((ep.ip, ep.port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            log.warning("%s: endpoint %s:%d: %s", self.svc.ident, ep.ip, ep.port, exc)
            conn.close()
            return
        up.settimeout(None)
        threading.Thread(target=_pump, args=(up, conn), daemon=True).start()
        _pump(conn, up)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        src.close()


class UserspaceProxy:
    """Listeners follow the desired service ports; an endpoint change only retargets."""

    name = "userspace"

    def __init__(self, service_cidr: str, netns: str | None = None) -> None:
        self.service_cidr = service_cidr
        self.netns = netns
        self.listeners: dict[str, _Listener] = {}
        self._work: list[tuple[str, list[ServicePort]]] = []
        self._cv = threading.Condition()
        self._done: dict[int, BaseException | None] = {}
        self._issued = 0
        # Sockets belong to the namespace of the thread that creates them, so one
        # worker thread (entered into ``netns``) creates every listener.
        threading.Thread(target=self._worker, daemon=True, name="usp-worker").start()

    def _worker(self) -> None:
        if self.netns:
            setns(self.netns)
        seq = 0
        while True:
            with self._cv:
                while not self._work:
                    self._cv.wait()
                op, svcs = self._work.pop(0)
            seq += 1
            try:
                self._apply(op, svcs)
                err: BaseException | None = None
            except Exception as exc:  # handed back to the caller
                err = exc
            with self._cv:
                self._done[seq] = err
                self._cv.notify_all()
            if op == "stop":
                return

    def _submit(self, op: str, svcs: list[ServicePort]) -> None:
        with self._cv:
            self._work.append((op, svcs))
            self._issued += 1
            target = self._issued  # the worker numbers jobs in the same FIFO order
            self._cv.notify_all()
            while target not in self._done:
                self._cv.wait()
            err = self._done[target]
        if err is not None:
            raise err

    def _apply(self, op: str, svcs: list[ServicePort]) -> None:
        if op == "stop":
            svcs = []
        want = {s.ident: s for s in svcs if s.protocol == "tcp" and s.endpoints}
        for ident in list(self.listeners):
            old = self.listeners[ident]
            new = want.get(ident)
            if new is None or (new.cluster_ip, new.port) != (old.svc.cluster_ip, old.svc.port):
                self.listeners.pop(ident).close()
        for ident, svc in want.items():
            if ident in self.listeners:
                self.listeners[ident].retarget(svc)
            else:
                self.listeners[ident] = _Listener(svc)

    def full_sync(self, services: Iterable[ServicePort]) -> None:
        local_service_route(self.service_cidr, self.netns)
        self._submit("sync", list(services))

    def update(self, services: Iterable[ServicePort]) -> None:
        self._submit("sync", list(services))

    def close(self) -> None:
        self._submit("stop", [])
        local_service_route(self.service_cidr, self.netns, remove=True)
