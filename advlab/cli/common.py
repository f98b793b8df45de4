"""Flags and output shared by every subcommand."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..io import dumps
from ..progress import write


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples' line breaks and show defaults."""


def add_subcommand(subparsers, name: str, help: str, example: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=help, description=f"{help}\n\nExample:\n  {example}",
                                 formatter_class=Formatter)


def add_common(parser: argparse.ArgumentParser, out_help: str = "output directory") -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout (progress goes to stderr)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", default=None, help=out_help)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder with dataset files (searched first; then $ADVLAB_DATA, ~/.cache/advlab, "
                             "/usr/share/datasets)")


def log(message: str) -> None:
    """Human-readable progress: always stderr, so --json output stays clean."""
    write(message)


def emit(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    if args.json:
        print(dumps(record))
    else:
        print(text)


def add_budget(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--eps", help="comma-separated budgets in raw input units, e.g. 0.05,0.1 or 8/255")
    group.add_argument("--eps-per-class", metavar="FILE",
                       help="JSON mapping class -> epsilon (from `advlab analyze distances`): one budget per class")


def budgets(args: argparse.Namespace, y, num_classes: int, norm: str | None):
    """The eps argument for an attack: a list of floats, or [per-example tensor] for --eps-per-class.
    Returns (eps, description for records)."""
    from ..config import parse_eps_list

    if args.eps is not None:
        return parse_eps_list(args.eps), None
    from ..analysis.budgets import eps_for_labels, load_eps_per_class

    per_class = load_eps_per_class(args.eps_per_class, num_classes, norm=norm)
    return [eps_for_labels(per_class, y)], per_class.tolist()
