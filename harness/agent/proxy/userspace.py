"""The ``userspace`` proxy mode: kube-proxy's first design, a relay process on the node.

Kernel objects: the ``local`` route for the service CIDR (so the node owns every
ClusterIP and can bind it) and, per service port with endpoints, one socket on
``ClusterIP:port`` plus, for a NodePort, one on ``0.0.0.0:nodePort``. TCP: each
accepted connection is relayed to an endpoint by two pump threads. UDP: each
client address gets its own connected socket to an endpoint (a "session", closed
after ``UDP_IDLE_S`` without traffic) and replies go back from the service
address. Endpoints are taken round-robin (ClientIP affinity: the endpoint the
client got last, until the timeout). A service port without endpoints has no
socket, so the kernel refuses (TCP reset, ICMP port unreachable for UDP).

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

from harness.agent.proxy.base import PortChanges, local_service_route
from harness.agent.proxy.model import Endpoint, ServicePort

log = logging.getLogger("podlab.proxy.userspace")
CONNECT_TIMEOUT_S = 2.0
UDP_IDLE_S = 10.0  # a UDP session's socket closes after this long without traffic


class _Balancer:
    """Endpoint choice shared by every socket of one service port."""

    def __init__(self, svc: ServicePort) -> None:
        self.svc = svc
        self.next = 0
        self.affinity: dict[str, tuple[Endpoint, float]] = {}
        self.lock = threading.Lock()

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


class _TcpListener:
    """One listening address of a TCP service port: accept, choose, relay."""

    def __init__(self, lb: _Balancer, addr: tuple[str, int]) -> None:
        self.lb = lb
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(addr)
        self.sock.listen(512)
        name = f"usp-{lb.svc.ident}@{addr[1]}"
        threading.Thread(target=self._serve, daemon=True, name=name).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(conn, addr[0]), daemon=True).start()

    def _relay(self, conn: socket.socket, client: str) -> None:
        ep = self.lb.choose(client)
        try:
            up = socket.create_connection((ep.ip, ep.port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            log.warning("%s: endpoint %s:%d: %s", self.lb.svc.ident, ep.ip, ep.port, exc)
            conn.close()
            return
        up.settimeout(None)
        threading.Thread(target=_pump, args=(up, conn), daemon=True).start()
        _pump(conn, up)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class _UdpRelay:
    """One address of a UDP service port: a session (upstream socket) per client."""

    def __init__(self, lb: _Balancer, addr: tuple[str, int]) -> None:
        self.lb = lb
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(addr)
        self.sessions: dict[tuple[str, int], socket.socket] = {}
        self.lock = threading.Lock()
        self.closed = False
        name = f"usp-{lb.svc.ident}@{addr[1]}"
        threading.Thread(target=self._serve, daemon=True, name=name).start()

    def _serve(self) -> None:
        while True:
            try:
                data, client = self.sock.recvfrom(65535)
            except OSError:
                return  # closed
            if client is None:  # shut down by close() while we waited: no sender
                return
            try:
                self._session(client).send(data)
            except OSError as exc:  # endpoint unreachable: the datagram is lost, as in a kernel
                log.debug("%s: %s → endpoint: %s", self.lb.svc.ident, client, exc)

    def _session(self, client: tuple[str, int]) -> socket.socket:
        with self.lock:
            up = self.sessions.get(client)
            if up is None:
                ep = self.lb.choose(client[0])
                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                up.connect((ep.ip, ep.port))
                up.settimeout(UDP_IDLE_S)
                self.sessions[client] = up
                threading.Thread(target=self._replies, args=(client, up), daemon=True).start()
            return up

    def _replies(self, client: tuple[str, int], up: socket.socket) -> None:
        try:
            while not self.closed:
                try:
                    data = up.recv(65535)
                except ConnectionRefusedError:
                    continue  # the endpoint's port was closed for one datagram; keep going
                self.sock.sendto(data, client)
        except OSError:
            pass  # idle timeout, or closed
        finally:
            with self.lock:
                if self.sessions.get(client) is up:
                    del self.sessions[client]
            up.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        with self.lock:
            for up in self.sessions.values():
                with contextlib.suppress(OSError):
                    up.shutdown(socket.SHUT_RDWR)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        src.close()


class _Port:
    """Every socket of one service port (ClusterIP, and NodePort if it has one)."""

    def __init__(self, svc: ServicePort) -> None:
        self.lb = _Balancer(svc)
        kind = _TcpListener if svc.protocol == "tcp" else _UdpRelay
        self.socks: list[_TcpListener | _UdpRelay] = [kind(self.lb, (svc.cluster_ip, svc.port))]
        try:
            if svc.node_port:
                self.socks.append(kind(self.lb, ("0.0.0.0", svc.node_port)))
        except OSError:
            self.close()
            raise

    @staticmethod
    def where(svc: ServicePort) -> tuple[str, int, int | None]:
        return svc.cluster_ip, svc.port, svc.node_port

    def close(self) -> None:
        for s in self.socks:
            s.close()


class UserspaceProxy:
    """Sockets follow the desired service ports; an endpoint change only retargets."""

    name = "userspace"

    def __init__(self, service_cidr: str, netns: str | None = None) -> None:
        self.service_cidr = service_cidr
        self.netns = netns
        self.listeners: dict[str, _Port] = {}
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
        want = {s.ident: s for s in svcs if s.endpoints}
        for ident in list(self.listeners):
            old = self.listeners[ident]
            new = want.get(ident)
            if new is None or _Port.where(new) != _Port.where(old.lb.svc):
                self.listeners.pop(ident).close()
        failed = []
        for ident, svc in want.items():
            if ident in self.listeners:
                self.listeners[ident].lb.retarget(svc)
                continue
            try:
                self.listeners[ident] = _Port(svc)
            except OSError as exc:  # e.g. a NodePort some other process holds
                failed.append(f"{ident}: {exc}")
        if failed:
            raise RuntimeError("userspace proxy could not bind " + "; ".join(failed))

    def full_sync(self, services: Iterable[ServicePort]) -> None:
        local_service_route(self.service_cidr, self.netns)
        self._submit("sync", list(services))

    def update(self, services: Iterable[ServicePort]) -> None:
        self._submit("sync", list(services))

    def apply(self, changes: PortChanges) -> None:
        """One pass's changes: the listeners' thread reconciles against the whole list
        (it retargets or rebinds only the ports that moved)."""
        if changes:
            self._submit("sync", list(changes.current.values()))

    def close(self) -> None:
        self._submit("stop", [])
        local_service_route(self.service_cidr, self.netns, remove=True)
