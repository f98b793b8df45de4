"""advlab demo: the main job a new user runs first (`make demo`)."""

from __future__ import annotations

import argparse

from ..defenses.run import train_run
from ..defenses.training import TrainConfig
from .common import add_common, add_data_dir, add_subcommand, emit, log


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "demo", "Train a model on digits and show what advlab measures.",
                       "advlab demo --out runs/demo")
    p.add_argument("--dataset", default="digits", help="dataset to run the demo on")
    add_common(p, "output directory (default runs/demo)")
    add_data_dir(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = args.out or "runs/demo"
    log(f"training a small CNN on {args.dataset} ...")
    record = train_run(args.dataset, "cnn-small", f"{out}/standard", data_dir=args.data_dir,
                       config=TrainConfig(epochs=15, lr=3e-3, seed=args.seed), overwrite=True,
                       progress=not args.no_progress, log=log)
    emit(args, record, f"\ncnn-small on {args.dataset}: test accuracy {record['test_accuracy']:.4f} "
                       f"in {record['seconds']:.1f} s\nrun saved in {record['run_dir']}")
    return 0
