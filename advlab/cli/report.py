"""advlab report: one self-contained HTML file from a run directory's artefacts."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_subcommand, emit, file_size
from . import types as T


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "report",
                       "Write RUN_DIR/report.html: robustness curves with intervals, adversarial examples and an "
                       "epsilon slider, checks, per-class tables, transfer matrix, class distances, published "
                       "numbers beside ours, configuration and timings. Sections whose artefacts are missing are "
                       "left out; the file needs no network to open.",
                       "advlab report runs/demo   # then open runs/demo/report.html")
    p.add_argument("run_dir", type=T.existing_dir, metavar="RUN_DIR", help="run directory (from advlab train, demo or reproduce)")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.add_argument("--out", type=T.output_file, default=None, help="where to write the HTML file (default RUN_DIR/report.html)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..report.html import sections, write_report

    path, context = write_report(args.run_dir, args.out)
    record = {"report": str(path), "bytes": Path(path).stat().st_size, "sections": sections(context)}
    emit(args, record, f"report written to {path} ({file_size(record['bytes'])}): {', '.join(record['sections'])}")
    return 0
