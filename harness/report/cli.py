"""`podlab report`: results JSON → one self-contained HTML file.

Exit status: 0 when the report was written (even if checks failed, so CI can
publish it), 1 with ``--fail-on-fail`` when any check failed or any threshold
was missed, 2 on bad input (missing file, invalid JSON, wrong schema version).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from harness.errors import Problem, UserError
from harness.report import analysis, compare, render
from harness.results import store


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's verbs to the `podlab` parser."""
    p = sub.add_parser(
        "report",
        help="turn results JSON into a self-contained HTML report",
        description="Render one or more results files (merged) into one HTML file that "
        "opens offline: conformance matrix, throughput vs underlay, latency, SLOs, "
        "encryption evidence, timelines, environment, and deltas against a baseline.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS.json", help="results file(s)")
    p.add_argument("-o", "--output", required=True, metavar="HTML", help="report file to write")
    p.add_argument("--baseline", metavar="OLD.json", help="earlier results to compare against")
    p.add_argument(
        "--fail-on-fail",
        action="store_true",
        help="exit 1 when any check failed or any threshold was missed",
    )
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Load, render, write, then say what the report holds."""
    out = Path(args.output)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError([Problem(str(out), "-o", "the report is HTML", "name the output *.html")])
    runs = [store.load(p) for p in args.results]
    baseline = store.load(args.baseline) if args.baseline else None
    sources = render.Sources(tuple(args.results), args.baseline)
    try:
        html = render.render(runs, sources, baseline)
    except compare.IncomparableRuns as exc:
        raise UserError(
            [
                Problem(
                    str(args.baseline),
                    "--baseline",
                    str(exc),
                    "compare emulated runs with emulated ones only",
                )
            ]
        ) from exc
    written = render.write(html, out)
    run = store.merge(runs)
    s = analysis.summarize(run)
    console = Console(highlight=False)
    console.print(
        f"wrote {written} ({len(html) // 1024} KiB): {s.passed} passed, {s.failed} failed, "
        f"{s.skipped} skipped; SLOs met {s.slos_met}/{s.slos}"
    )
    return 1 if args.fail_on_fail and analysis.any_failed(run) else 0
