"""A local etcd for tests and benchmarks: free loopback ports, tmpfs, optionally TLS.

``LocalEtcd()`` listens on ``http://127.0.0.1:<free port>`` (never 2379, so a
user's etcd is never touched); ``LocalEtcd(tls=True)`` serves ``https`` with a
throwaway CA made here and requires client certificates, as a cluster mesh
reading a remote etcd would meet it. Data and certificates live under
/dev/shm (etcd's fsyncs on a busy shared disk made tests slow and SIGKILL hang)
and go with ``close()``; the process is stopped by pid.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from harness.exec import run
from harness.store import TLS, Store, StoreError

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port no one listens on, from below the kernel's ephemeral range.

    Binding port 0 would hand out a port of the ephemeral range, which any outgoing
    connection of the machine may take as its source port before our server binds
    it; a unit test's export etcd once never answered in CI (the cause could not be
    confirmed: its log went with the test's directory). Ports below the range are
    never given to outgoing connections.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    top = max(low - 1, 20001)
    for _ in range(500):
        port = random.randint(20000, top)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # nothing free below the range: let the kernel pick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalEtcd:
    """etcd on 127.0.0.1 with free ports, restartable on the same data."""

    def __init__(self, tls: bool = False, base: str = "/dev/shm") -> None:
        # base: a disk directory instead of tmpfs measures etcd's fsyncs (benches)
        self.dir = Path(tempfile.mkdtemp(prefix="podlab-t-agent-etcd-", dir=base))
        self.port, self.peer = free_port(), free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.certs = self.dir / "pki"
        if tls:
            self._make_pki()

    # -- certificates ---------------------------------------------------------------
    def _openssl(self, *argv: str) -> None:
        run(["openssl", *argv], timeout=60)

    def _make_pki(self) -> None:
        """A CA, etcd's server certificate for 127.0.0.1, and a ``root`` client cert."""
        self.certs.mkdir()
        ca_key, ca = self.certs / "ca.key", self.certs / "ca.crt"
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                      "/CN=podlab-test-ca", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
        # clientAuth too: etcd's gateway dials etcd's own gRPC port with this certificate
        self._sign(
            "server",
            "/O=podlab-test/OU=etcd",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth",
        )
        self.client_tls("root")

    def _sign(self, name: str, subject: str, ext: str) -> tuple[Path, Path]:
        key, csr, crt = (self.certs / f"{name}.{s}" for s in ("key", "csr", "crt"))
        extfile = self.certs / f"{name}.ext"
        extfile.write_text(ext + "\n")
        self._openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                      "-keyout", str(key), "-out", str(csr))  # fmt: skip
        self._openssl("x509", "-req", "-in", str(csr), "-CA", str(self.certs / "ca.crt"),
                      "-CAkey", str(self.certs / "ca.key"), "-CAcreateserial", "-days", "2",
                      "-extfile", str(extfile), "-out", str(crt))  # fmt: skip
        return crt, key

    def client_tls(self, name: str, ca: bool = True) -> TLS:
        """A client certificate (``OU=<name>``) signed by this etcd's CA.

        It has no common name on purpose: with auth enabled, etcd's gateway refuses
        (HTTP 400) any client certificate that carries one, since the name could
        not reach the auth layer through the gateway; users log in with a password.
        """
        crt, key = self.certs / f"client-{name}.crt", self.certs / f"client-{name}.key"
        if not crt.exists():
            subject = f"/O=podlab-test/OU={name}"
            crt, key = self._sign(f"client-{name}", subject, "extendedKeyUsage=clientAuth")
        return TLS(str(self.certs / "ca.crt") if ca else None, str(crt), str(key))

    @property
    def ca_file(self) -> str:
        return str(self.certs / "ca.crt")

    # -- process --------------------------------------------------------------------
    def store(self, timeout: float = 5.0, **kw: object) -> Store:
        """A client; over TLS it presents the ``root`` client certificate."""
        tls = self.client_tls("root") if self.tls else None
        return Store([self.url], timeout=timeout, tls=tls, **kw)  # type: ignore[arg-type]

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer}"
        argv = ["etcd", "--name", "t", "--data-dir", str(self.dir / "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"t={peer}"]  # fmt: skip
        if self.tls:
            argv += ["--cert-file", str(self.certs / "server.crt"),
                     "--key-file", str(self.certs / "server.key"),
                     "--trusted-ca-file", self.ca_file, "--client-cert-auth"]  # fmt: skip
        log = open(self.dir / "etcd.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        store, proc = self.store(timeout=1), self.proc
        deadline = time.monotonic() + 60
        while True:
            try:
                store.get_prefix("/")
                return
            except StoreError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"etcd did not start ({exc}): {self.log()[-2000:]}"
                    ) from exc
                time.sleep(0.1)

    def log(self) -> str:
        path = self.dir / "etcd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)  # SIGKILL waits for pending disk I/O to finish
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
