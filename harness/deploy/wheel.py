"""The wheelhouse a deploy ships to every node: podlab's wheel plus the agent's dependencies.

Nodes must never reach a package index (VMs may have none; netns nodes must not
hammer one in parallel), so the host builds everything once into
``/var/cache/podlab/wheelhouses/<digest>/`` (outside the clone, shared by
clones; ``$PODLAB_WHEELHOUSE_CACHE`` moves it) and Ansible installs from it with
``pip install --no-index --find-links``. The digest covers podlab's sources and
the pinned requirements, so an unchanged tree reuses the wheelhouse and the
node-side install (keyed on the same digest) is skipped: that is what makes a
re-deploy report changed=0.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.errors import LabError
from harness.exec import run

# What the node agent imports at run time (harness/agent imports nothing else
# outside the standard library). The project wheel itself goes in with --no-deps:
# host-only dependencies (ansible, plotly, pytest …) have no business on a node.
NODE_REQUIREMENTS = ("pyyaml", "pydantic", "pyroute2", "etcd3gw", "dnslib")
# pip itself rides along as a wheel and runs from it (``python pip.whl/pip install``),
# so node venvs are created --without-pip: no ensurepip, no pip in the venv.
BOOTSTRAP = ("pip",)

# Sources that go into the project wheel, relative to the project root.
SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE")
SOURCE_DIRS = ("harness",)
MANIFEST = "wheelhouse.json"
# A venv that already holds the node requirements says which, in this file, in the
# same words the deploy passes (``podlab_node_requirements`` joined by spaces): the
# guest image bakes one (harness/lab/image), and the agent role then installs only
# podlab's own wheel into it.
REQUIREMENTS_MARKER = ".podlab-requirements"
KEEP = 3  # the newest wheelhouses are always kept …
KEEP_S = 86400.0  # … and so is any other used in the last day (a deploy may be using it)


@dataclass(frozen=True)
class Wheelhouse:
    """A built wheelhouse: where it is, what it holds, and the digest that names it."""

    digest: str
    path: Path  # directory of wheels
    archive: Path  # the same wheels as one tar: what Ansible copies to a node
    wheel: str  # file name of podlab's own wheel inside it
    requirements: tuple[str, ...]  # pinned node requirements, e.g. "pyyaml==6.0.3"
    pip_wheel: str  # file name of the pip wheel that installs the rest


def pinned_requirements(names: tuple[str, ...] = NODE_REQUIREMENTS) -> tuple[str, ...]:
    """Pin each requirement to the version installed on the host, so nodes run what we tested."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return tuple(pins)


def requirements_line(pins: tuple[str, ...]) -> str:
    """The marker's text for ``pins``: what the agent role compares with its own."""
    return " ".join(pins)


def dependency_closure(names: tuple[str, ...] = NODE_REQUIREMENTS) -> tuple[str, ...]:
    """Every distribution ``names`` pull in (their requirements' requirements too),
    each pinned to the version installed here, sorted.

    Top-level pins alone would let the guest image resolve the rest to whatever
    the index serves on the day it is built; the whole closure pinned makes the
    image hold exactly the host's tested set, and makes that set part of its key.
    Requirements behind an extra or a marker that does not hold here are left out.
    """
    pins: dict[str, str] = {}
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in pins:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pins[name] = name
            continue
        pins[name] = f"{name}=={dist.version}"
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return tuple(pins[n] for n in sorted(pins))


def _source_files(root: Path) -> Iterator[Path]:
    for name in SOURCE_FILES:
        if (root / name).is_file():
            yield root / name
    for top in SOURCE_DIRS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def source_digest(root: Path, requirements: tuple[str, ...]) -> str:
    """Content hash of podlab's sources, the pins and the Python tag: the wheelhouse's key."""
    h = hashlib.sha256()
    h.update(f"py{sys.version_info.major}{sys.version_info.minor}\n".encode())
    for req in requirements:
        h.update(f"req {req}\n".encode())
    for path in _source_files(root):
        rel = path.relative_to(root).as_posix()
        h.update(f"file {rel}\n".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def ensure_wheelhouse(root: Path, cache: Path, python: str = sys.executable) -> Wheelhouse:
    """Return the wheelhouse for the current sources, building it only if it is missing.

    A file lock serialises concurrent deploys (tests run several); the build goes
    to a temporary directory renamed into place, so a crash never leaves a
    half-filled wheelhouse that later runs would trust.
    """
    cache = cache.resolve()  # Ansible resolves relative paths against the playbook
    requirements = pinned_requirements()
    digest = source_digest(root, requirements + pinned_requirements(BOOTSTRAP))
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / digest
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / MANIFEST).is_file():
            _build(root, cache, final, digest, requirements, python)
            _prune(cache, keep=KEEP, keep_s=KEEP_S)
        data = json.loads((final / MANIFEST).read_text())
        os.utime(final)  # "last used", for pruning
    return Wheelhouse(
        digest=digest,
        path=final,
        archive=cache / f"{digest}.tar",
        wheel=data["wheel"],
        requirements=tuple(data["requirements"]),
        pip_wheel=data["pip_wheel"],
    )


def _build(
    root: Path, cache: Path, final: Path, digest: str, reqs: tuple[str, ...], python: str
) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".build-{digest}-", dir=cache))
    try:
        src, out = work / "src", work / "wheels"
        for path in _source_files(root):
            dest = src / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        # Build from a copy: setuptools writes build/ and *.egg-info next to the
        # sources, and the working tree is shared with other people's runs.
        pip = [python, "-m", "pip", "--disable-pip-version-check", "wheel", "-q", "-w", str(out)]
        run([*pip, "--no-deps", str(src)], timeout=300)
        run([*pip, *reqs, *pinned_requirements(BOOTSTRAP)], timeout=600)
        wheels = sorted(p.name for p in out.glob("podlab-*.whl"))
        pips = sorted(p.name for p in out.glob("pip-*.whl"))
        if len(wheels) != 1 or len(pips) != 1:
            raise LabError(f"expected one podlab and one pip wheel in {out}: {wheels} {pips}")
        manifest = {
            "digest": digest,
            "wheel": wheels[0],
            "pip_wheel": pips[0],
            "requirements": list(reqs),
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _tar(out, work / "wheelhouse.tar")
        if final.exists():
            shutil.rmtree(final)
        os.replace(work / "wheelhouse.tar", cache / f"{digest}.tar")
        os.replace(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tar(directory: Path, dest: Path) -> None:
    """A reproducible tar of the wheels (sorted, zero mtimes, root owner)."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(dest, "w") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name, filter=clean)


def _prune(cache: Path, keep: int, keep_s: float) -> None:
    """Drop wheelhouses neither among the ``keep`` newest nor used within ``keep_s`` seconds.

    Every source change makes a new one; a concurrent deploy (or a test that
    pinned one) may still be copying an older one, hence the age limit.
    """
    built = sorted(
        (p for p in cache.iterdir() if p.is_dir() and (p / MANIFEST).is_file()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    now = time.time()
    for old in built[keep:]:
        if now - old.stat().st_mtime < keep_s:
            continue
        shutil.rmtree(old, ignore_errors=True)
        (cache / f"{old.name}.tar").unlink(missing_ok=True)
