"""The `advlab` command. Each subcommand lives in its own module with `add_parser(subparsers)`.

Exit codes: 0 success, 2 bad input or usage (one-line reason on stderr), 1 a bug, 130 interrupted.
Each module parses its flags, calls the step behind it (advlab.artifacts, or the library) and prints
the record; the library's errors name parameters, which `main` words as the command's flags.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from ..errors import AdvlabError, reword
from .common import flags_of
from ..version import __version__

_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

SUBCOMMANDS = ["demo", "train", "attack", "evaluate", "certify", "analyze", "report", "generate", "reproduce",
               "export"]


class Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr (`advlab evaluate: error: argument --n: ...`), exit 2, like every
    AdvlabError; the subcommands' parsers are of this class too (argparse makes them so)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error, already printed in one line (2)
        return e.code if isinstance(e.code, int) else 0
    try:
        return args.handler(args) or 0
    except AdvlabError as e:  # the library names parameters (`eps`); say them as this command's flags (--eps)
        print(f"advlab: error: {reword(str(e), flags_of(getattr(args, '_parser', None)))}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _CANNOT_WRITE or not e.filename:
            raise
        # Every file advlab writes goes through an atomic rename: what was there before is untouched.
        print(f"advlab: error: cannot write {e.filename}: {e.strerror}; the last saved state is intact (free "
              "some space or choose another --out, then run the same command again to resume)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nadvlab: interrupted; work up to the last checkpoint is saved (rerun with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
