"""A controller manager for a throwaway AgentLab (tests and benchmarks).

``Controllers(lab, **cfg)`` writes a ``controllers.yaml`` for the lab's cluster
and runs ``python -m harness.controllers.main`` inside the lab's fabric
namespace (where its etcd listens), as the deploy runs it on a control-plane
node; ``stop()`` ends it by pid (SIGTERM, SIGKILL with ``hard=True``) and
``start()`` runs it again on the same configuration (restart tests).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import yaml

from harness.testlab.agentlab import ETCD_IP, PROJECT, PYTHON, AgentLab


class Controllers:
    def __init__(self, lab: AgentLab, **cfg: Any) -> None:
        self.lab = lab
        self.dir: Path = lab.tmp / "controllers"
        self.dir.mkdir(exist_ok=True)
        self.config = self.dir / "controllers.yaml"
        self.log = self.dir / "controllers.log"
        settings = {"cluster": "t1", "etcd_endpoints": [f"http://{ETCD_IP}:2379"],
                    "node": "fabric", "leader_ttl_s": 3, "resync_s": 2.0, **cfg}  # fmt: skip
        self.config.write_text(yaml.safe_dump(settings))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 (kept open for the child)
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.lab.fab}", PYTHON, "-m",
             "harness.controllers.main", "--config", str(self.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(PROJECT),
        )  # fmt: skip

    def stop(self, hard: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.proc = None

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text()[-n:] if self.log.exists() else ""
