"""advlab export robustbench: an evaluation as RobustBench's leaderboard takes it (advlab.artifacts.export)."""

from __future__ import annotations

import argparse

from .common import add_common, add_subcommand, emit
from . import types as T

EXAMPLE = ("advlab export robustbench runs/my-wrn --out submission\n"
           "  advlab export robustbench runs/my-wrn --out submission --allow-partial   # e.g. fewer than 10,000 points")


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "export", "Write results in another tool's format. Sub-commands: robustbench (each has --help and --json).",
                       EXAMPLE)
    sub = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    r = add_subcommand(sub, "robustbench",
                       "An evaluation as RobustBench's submissions ask for it: OUT/NAME.json (its model-info fields), "
                       "OUT/NAME.pt (the adversarial examples, one tensor in test-set order) and OUT/NAME_log.txt "
                       "(which attack broke how many points).", EXAMPLE)
    r.add_argument("run_dir", type=T.existing_dir, metavar="RUN", help="a run directory with an `advlab evaluate` result")
    r.add_argument("--evaluation", type=T.existing_dir, default=None, metavar="DIR",
                   help="which evaluation (RUN/eval/SUITE-NORM) when RUN holds several (default: the one that "
                        "follows the leaderboard's protocol)")
    r.add_argument("--allow-partial", action="store_true",
                   help="export an evaluation that departs from the leaderboard's protocol (eps, threat, the first "
                        "10,000 CIFAR / 5,000 ImageNet test points); the entry's footnote says how")
    add_common(r, "where the files go (default RUN/export/robustbench)")
    r.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..artifacts.export import export_robustbench
    record = export_robustbench(args.run_dir, args.out, allow_partial=args.allow_partial, evaluation=args.evaluation)
    board = record["leaderboard"]
    lines = [f"{'PARTIAL ' if record['partial'] else ''}RobustBench {board['dataset']} {board['threat']} entry for "
             f"{record['name']}: clean {record['entry_fields']['clean_acc']}%, robust (external) "
             f"{record['entry_fields']['external']}% at eps {record['entry_fields']['eps']}"]
    if record["partial"]:
        lines.append(f"not the leaderboard's protocol: {'; '.join(record['departures'])}")
    lines += [f"  {record['entry']}", f"  {record['examples']}", f"  {record['log']}"]
    if record["to_fill"]:
        lines.append(f"fill in before submitting: {', '.join(record['to_fill'])}")
    emit(args, record, "\n".join(lines))
    return 0
