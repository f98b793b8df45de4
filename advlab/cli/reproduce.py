"""advlab reproduce: a published result beside ours, from experiments/NAME.toml."""

from __future__ import annotations

import argparse

from .common import add_subcommand, emit, finish, log


def add_parser(subparsers) -> None:
    from ..reproduce import available

    names = ", ".join(available()) or "see experiments/"
    p = add_subcommand(subparsers, "reproduce",
                       f"Run a published experiment and print our number beside the published one, the tolerance "
                       f"and a verdict; writes OUT/NAME/reproduce.json and a report. Experiments: {names}.",
                       "advlab reproduce blobs\n  advlab reproduce goodfellow2015 --quick --out runs/reproduce")
    p.add_argument("name", metavar="NAME", help=f"experiment name ({names}) or a path to a .toml config")
    p.add_argument("--quick", action="store_true",
                   help="the config's [quick] settings: tiny and fast, a smoke test rather than a reproduction")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="overrides",
                   help="override a setting of the config, repeatable (e.g. --set epochs=2); recorded in the output")
    finish(p, run, "run directory (default runs/reproduce); the config's `out` is a folder inside it")


def run(args: argparse.Namespace) -> int:
    from ..parsing import parse_key_values
    from ..device import resolve_device
    from ..reproduce import reproduce, table

    device = resolve_device(args.device)  # a missing GPU fails before any work
    overrides = parse_key_values(args.overrides, "--set")
    record = reproduce(args.name, args.out or "runs/reproduce", quick=args.quick, data_dir=args.data_dir,
                       progress=not args.no_progress, log=log, seed=args.seed, overrides=overrides, device=device)
    emit(args, record, table(record) + f"\nreport: {record.get('report', '-')}")
    return 0
