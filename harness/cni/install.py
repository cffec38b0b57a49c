"""Install ``podlab-cni`` where runtimes look for plugins: a launcher without site processing.

A console script starts Python with ``site`` (every ``.pth`` file of the
environment, editable-install finders): several times the cost of the plugin's
own work on a busy node, paid per pod. The launcher runs the same interpreter
with ``-IS`` (isolated, no ``site``) and puts exactly the directories it needs
on ``sys.path``: where ``harness`` lives, and the environment's site-packages
(for pyroute2, used only when the plugin works in-process). Written atomically,
rewritten only when it changes; ``bench/bench_cni.py`` prints its start-up.
"""

from __future__ import annotations

import os
import site
import sys
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


def launcher_text() -> str:
    root = str(Path(harness.__file__).resolve().parents[1])
    paths = [root, *(p for p in site.getsitepackages() if p != root)]
    return LAUNCHER.format(python=sys.executable, paths=paths)


def install(bin_dir: Path, name: str = "podlab-cni") -> tuple[Path, bool]:
    """Write the launcher to ``bin_dir/name``; returns (path, whether it changed)."""
    target = bin_dir / name
    text = launcher_text()
    try:
        if not target.is_symlink() and target.read_text() == text:
            return target, False
    except OSError:
        pass
    bin_dir.mkdir(parents=True, exist_ok=True)
    tmp = bin_dir / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, target)
    return target, True
