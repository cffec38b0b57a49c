"""Resolving --lab/--cluster/--etcd from what `podlab up` leaves on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.api.target import cluster_endpoints, resolve_target
from harness.errors import UserError


def inventory(clusters: dict[str, str]) -> dict:
    """An inventory shaped like the one `podlab up` writes (groups per cluster)."""
    children: dict = {}
    for i, (name, url) in enumerate(clusters.items()):
        children[name] = {
            "vars": {"podlab_cluster": name, "podlab_etcd_client_endpoint": url},
            "hosts": {f"{name}-cp": {"ansible_host": f"172.20.0.{i + 2}"}, f"{name}-w1": {}},
        }
    children["workers"] = {"hosts": {f"{c}-w1": {} for c in clusters}}
    return {"all": {"vars": {"ansible_user": "root"}, "children": children}}


def make_lab(home: Path, lab: str, clusters: dict[str, str], up: bool = True) -> None:
    (home / ".podlab" / lab).mkdir(parents=True)
    if up:
        (home / ".podlab" / lab / "state.json").write_text("{}")
    (home / "inventories").mkdir(exist_ok=True)
    (home / "inventories" / f"{lab}.yml").write_text(yaml.safe_dump(inventory(clusters)))


def test_single_lab_single_cluster_needs_no_flags(tmp_path: Path) -> None:
    make_lab(tmp_path, "single", {"c1": "http://172.20.0.2:2379"})
    t = resolve_target(None, None, None, tmp_path)
    assert (t.lab, t.cluster, t.etcd_url) == ("single", "c1", "http://172.20.0.2:2379")
    assert t.lab_dir == tmp_path / ".podlab" / "single"


def test_two_clusters_need_cluster(tmp_path: Path) -> None:
    make_lab(tmp_path, "two", {"c1": "http://a:2379", "c2": "http://b:2379"})
    with pytest.raises(UserError, match="has clusters c1, c2; fix: choose one with --cluster"):
        resolve_target(None, None, None, tmp_path)
    assert resolve_target(None, "c2", None, tmp_path).etcd_url == "http://b:2379"
    with pytest.raises(UserError, match="has no cluster 'c3'"):
        resolve_target(None, "c3", None, tmp_path)


def test_labs_down_or_ambiguous(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no lab is up"):
        resolve_target(None, None, None, tmp_path)
    make_lab(tmp_path, "a", {"c1": "http://a:2379"})
    make_lab(tmp_path, "b", {"c1": "http://b:2379"})
    make_lab(tmp_path, "down", {"c1": "http://d:2379"}, up=False)
    with pytest.raises(UserError, match=r"several labs are up \(a, b\)"):
        resolve_target(None, None, None, tmp_path)
    assert resolve_target("b", None, None, tmp_path).etcd_url == "http://b:2379"
    with pytest.raises(UserError, match="lab 'down' is not up"):
        resolve_target("down", None, None, tmp_path)


def test_etcd_flag_bypasses_discovery(tmp_path: Path) -> None:
    t = resolve_target(None, "c9", "http://127.0.0.1:1", tmp_path)
    assert (t.lab, t.cluster, t.etcd_url, t.lab_dir) == (None, "c9", "http://127.0.0.1:1", None)
    with pytest.raises(UserError, match="--etcd needs --cluster"):
        resolve_target(None, None, "http://127.0.0.1:1", tmp_path)


def test_host_vars_override_group_vars(tmp_path: Path) -> None:
    inv = {
        "all": {
            "vars": {"podlab_etcd_client_endpoint": "http://global:2379"},
            "children": {
                "c1": {"hosts": {"n1": {"podlab_cluster": "c1"}}},
                "c2": {
                    "vars": {"podlab_cluster": "c2"},
                    "hosts": {"n2": {"podlab_etcd_client_endpoint": "http://n2:2379"}},
                },
                "templated": {
                    "hosts": {
                        "n3": {"podlab_cluster": "c3", "podlab_etcd_client_endpoint": "{{ x }}"}
                    },
                },
            },
        }
    }
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(inv))
    assert cluster_endpoints(path) == {
        "c1": "http://global:2379",
        "c2": "http://n2:2379",
        "c3": "",
    }
