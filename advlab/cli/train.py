"""advlab train: train a model (optionally with a defense) and save a run directory.

Data-parallel over N processes: `torchrun --nproc_per_node=N -m advlab train ...` (docs/distributed.md).
"""

from __future__ import annotations

import argparse

from .. import distributed
from ..parsing import parse_key_values, parse_number
from ..data import DATASET_NAMES
from ..defenses.registry import DEFENSES
from ..defenses.run import train_run
from ..defenses.training import TrainConfig
from ..device import resolve_device
from ..models import MODEL_NAMES
from .common import add_subcommand, add_resume, emit, finish, log
from . import types as T


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "train", "Train a model and save it as a run directory.",
                       "advlab train --dataset digits --model cnn-small --epochs 10 --seed 0 --out runs/digits-cnn\n"
                       "  advlab train --dataset fashion-mnist --model cnn-small --defense fgsm-rs --eps 0.1 --epochs 5\n"
                       "  advlab train --dataset digits --model mlp --defense pgd --eps 0.1 --defense-arg steps=7\n"
                       "  torchrun --nproc_per_node=2 -m advlab train --dataset digits --model mlp --defense pgd --eps 0.1")
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="model option, repeatable (e.g. --model-arg hidden=512,256 --model-arg dropout=0.5)")
    p.add_argument("--dataset-arg", action="append", metavar="KEY=VALUE",
                   help="option of a generated dataset (blobs, gaussian), e.g. --dataset-arg dim=100")
    p.add_argument("--defense", default="none", choices=sorted(DEFENSES))
    p.add_argument("--eps", type=T.non_negative_float, default=None, help="defense budget in raw input units, e.g. 0.1 or 8/255")
    p.add_argument("--defense-arg", action="append", metavar="KEY=VALUE",
                   help="defense option, repeatable: steps=7, step_size=0.01, rel_step_size=0.25, random_start=false "
                        "(pgd, trades); alpha=0.5 (goodfellow, noise-*); beta=6 (trades); check=false, check_drop=0.2 "
                        "(fgsm-rs); coef=0.001 (l1); layer=1 (perturb hidden activations); val=fgsm|pgd|clean "
                        "(validation metric); labels=5000, base=trades, variant=joint|alternate, use_pool=false (rst)")
    p.add_argument("--epochs", type=T.positive_int, default=10)
    p.add_argument("--batch-size", type=T.positive_int, default=128)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=T.positive_float, default=None, help="peak learning rate (default 3e-3 for adam, 0.05 for sgd)")
    p.add_argument("--weight-decay", type=T.non_negative_float, default=0.0)
    p.add_argument("--schedule", choices=["onecycle", "step", "constant"], default="onecycle")
    p.add_argument("--patience", type=T.positive_int, default=None, help="early stopping after this many epochs without improvement")
    p.add_argument("--val-fraction", type=T.fraction, default=0.1, help="share of the training set held out for validation")
    p.add_argument("--no-normalize", action="store_true", help="do not put per-channel normalisation inside the model")
    add_resume(p)
    finish(p, run, "run directory (default runs/DATASET-MODEL-DEFENSE-sSEED)")


def run(args: argparse.Namespace) -> int:
    out = args.out or f"runs/{args.dataset}-{args.model}-{args.defense}-s{args.seed}"
    lr = args.lr if args.lr is not None else (3e-3 if args.optimizer == "adam" else 0.05)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=lr,
                         weight_decay=args.weight_decay, schedule=args.schedule, patience=args.patience,
                         seed=args.seed)
    defense_kwargs = parse_key_values(args.defense_arg, "--defense-arg")
    if args.eps is not None:
        defense_kwargs["eps"] = parse_number(args.eps, "--eps")
    with distributed.setup(resolve_device(args.device)) as device:
        record = train_run(args.dataset, args.model, out, config=config,
                           model_kwargs=parse_key_values(args.model_arg, "--model-arg"),
                           dataset_kwargs=parse_key_values(args.dataset_arg, "--dataset-arg"),
                           defense=args.defense, defense_kwargs=defense_kwargs, normalize=not args.no_normalize,
                           val_fraction=args.val_fraction, data_dir=args.data_dir, resume=args.resume,
                           overwrite=args.overwrite, progress=not args.no_progress, log=log, device=device)
        if not distributed.is_main():
            return 0
    emit(args, record, f"test accuracy {record['test_accuracy']:.4f} after {record['epochs']} epochs "
                       f"({record['seconds']:.1f} s); run saved in {record['run_dir']}")
    return 0
