"""Cluster DNS (CoreDNS's ``kubernetes`` plugin, the parts pods rely on), fed from etcd.

Answers for the ``cluster.local`` zone from an in-memory table rebuilt (and
swapped in one assignment) whenever services, pods or pod statuses change:

- ``<svc>.<ns>.svc.cluster.local`` A → the ClusterIP; headless → every ready
  pod's IP; ExternalName → CNAME to ``spec.externalName``;
- ``_<port>._<proto>.<svc>.<ns>.svc.cluster.local`` SRV for named ports
  (headless: one per ready pod, target ``<a-b-c-d>.<svc>.<ns>.svc.cluster.local``);
- ``<a-b-c-d>.<ns>.pod.cluster.local`` A;
- ``<svc>.<ns>.svc.clusterset.local`` (the Multi-Cluster Services zone, KEP-1645):
  A → the ServiceImport's ClusterSetIP, headless → the ready backends of every
  exporting cluster; SRV for named ports (``add_clusterset``);
- a name in the zone with no record of the asked type → NOERROR, no answer
  (NODATA: resolvers ask A and AAAA together); no such name → NXDOMAIN; names
  outside the zone → REFUSED (the lab has no upstream resolver by design).

Served on UDP and TCP port 53 of the kube-dns ClusterIP (service CIDR .10),
which the node owns through the proxy's ``local`` service-CIDR route, so no
DNAT is involved and every node answers its own pods. Pods get
``/etc/resolv.conf`` from ``resolv_conf``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import socketserver
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnslib import CNAME, QTYPE, RCODE, RR, SRV, A, DNSRecord
from pyroute2.netns import setns

from harness.errors import ToolError
from harness.exec import run

log = logging.getLogger("podlab.dns")
DOMAIN = "cluster.local"
CLUSTERSET = "clusterset.local"  # KEP-1645's zone: one name across the clusters of a mesh
TTL_S = 5


def dns_ip(service_cidr: str) -> str:
    """kube-dns' conventional address: the service CIDR's 10th (10.96.0.10)."""
    return str(ipaddress.IPv4Network(service_cidr).network_address + 10)


def resolv_conf(namespace: str, nameserver: str, domain: str = DOMAIN) -> str:
    """A pod's /etc/resolv.conf, as the kubelet writes it for ``dnsPolicy: ClusterFirst``."""
    search = f"{namespace}.svc.{domain} svc.{domain} {domain}"
    return f"nameserver {nameserver}\nsearch {search}\noptions ndots:5\n"


def _ready_ip(status: dict[str, Any] | None) -> str | None:
    if not status or status.get("phase") != "Running":
        return None
    conds = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
    return status.get("podIP") if conds.get("Ready") == "True" else None


@dataclass
class Zone:
    """Name → records (already dnslib RRs), built from stored objects. Pure."""

    domain: str = DOMAIN
    records: dict[str, list[RR]] = field(default_factory=dict)
    also: tuple[str, ...] = (CLUSTERSET,)  # further zones answered (NXDOMAIN, not REFUSED)

    def _add(self, name: str, rtype: str, rdata: Any) -> None:
        name = name.lower().rstrip(".") + "."
        rr = RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=TTL_S)
        self.records.setdefault(name, []).append(rr)
        labels = name.rstrip(".").split(".")  # empty non-terminals exist (NODATA, not NXDOMAIN)
        for i in range(1, len(labels)):
            self.records.setdefault(".".join(labels[i:]) + ".", [])

    @classmethod
    def build(
        cls,
        services: Iterable[dict[str, Any]],
        pods: Iterable[dict[str, Any]],
        statuses: dict[tuple[str, str], dict[str, Any]],
        domain: str = DOMAIN,
    ) -> Zone:
        zone = cls(domain)
        pods = list(pods)
        for pod in pods:
            ns, name = pod["metadata"].get("namespace", "default"), pod["metadata"]["name"]
            ip = (statuses.get((ns, name)) or {}).get("podIP")
            if ip:
                zone._add(f"{ip.replace('.', '-')}.{ns}.pod.{domain}", "A", A(ip))
        for svc in services:
            zone._service(svc, pods, statuses)
        return zone

    def _service(
        self,
        svc: dict[str, Any],
        pods: list[dict[str, Any]],
        statuses: dict[tuple[str, str], dict[str, Any]],
        remote: Iterable[str] = (),
    ) -> None:
        """One Service's records; ``remote``: a headless global Service's Ready pods in
        other clusters of the mesh (globalsvc.headless_remote), answered like its own."""
        meta, spec = svc["metadata"], svc.get("spec", {})
        ns = meta.get("namespace", "default")
        fqdn = f"{meta['name']}.{ns}.svc.{self.domain}"
        if spec.get("type") == "ExternalName":
            self._add(fqdn, "CNAME", CNAME(spec["externalName"].rstrip(".") + "."))
            return
        ports = [p for p in spec.get("ports", []) if p.get("name")]
        if spec.get("clusterIP") and spec["clusterIP"] != "None":
            self._add(fqdn, "A", A(spec["clusterIP"]))
            for p in ports:
                srv = f"_{p['name']}._{p.get('protocol', 'TCP').lower()}.{fqdn}"
                self._add(srv, "SRV", SRV(0, 100, p["port"], fqdn + "."))
            return
        selector = spec.get("selector") or {}
        ips = []
        for pod in pods:
            pm = pod["metadata"]
            labels = pm.get("labels", {})
            if not selector or pm.get("namespace", "default") != ns:
                continue
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            ip = _ready_ip(statuses.get((ns, pm["name"])))
            if ip is not None:
                ips.append(ip)
        for ip in [*ips, *(r for r in remote if r not in ips)]:
            self._add(fqdn, "A", A(ip))
            host = f"{ip.replace('.', '-')}.{fqdn}"
            self._add(host, "A", A(ip))
            for p in ports:
                srv = f"_{p['name']}._{p.get('protocol', 'TCP').lower()}.{fqdn}"
                target = p.get("targetPort", p["port"])
                port = target if isinstance(target, int) else p["port"]
                self._add(srv, "SRV", SRV(0, 100, port, host + "."))

    @classmethod
    def service(
        cls,
        svc: dict[str, Any],
        pods: list[dict[str, Any]],
        statuses: dict[tuple[str, str], dict[str, Any]],
        remote: Iterable[str] = (),
        domain: str = DOMAIN,
    ) -> Zone:
        """One Service's records as a zone of their own (a part for ``merged``)."""
        zone = cls(domain)
        zone._service(svc, pods, statuses, remote)
        return zone

    @classmethod
    def pod(cls, namespace: str, ip: str | None, domain: str = DOMAIN) -> Zone:
        """A pod's ``<a-b-c-d>.<ns>.pod.<domain>`` record (none without an address)."""
        zone = cls(domain)
        if ip:
            zone._add(f"{ip.replace('.', '-')}.{namespace}.pod.{domain}", "A", A(ip))
        return zone

    @classmethod
    def merged(cls, parts: Iterable[Zone], domain: str = DOMAIN) -> Zone:
        """One zone answering for every part (the services controller keeps a part per
        Service and per pod, and rebuilds only the parts that changed). Parts are
        never modified."""
        zone = cls(domain)
        records = zone.records
        for part in parts:
            for name, rrs in part.records.items():
                have = records.get(name)
                records[name] = list(rrs) if have is None else have + rrs
        return zone

    def add_clusterset(
        self,
        namespace: str,
        name: str,
        ip: str | None,
        ports: list[tuple[str, str, int, list[tuple[str, int]]]],
    ) -> None:
        """A ServiceImport's records: ``ip`` (its ClusterSetIP; None = headless: the
        backends' addresses) and, per named port ``(name, protocol, port, backends
        as (ip, port))``, SRV records."""
        fqdn = f"{name}.{namespace}.svc.{CLUSTERSET}"
        if ip:
            self._add(fqdn, "A", A(ip))
        else:
            for addr in sorted({b for *_, eps in ports for b, _ in eps}):
                self._add(fqdn, "A", A(addr))
                self._add(f"{addr.replace('.', '-')}.{fqdn}", "A", A(addr))
        for pname, proto, port, eps in ports:
            if not pname:
                continue
            srv = f"_{pname}._{proto.lower()}.{fqdn}"
            if ip:
                self._add(srv, "SRV", SRV(0, 100, port, fqdn + "."))
                continue
            for addr, target in sorted(set(eps)):
                host = f"{addr.replace('.', '-')}.{fqdn}."
                self._add(srv, "SRV", SRV(0, 100, target, host))

    def _ours(self, qname: str) -> bool:
        return any(qname == d + "." or qname.endswith("." + d + ".")
                   for d in (self.domain, *self.also))  # fmt: skip

    def answer(self, query: DNSRecord) -> DNSRecord:
        """The reply to one query (authoritative for the zones)."""
        reply = query.reply()
        qname = str(query.q.qname).lower()
        if not self._ours(qname):
            reply.header.rcode = RCODE.REFUSED
            reply.header.aa = 0
            return reply
        rrs = self.records.get(qname)
        if rrs is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        qtype = query.q.qtype
        for rr in rrs:
            if rr.rtype == qtype or qtype == QTYPE.ANY or rr.rtype == QTYPE.CNAME:
                reply.add_answer(rr)
        if qtype == QTYPE.SRV:  # the targets' addresses, as CoreDNS adds them
            for rr in list(reply.rr):
                for extra in self.records.get(str(rr.rdata.target).lower(), []):
                    if extra.rtype == QTYPE.A:
                        reply.add_ar(extra)
        return reply


class _Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.dns.reply_bytes(data)  # type: ignore[attr-defined]
        if reply:
            sock.sendto(reply, self.client_address)


class _Tcp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn = self.request
        conn.settimeout(5)
        with contextlib.suppress(OSError, struct.error):
            while head := conn.recv(2):
                (size,) = struct.unpack("!H", head)
                data = b""
                while len(data) < size:
                    chunk = conn.recv(size - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = self.server.dns.reply_bytes(data)  # type: ignore[attr-defined]
                conn.sendall(struct.pack("!H", len(reply)) + reply)


class _UdpServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DnsServer:
    """UDP+TCP on ``address:port``; ``zone`` is replaced whole by ``update``."""

    def __init__(self, address: str, port: int = 53, netns: str | None = None) -> None:
        self.address, self.port, self.netns = address, port, netns
        self.zone = Zone()
        self._servers: list[socketserver.BaseServer] = []
        ready, errors = threading.Event(), []

        def start() -> None:  # sockets belong to this thread's namespace
            try:
                if netns:
                    setns(netns)
                for cls, handler in ((_UdpServer, _Udp), (_TcpServer, _Tcp)):
                    srv = cls((address, port), handler)
                    setattr(srv, "dns", self)  # noqa: B010 (handlers reach us through it)
                    self._servers.append(srv)
                    threading.Thread(target=srv.serve_forever, daemon=True).start()
            except Exception as exc:
                errors.append(exc)
            finally:
                ready.set()

        threading.Thread(target=start, daemon=True, name="dns-start").start()
        ready.wait(10)
        if errors:
            self.close()
            raise errors[0]

    def update(self, zone: Zone) -> None:
        self.zone = zone  # one reference swap: readers see the old or the new table

    def reply_bytes(self, data: bytes) -> bytes:
        try:
            query = DNSRecord.parse(data)
        except Exception:  # malformed packet: answer nothing, as servers do
            return b""
        try:
            return bytes(self.zone.answer(query).pack())
        except Exception:  # a bug must not kill the server thread: SERVFAIL
            log.exception("answering %s", query.q.qname)
            reply = query.reply()
            reply.header.rcode = RCODE.SERVFAIL
            return bytes(reply.pack())

    def close(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        self._servers.clear()


NSSWITCH = "hosts: files dns\n"  # a container image's, not the host's (mdns would eat .local)


def write_pod_files(directory: Path, namespace: str, nameserver: str) -> None:
    """A pod's resolv.conf and nsswitch.conf in a node-private directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resolv.conf").write_text(resolv_conf(namespace, nameserver))
    (directory / "nsswitch.conf").write_text(NSSWITCH)


_MOUNT_SCRIPT = (
    'mount --bind "$0/resolv.conf" /etc/resolv.conf && '
    'mount --bind "$0/nsswitch.conf" /etc/nsswitch.conf'
)


class ResolverMounts:
    """One mount namespace per pod namespace, with its resolver files over /etc.

    Every pod of a Kubernetes namespace gets the same resolv.conf (the
    namespace is in its search path), so the namespace's mount namespace is
    made once (``unshare --mount=FILE``, kept by a bind mount under
    ``<run_dir>/mntns``) and each pod's command enters it with ``nsenter
    --mount``: two programs per pod start instead of six (``unshare``, ``sh``,
    two ``mount``s). The host's /etc is never touched, nor another node's view.
    Its propagation is *slave*: the node's later mounts and unmounts (pod
    namespace handles) reach it, so it never pins a deleted pod's namespace.
    A handle is named by a digest of its files: when they change (another DNS
    address), new pods get a new one (the old stays bound in the node's /run).
    """

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "mntns"
        self.files = run_dir / "resolver"
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._fallback: set[str] = set()

    def prepare(self) -> None:
        """The handles' directory as a private mount of its own (a mount namespace can only
        be bound where its own mounts do not propagate back), once per boot."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not _is_mountpoint(self.dir):
            run(["mount", "--bind", str(self.dir), str(self.dir)])
            run(["mount", "--make-private", str(self.dir)])

    @staticmethod
    def _key(namespace: str, nameserver: str) -> str:
        """The handle's name: the namespace and a digest of its files."""
        text = resolv_conf(namespace, nameserver) + NSSWITCH
        return f"{namespace}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

    def handle(self, namespace: str, nameserver: str) -> Path:
        """The mount namespace for pods of ``namespace`` (made on first use)."""
        key = self._key(namespace, nameserver)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            path = self.dir / key
            if _is_mount_ns(path):
                return path
            files = self.files / key
            write_pod_files(files, namespace, nameserver)
            path.touch()
            run(["unshare", f"--mount={path}", "--propagation", "slave",
                 "sh", "-c", _MOUNT_SCRIPT, str(files)])  # fmt: skip
            return path

    def command(
        self, namespace: str, nameserver: str, argv: list[str]
    ) -> tuple[list[str], Path | None]:
        """``argv`` and the mount namespace to start it in, with the pod's resolver files.

        Where a namespace handle cannot be bound (the kernel refuses the bind with
        EINVAL in some node mount namespaces: seen on netns nodes with their own PID
        namespace, not understood yet), the pod's command gets a private mount
        namespace of its own instead (``wrap_command``): slower to start, same view.
        """
        key = self._key(namespace, nameserver)
        if key not in self._fallback:  # a refused bind is not tried again for each pod
            try:
                return argv, self.handle(namespace, nameserver)
            except ToolError as exc:
                (self.dir / key).unlink(missing_ok=True)  # the unbound placeholder
                self._fallback.add(key)
                log.warning("resolver mount namespace %s: %s; pods of %s get one each",
                            key, str(exc).strip(), namespace)  # fmt: skip
        return wrap_command(self.files / key, argv), None


def _is_mountpoint(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _is_mount_ns(path: Path) -> bool:
    """True if ``path`` is a bound mount namespace handle (not an empty leftover file)."""
    try:
        return path.stat().st_dev == Path("/proc/self/ns/mnt").stat().st_dev
    except OSError:
        return False


def wrap_command(directory: Path, argv: list[str]) -> list[str]:
    """``argv`` run with resolver files from ``directory`` bind-mounted over /etc, in a
    private mount namespace of its own (for one-off commands; pods use ResolverMounts)."""
    script = _MOUNT_SCRIPT + ' && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(directory), *argv]
