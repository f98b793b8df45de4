"""advlab demo: the main job a new user runs first (`make demo`). The steps live in advlab/demo.py."""

from __future__ import annotations

import argparse

from .common import add_subcommand, emit, finish, log
from ..data import DATASET_NAMES
from . import types as T


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "demo",
                       "Train a standard and an adversarially trained model, attack both over an epsilon grid "
                       "(FGSM, PGD), evaluate them with the gradient-masking checks, build the transfer matrix and "
                       "the epsilon analysis, and write OUT/report.html. A few minutes on 2 CPU cores for digits.",
                       "advlab demo                      # digits, runs/demo/report.html\n"
                       "  advlab demo --dataset fashion-mnist --out runs/demo-fashion")
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES,
                   help="digits (no files needed), fashion-mnist, mnist or cifar10")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds): a smoke test of the whole pipeline")
    p.add_argument("--model", default=None, choices=["softmax", "mlp", "maxout", "cnn-small", "cnn-madry"],
                   help="architecture of both models (default cnn-small)")
    p.add_argument("--epochs", type=T.positive_int, default=None, help="training epochs per model (default: the preset's)")
    finish(p, run, "output directory (default runs/demo)")


def run(args: argparse.Namespace) -> int:
    from ..demo import preset, run_demo, summary_text
    from ..device import resolve_device

    device = resolve_device(args.device)  # a missing GPU fails before any work
    cfg = preset(args.dataset, quick=args.quick)
    cfg.seed = args.seed
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.model is not None:
        cfg.model = args.model
    out = args.out or "runs/demo"
    log(f"advlab demo on {args.dataset} -> {out} ({cfg.scale} scale)")
    record = run_demo(cfg, out, data_dir=args.data_dir, progress=not args.no_progress, log=log, device=device)
    emit(args, record, "\n" + summary_text(record))
    return 0
