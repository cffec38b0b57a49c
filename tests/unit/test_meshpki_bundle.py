"""The archive a deploy copies to a meshed cluster's control plane (meshpki.bundle)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from harness.deploy import meshpki


def _prepared(tmp_path: Path) -> Path:
    inventory = {"all": {"children": {"c1": {
        "vars": {"podlab_mesh": "m", "podlab_cluster": "c1"},
        "hosts": {"c1-cp": {"podlab_role": "control-plane", "podlab_underlay_address": "10.0.0.1"}},
    }}}}  # fmt: skip
    root = meshpki.prepare(inventory, tmp_path)
    assert root is not None
    return root / "m"


def test_the_bundle_holds_the_clusters_files_and_the_ca_certificate_never_its_key(
    tmp_path: Path,
) -> None:
    mesh = _prepared(tmp_path)
    archive = mesh / "c1.tar"
    assert archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == sorted(
            ["admin.crt", "admin.key", "ca.crt", "client.crt", "client.key", "root.password",
             "server.crt", "server.key"]
        )  # fmt: skip
        assert {m.mode for m in members.values()} == {0o600}
        assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 0)}
        reader = tar.extractfile("server.key")
        assert reader is not None and reader.read() == (mesh / "c1" / "server.key").read_bytes()


def test_the_same_files_give_the_same_bytes_and_a_changed_one_a_new_archive(
    tmp_path: Path,
) -> None:
    mesh = _prepared(tmp_path)
    archive = mesh / "c1.tar"
    first, inode = archive.read_bytes(), archive.stat().st_ino
    _prepared(tmp_path)  # a second deploy: nothing changed, nothing rewritten
    assert archive.read_bytes() == first and archive.stat().st_ino == inode
    (mesh / "c1" / "root.password").write_bytes(b"rotated")
    meshpki.bundle(meshpki.ClusterCerts(mesh / "c1", mesh / "ca.crt"))
    assert archive.read_bytes() != first
