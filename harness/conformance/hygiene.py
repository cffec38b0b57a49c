"""What a lab may leave behind after ``down``: nothing. Scenario 30's after-run check.

Looks for the lab's named network namespaces, its root-namespace links (the
management bridge and veths carry the lab's tag), processes still running from
its directory (sshd, agents, etcd, pod commands, ssh masters), the directory
itself and its ssh control directories under the tmp fallback.
Read-only: it reports, it never removes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pyroute2 import IPRoute

from harness.plan import naming

NETNS_DIR = Path("/run/netns")


def leftovers(name: str, lab_dir: Path) -> list[str]:
    """Everything of lab ``name`` still present, one phrase each (empty: clean)."""
    found = [f"netns {n}" for n in _netns(name)]
    found += [f"link {n}" for n in _links(name)]
    found += [f"process {pid} ({cmd})" for pid, cmd in _processes(str(lab_dir))]
    found += [f"ssh control directory {d}" for d in _control_dirs(lab_dir)]
    if lab_dir.exists():
        found.append(f"lab directory {lab_dir}")
    return found


def record_after_down(
    name: str, lab_dir: Path, results_dir: Path, mode: str,
    timings: Sequence[tuple[str, float]] = (),
) -> list[str]:  # fmt: skip
    """Check a lab that was just taken down and write the outcome as its own results file.

    For runs where ``down`` happens outside pytest (``make conformance``): the
    report merges this file with the suites' results. ``timings`` are the
    steps around the suites that the script timed (lab up, first deploy, down).
    """
    from datetime import UTC, datetime

    from harness.results import env
    from harness.results.store import ResultsWriter, RunMeta

    left = leftovers(name, lab_dir)
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{name}-after-down"
    meta = RunMeta(run_id=run_id, topology=name, modes=(mode,), environment=env.capture())
    writer = ResultsWriter(results_dir / f"{run_id}.json", meta)
    message = "; ".join(left) if left else "no namespace, link, process or lab directory left"
    writer.check(30, "nothing_left_after_down", mode=mode,
                 outcome="failed" if left else "passed", message=message)  # fmt: skip
    for what, seconds in timings:
        writer.timing(what, seconds)
    writer.finish()
    return left


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.conformance.hygiene LAB LAB_DIR RESULTS_DIR MODE [WHAT=SECONDS …]``.

    Exit 1 if the lab left something behind. ``WHAT=SECONDS``: timings to record
    with it ("lab up=12.3").
    """
    import sys

    args = list(argv if argv is not None else sys.argv[1:])
    lab, lab_dir, results, mode = args[:4]
    timings = [(w, float(s)) for w, _, s in (a.rpartition("=") for a in args[4:])]
    left = record_after_down(lab, Path(lab_dir), Path(results), mode, timings)
    for item in left:
        print(f"left behind by lab {lab}: {item}")
    print(
        f"lab {lab}: {'nothing left behind after down' if not left else f'{len(left)} leftovers'}"
    )
    return 1 if left else 0


def _netns(lab: str) -> list[str]:
    prefix = f"{naming.PREFIX}-{lab}-"
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def _links(lab: str) -> list[str]:
    tag = naming.lab_tag(lab)
    with IPRoute() as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    return sorted(n for n in names if n and (n == naming.mgmt_bridge(lab) or f"pl{tag}" in n))


def _control_dirs(lab_dir: Path) -> list[Path]:
    """ssh master directories of the lab outside it: the tmp fallback of a deep checkout
    (remote.control_dir), which ``down`` does not remove with the lab directory."""
    from harness.conformance.remote import fallback_prefix

    prefix = fallback_prefix(lab_dir)
    return sorted(prefix.parent.glob(f"{prefix.name}*"))


def _processes(lab_dir: str) -> list[tuple[int, str]]:
    """Processes whose command line mentions the lab directory."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if lab_dir in cmd:
            out.append((int(entry), cmd[:120]))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
