"""The `advlab` command. Each subcommand lives in its own module with `add_parser(subparsers)`.

Exit codes: 0 success, 2 bad input or usage (one-line reason on stderr), 1 a bug, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import AdvlabError

SUBCOMMANDS = ["demo", "train", "attack", "evaluate", "certify", "analyze", "report", "generate", "reproduce"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advlab", description="Adversarial examples for PyTorch: craft, measure, defend, understand, report.",
        epilog="Run `advlab SUBCOMMAND --help` for its options and an example.")
    parser.add_argument("--version", action="version", version=f"advlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:
        # `torchrun ... -m advlab -- evaluate --run R --n 500`: torchrun's own parser would take
        # --run and --n for abbreviations of its options; after `--` it passes everything on.
        argv = argv[1:]
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except AdvlabError as e:
        print(f"advlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nadvlab: interrupted; work up to the last checkpoint is saved (rerun with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
