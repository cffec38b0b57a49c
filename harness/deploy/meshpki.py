"""The per-mesh CA and each cluster's certificates, made on the host at deploy.

Layout under ``<lab dir>/mesh/<mesh>/`` (private keys and passwords 0600, never
in etcd, never in the inventory — the inventory only names this directory):

- ``ca.crt``, ``ca.key``: the mesh CA (EC P-256, 10 years). A CA given with
  ``podlab deploy --mesh-ca DIR`` is copied in instead, so clusters of several
  labs can join one mesh.
- ``<cluster>/server.crt|key``: the cluster's export etcd (SAN = its
  control-plane underlay and management addresses, 127.0.0.1; no CN: its
  gateway presents it to etcd itself).
- ``<cluster>/client.crt|key``: CN ``remote-<cluster>``, the identity the
  cluster's syncer presents to every peer's export etcd (etcd RBAC user).
- ``<cluster>/admin.crt|key``: no CN; what the cluster's own syncer presents
  to its export etcd's JSON gateway (etcd 3.4 answers every gateway call made
  with a CN-bearing client certificate with "CommonName … will be ignored";
  the syncer is ``root`` there by password).
- ``<cluster>/root.password``: the export etcd's ``root`` password (only the
  cluster's own syncer uses it).
- ``<cluster>.tar``: what the deploy copies to the cluster's control plane —
  the cluster's files above and ``ca.crt``, never ``ca.key`` — as one archive
  (``bundle``): one transfer instead of eight (``ansible.builtin.copy`` of a
  directory sends, stats and chmods file by file: 12 s of a two-cluster lab's
  first deploy under load, docs/conformance.md).

Re-running keeps everything that is still right (a deploy is idempotent); a
server certificate whose addresses changed is re-issued.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import ipaddress
import os
import secrets
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.errors import UserError

CA_YEARS = 10
CERT_YEARS = 1


@dataclass(frozen=True)
class ClusterCerts:
    """Where one cluster's mesh files are on the host."""

    dir: Path
    ca: Path

    @property
    def server(self) -> tuple[Path, Path]:
        return self.dir / "server.crt", self.dir / "server.key"

    @property
    def client(self) -> tuple[Path, Path]:
        return self.dir / "client.crt", self.dir / "client.key"

    @property
    def admin(self) -> tuple[Path, Path]:
        return self.dir / "admin.crt", self.dir / "admin.key"

    @property
    def password(self) -> Path:
        return self.dir / "root.password"


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret 0600 from the first byte (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str) -> x509.Name:
    """``O=podlab, CN=cn``; no CN when ``cn`` is empty (certificates used against
    etcd's JSON gateway must have none: see ``ClusterCerts.admin``)."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "podlab")]
    if cn:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def fingerprint(cert_pem: bytes) -> str:
    """``sha256:<hex>`` of a certificate's DER: how clusters name their CA."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def ensure_ca(mesh_dir: Path, mesh: str, source: Path | None = None) -> Path:
    """The mesh CA certificate (made, or copied from ``source`` = a mesh directory)."""
    crt, key = mesh_dir / "ca.crt", mesh_dir / "ca.key"
    if source is not None:
        s_crt, s_key = source / "ca.crt", source / "ca.key"
        if not (s_crt.is_file() and s_key.is_file()):
            raise UserError(
                f"--mesh-ca {source}: no ca.crt and ca.key there "
                "(fix: pass the mesh directory of the first lab, e.g. .podlab/LAB/mesh/MESH)"
            )
        if not crt.is_file() or crt.read_bytes() != s_crt.read_bytes():
            for f in mesh_dir.glob("*/*.crt"):  # certificates of the old CA are void
                f.unlink()
            shutil.copyfile(s_crt, crt)
            _write_private(key, s_key.read_bytes())
        return crt
    if crt.is_file() and key.is_file():
        return crt
    now = datetime.datetime.now(datetime.UTC)
    pk = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"podlab mesh {mesh} CA"))
        .issuer_name(_name(f"podlab mesh {mesh} CA"))
        .public_key(pk.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(pk, hashes.SHA256())
    )
    _write_private(key, _key_pem(pk))
    mesh_dir.mkdir(parents=True, exist_ok=True)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt


def _issue(mesh_dir: Path, out: tuple[Path, Path], cn: str, ips: list[str], server: bool) -> None:
    ca_cert = x509.load_pem_x509_certificate((mesh_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((mesh_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    pk = ec.generate_private_key(ec.SECP256R1())
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] * server)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(pk.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * CERT_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    )
    if ips:
        sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private(out[1], _key_pem(pk))
    out[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _current(crt: Path, key: Path, ca: Path, ips: list[str]) -> bool:
    """True if ``crt`` exists, was signed by ``ca`` and names exactly ``ips``."""
    if not (crt.is_file() and key.is_file()):
        return False
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception):  # signature or algorithm mismatch
        return False
    if not ips:
        return True
    if cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        return False  # a server certificate must carry no CN (see _name)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return sorted(str(a) for a in san.get_values_for_type(x509.IPAddress)) == sorted(ips)


def ensure_cluster(mesh_dir: Path, cluster: str, server_ips: list[str]) -> ClusterCerts:
    """A cluster's export-etcd certificate, its peer identity and its root password."""
    cc = ClusterCerts(mesh_dir / cluster, mesh_dir / "ca.crt")
    cc.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ips = sorted(set(server_ips) | {"127.0.0.1"})
    if not _current(*cc.server, cc.ca, ips):
        _issue(mesh_dir, cc.server, "", ips, server=True)
    if not _current(*cc.client, cc.ca, []):
        _issue(mesh_dir, cc.client, f"remote-{cluster}", [], server=False)
    if not _current(*cc.admin, cc.ca, []):
        _issue(mesh_dir, cc.admin, "", [], server=False)
    if not cc.password.is_file():
        _write_private(cc.password, secrets.token_urlsafe(24).encode())
    return cc


def prepare(inventory: dict, lab_dir: Path, mesh_ca: Path | None = None) -> Path | None:
    """Certificates for every meshed cluster of an inventory; the PKI root to pass to
    Ansible as ``podlab_mesh_pki_dir`` (None when no cluster is in a mesh)."""
    root = lab_dir / "mesh"
    found = False
    for group in (inventory.get("all", {}).get("children") or {}).values():
        gvars = (group or {}).get("vars") or {}
        mesh, cluster = gvars.get("podlab_mesh"), gvars.get("podlab_cluster")
        if not mesh or not cluster:
            continue
        found = True
        mesh_dir = root / str(mesh)
        ensure_ca(mesh_dir, str(mesh), mesh_ca)
        ips: list[str] = []
        for hv in ((group or {}).get("hosts") or {}).values():
            if (hv or {}).get("podlab_role") == "control-plane":
                ips += [str(hv[k]) for k in ("podlab_underlay_address", "ansible_host") if k in hv]
        bundle(ensure_cluster(mesh_dir, str(cluster), ips))
    return root if found else None


def bundle(cc: ClusterCerts) -> Path:
    """``<cluster>.tar`` beside the cluster's directory: its files and the CA certificate,
    every member 0600, root-owned, mtime 0, in name order — the same bytes for the same
    files, so Ansible's copy changes (and restarts the mesh's services) only when a
    certificate, key or password did. Rewritten only then (0600 from the first byte)."""
    buf = io.BytesIO()
    members = [*sorted(p for p in cc.dir.iterdir() if p.is_file()), cc.ca]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in members:
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    out = cc.dir.with_name(f"{cc.dir.name}.tar")
    if not out.is_file() or out.read_bytes() != buf.getvalue():
        _write_private(out, buf.getvalue())
    return out
