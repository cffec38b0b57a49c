"""Install ``podlab-cni`` where runtimes look for plugins: a native front, a Python fallback.

Executing the plugin is paid once per pod, so its start-up matters
(docs/adr/0012). Two executables go into the plugin directory:

- ``podlab-cni-py``: a launcher running this environment's interpreter with
  ``-IS`` (no ``site`` processing: every ``.pth`` file and editable-install
  finder would cost several times the plugin's own work) and exactly the
  directories it needs on ``sys.path`` (where ``harness`` lives; site-packages
  for pyroute2, used only when the plugin works in-process);
- ``podlab-cni``: ``shim.c`` compiled with the machine's C compiler, which
  forwards a call to the agent's CNI server in about 1 ms of CPU instead of the
  interpreter's 10, and hands everything else (VERSION, no server) to
  ``podlab-cni-py``. Without a compiler, ``podlab-cni`` is the Python launcher.

Written atomically, rewritten only when they change (the shim: when its source
or the launcher's path does); ``bench/bench_cni.py`` prints both start-ups.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

LAUNCHER = """#!{python} -IS
# podlab-cni: podlab's CNI plugin, installed by podlab-agent (harness/cni/install.py).
# -IS: no site processing, so a runtime pays only for what the plugin imports.
import sys
sys.path[:0] = {paths!r}
from harness.cni.plugin import main
sys.exit(main())
"""
SHIM = Path(__file__).with_name("shim.c")


def launcher_text() -> str:
    root = str(Path(harness.__file__).resolve().parents[1])
    paths = [root, *(p for p in site.getsitepackages() if p != root)]
    return LAUNCHER.format(python=sys.executable, paths=paths)


def _write(path: Path, text: str) -> bool:
    try:
        if not path.is_symlink() and path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return True


def _compile(target: Path, py_plugin: Path) -> bool | None:
    """Build the shim into ``target``; None without a compiler, else whether it changed."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not SHIM.is_file():
        return None
    digest = hashlib.sha256(SHIM.read_bytes() + str(py_plugin).encode()).hexdigest()[:16]
    stamp = target.with_name(f".{target.name}.src")
    try:
        if stamp.read_text() == digest and target.is_file() and not target.is_symlink():
            return False
    except OSError:
        pass
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        res = subprocess.run(
            [cc, "-O2", "-Wall", "-o", str(out), str(SHIM), f'-DPY_PLUGIN="{py_plugin}"'],
            capture_output=True,
            timeout=120,
        )
        if res.returncode != 0:
            return None
        out.chmod(0o755)
        os.replace(out, target)
    stamp.write_text(digest)
    return True


def install(bin_dir: Path, name: str = "podlab-cni") -> tuple[Path, bool]:
    """Install into ``bin_dir``; returns (``bin_dir/name``, whether anything changed)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target, py = bin_dir / name, bin_dir / f"{name}-py"
    changed = _write(py, launcher_text())
    built = _compile(target, py)
    if built is None:  # no compiler here: the Python launcher is the plugin
        changed |= _write(target, launcher_text())
    return target, changed or bool(built)
