"""The containerlab backend: hand the same topology file to ``containerlab deploy``.

Thin on purpose: podlab topology files are valid containerlab files (podlab's
settings are ``podlab.*`` labels), so containerlab builds the lab with real
containers where the binary and a container engine exist. On a machine without
them (like the netns default's target) ``up`` fails with one clear line.
"""

from __future__ import annotations

import shutil

import yaml

from harness.errors import LabError
from harness.exec import run
from harness.lab.backend import UpRequest, UpResult


class ContainerlabBackend:
    """Containers via containerlab, when available."""

    name = "containerlab"

    def up(self, request: UpRequest) -> UpResult:
        binary = shutil.which("containerlab")
        if binary is None:
            raise LabError(
                "containerlab backend: the `containerlab` binary is not installed here; "
                "use the default netns backend, or install containerlab and a container engine"
            )
        if request.file is None:
            raise LabError("containerlab backend: needs a topology file")
        res = run([binary, "deploy", "-t", str(request.file)], timeout=900)
        data = yaml.safe_load(request.file.read_text()) or {}
        lab = str(data.get("name") or request.file.stem.removesuffix(".clab"))
        result = UpResult(lab=lab, backend="containerlab")
        result.notes.append(res.stdout.strip()[-2000:])
        generated = request.file.parent / f"clab-{lab}" / "ansible-inventory.yml"
        if generated.exists():  # containerlab's own inventory, next to the topology file
            result.inventory = generated
        return result

    def down(self, lab: str) -> None:
        raise LabError("containerlab backend: run `containerlab destroy -t FILE`")
