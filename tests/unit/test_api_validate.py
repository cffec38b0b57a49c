"""Manifest validation: bad manifests → exact error text (golden), good ones → objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.api.objects import Pod
from harness.api.validate import format_path, load_documents, validate_documents
from harness.errors import UserError

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "api"
CASES = sorted(GOLDEN.glob("*.yaml"))


def problems_text(path: Path) -> str:
    try:
        _, problems = validate_documents(load_documents(path.read_text(), path.name))
    except UserError as exc:
        problems = exc.problems
    return "\n".join(str(p) for p in problems)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_manifest_error_text(case: Path) -> None:
    expected = case.with_suffix(".err").read_text().rstrip("\n")
    assert expected, f"{case.name}: a golden case must expect at least one problem"
    assert problems_text(case) == expected


def test_golden_cases_exist() -> None:
    assert len(CASES) >= 20
    assert all(c.with_suffix(".err").is_file() for c in CASES)


GOOD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web, example.com/tier: front}
spec:
  nodeName: c1-w1
  containers:
  - name: web
    image: ignored:latest
    command: [python3, -m, http.server]
    args: ["8080"]
    ports:
    - {name: http, containerPort: 8080}
    - {containerPort: 53, protocol: UDP}
    readinessProbe:
      httpGet: {path: /healthz, port: http}
---
# an empty document is skipped, as kubectl does

---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: test}
spec:
  containers: [{name: c}]
"""


def test_good_manifest_gives_objects_with_defaults() -> None:
    objs, problems = validate_documents(load_documents(GOOD, "good.yaml"))
    assert problems == []
    assert [o.doc.index for o in objs] == [1, 3]
    web, client = (o.obj for o in objs)
    assert isinstance(web, Pod) and isinstance(client, Pod)
    assert web.metadata.namespace == "default"
    assert web.spec.nodeName == "c1-w1"
    assert web.spec.restartPolicy == "Always"
    assert web.spec.containers[0].ports[0].protocol == "TCP"
    assert web.spec.containers[0].readinessProbe is not None
    assert web.spec.containers[0].readinessProbe.periodSeconds == 10
    assert client.metadata.namespace == "test"
    assert client.spec.nodeName is None


def test_all_problems_of_all_documents_reported_together() -> None:
    text = GOOD.replace("containerPort: 8080", "containerPort: 0").replace(
        "namespace: test", "namespace: Test"
    )
    objs, problems = validate_documents(load_documents(text, "m.yaml"))
    assert [o.obj.metadata.name for o in objs] == []
    assert [(p.line, p.where) for p in problems] == [
        (14, "document 1 (pod/web): spec.containers[0].ports[0].containerPort"),
        (24, "document 3 (pod/client): metadata.namespace"),
    ]


def test_applied_status_is_accepted_and_dropped() -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}]}\n"
    objs, problems = validate_documents(load_documents(text + "status: {phase: Running}\n", "x"))
    assert problems == []
    assert "status" not in objs[0].obj.model_dump(exclude_none=True)


def test_format_path() -> None:
    assert format_path(("spec", "containers", 0, "ports", 1, "name")) == (
        "spec.containers[0].ports[1].name"
    )
    assert format_path(()) == ""


def test_problems_of_several_files_come_together(tmp_path: Path) -> None:
    from harness.api.cli import read_manifests

    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}]}\n"
    (tmp_path / "one.yaml").write_text(pod)
    (tmp_path / "two.yaml").write_text(pod.replace("name: c}", "name: C}"))
    (tmp_path / "three.yaml").write_text(pod + "---\n" + pod)
    (tmp_path / "broken.yaml").write_text("kind: [Pod\n")
    files = [str(tmp_path / f) for f in ("one.yaml", "two.yaml", "three.yaml", "broken.yaml")]
    with pytest.raises(UserError) as caught:
        read_manifests(files)
    lines = [str(p).replace(str(tmp_path) + "/", "") for p in caught.value.problems]
    assert lines == [
        "broken.yaml:2: YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow "
        "sequence that starts on line 1) (fix: check indentation, brackets and quotes around "
        "this line)",
        "two.yaml:4: document 1 (pod/a): spec.containers[0].name: 'C' is not a valid DNS-1123 "
        "label (fix: use at most 63 lower-case letters, digits and '-', starting and ending "
        "with a letter or digit)",
        "three.yaml:3: document 1 (pod/a): metadata.name: duplicates document 1 of "
        "one.yaml (fix: give each object its own name)",
        "three.yaml:8: document 2 (pod/a): metadata.name: duplicates document 1 of "
        "one.yaml (fix: give each object its own name)",
    ]
    assert len(read_manifests(files[:1])) == 1
