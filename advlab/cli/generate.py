"""advlab generate: AC-GAN training, samples, and unrestricted adversarial examples (Song et al. 2018).

    advlab generate train  --dataset digits --epochs 60 --judge runs/digits-mlp --out runs/gan-digits
    advlab generate sample --gan runs/gan-digits --judge runs/digits-mlp
    advlab generate attack --gan runs/gan-digits --model runs/digits-cnn --judge runs/digits-mlp --n 10

Each takes --device (default auto): the AC-GAN, the attacked classifier and the judge are loaded
there; the handler resolves it first, so a missing GPU is an error (exit 2) before any work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..device import resolve_device
from .common import add_resume, add_subcommand, emit, finish, log
from . import types as T

DATASETS = ["digits", "fashion-mnist", "mnist"]


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "generate", "AC-GAN and unrestricted adversarial examples (Song et al. 2018).",
                       "advlab generate train --dataset digits --epochs 60 --out runs/gan-digits\n"
                       "  advlab generate attack --gan runs/gan-digits --model runs/digits-cnn --judge runs/digits-mlp --json\n"
                       "Run `advlab generate ACTION --help` for the options of train, sample and attack.")
    sub = p.add_subparsers(dest="generate_command", metavar="ACTION", required=True)

    t = add_subcommand(sub, "train", "Train a class-conditional AC-GAN and save it as a run directory.",
                       "advlab generate train --dataset digits --epochs 60 --judge runs/digits-mlp --out runs/gan-digits")
    t.add_argument("--dataset", required=True, choices=DATASETS)
    t.add_argument("--epochs", type=T.positive_int, default=60)
    t.add_argument("--batch-size", type=T.positive_int, default=64)
    t.add_argument("--lr", type=T.positive_float, default=2e-4, help="Adam learning rate of both networks")
    t.add_argument("--latent-dim", type=T.positive_int, default=32, help="size of the latent code z")
    t.add_argument("--width", type=T.positive_int, default=64, help="channels of the first convolution (doubled in the second)")
    t.add_argument("--subset", type=T.positive_int, default=None, help="train on the first N training images only")
    t.add_argument("--judge", type=T.existing_dir, default=None,
                   help="run directory of a classifier trained on real data: its accuracy on generated images "
                        "per class is the quality figure (logged every epoch, stored in the card)")
    add_resume(t)
    finish(t, run_train, "run directory (default runs/gan-DATASET-sSEED)")

    s = add_subcommand(sub, "sample", "Sample grid of a trained AC-GAN and a judge's accuracy on its images per class.",
                       "advlab generate sample --gan runs/gan-digits --judge runs/digits-mlp --n-per-class 200 --json")
    s.add_argument("--gan", type=T.existing_dir, required=True, help="AC-GAN run directory (from advlab generate train)")
    s.add_argument("--judge", type=T.existing_dir, default=None, help="classifier run directory trained on real data")
    s.add_argument("--n-per-class", type=T.positive_int, default=100)
    finish(s, run_sample, "where the figures go (default GAN/samples)", data_dir=False)

    a = add_subcommand(sub, "attack", "Unrestricted adversarial examples: search the AC-GAN's latent space.",
                       "advlab generate attack --gan runs/gan-digits --model runs/digits-cnn --judge runs/digits-mlp "
                       "--target untargeted --n 10 --json")
    a.add_argument("--gan", type=T.existing_dir, required=True, help="AC-GAN run directory (from advlab generate train)")
    a.add_argument("--model", type=T.existing_dir, required=True, help="run directory of the classifier to attack")
    a.add_argument("--judge", type=T.existing_dir, default=None,
                   help="independent classifier run (real data, another architecture) for the legitimacy checks")
    a.add_argument("--source", default="all", help="source classes: comma-separated indices or 'all'")
    a.add_argument("--target", default="untargeted",
                   help="'untargeted', 'all' (every other class, targeted) or one class index")
    a.add_argument("--n", type=T.positive_int, default=10, help="random latent codes per (source, target) pair")
    a.add_argument("--save", action="store_true", help="write the examples (safetensors) next to the summary")
    g = a.add_argument_group("the latent search (Adam on z, and on the pixel noise q with --noise)")
    g.add_argument("--steps", type=T.positive_int, default=200)
    g.add_argument("--lr", type=T.positive_float, default=0.05, help="Adam step size in latent space")
    g.add_argument("--lambda1", type=T.non_negative_float, default=10.0, help="weight of the latent distance term")
    g.add_argument("--lambda2", type=T.non_negative_float, default=10.0, help="weight of the auxiliary-classifier term")
    g = a.add_argument_group("limits of the search")
    g.add_argument("--latent-eps", type=T.non_negative_float, default=0.1,
                   help="free zone of the latent term: mean(max(|z - z0| - latent_eps, 0)); 0 gives ||z - z0||_1 / m")
    g.add_argument("--latent-radius", type=T.positive_float, default=None,
                   help="hard Linf limit on z - z0, enforced after every step (default: none)")
    g.add_argument("--noise", type=T.non_negative_float, default=0.0,
                   help="bound tau of the extra pixel noise tau * tanh(q), e.g. 0.1 (0: off)")
    a.add_argument("--batch-size", type=T.positive_int, default=256)
    finish(a, run_attack, "output directory (default GAN/attacks/MODELNAME-TARGET)")


def run_train(args: argparse.Namespace) -> int:
    from ..generative.acgan import GANConfig, train_gan
    device = resolve_device(args.device)  # a missing GPU fails before any work
    out = args.out or f"runs/gan-{args.dataset}-s{args.seed}"
    config = GANConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, latent_dim=args.latent_dim,
                       width=args.width, seed=args.seed)
    record = train_gan(args.dataset, out, config, subset=args.subset, judge_run=args.judge, data_dir=args.data_dir,
                       resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress, log=log,
                       device=device)
    judge = f", judge accuracy on samples {record['judge_accuracy']:.3f}" if "judge_accuracy" in record else ""
    emit(args, record, f"AC-GAN trained for {record['epochs']} epochs ({record['seconds']:.1f} s){judge}; "
                       f"saved in {record['run_dir']} (sample grids in {record['run_dir']}/figures)")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from .. import rundir
    from ..artifacts.generate import sample_run

    device = resolve_device(args.device)  # a missing GPU fails before any work
    record = sample_run(args.gan, judge=args.judge, n_per_class=args.n_per_class, seed=args.seed, out=args.out,
                        device=device)
    text = f"sample grid in {record['grid']}"
    if args.judge is not None:
        text += (f"; judge accuracy on generated images {record['judge_accuracy']:.3f} (per class in "
                 f"{Path(record['out']) / rundir.QUALITY_FILE})")
    emit(args, record, text)
    return 0


def run_attack(args: argparse.Namespace) -> int:
    from .. import rundir
    from ..artifacts.generate import unrestricted_run
    from ..generative.unrestricted import UnrestrictedAttack

    device = resolve_device(args.device)  # a missing GPU fails before any work
    attack = UnrestrictedAttack(steps=args.steps, lr=args.lr, lambda1=args.lambda1, lambda2=args.lambda2,
                                latent_eps=args.latent_eps, latent_radius=args.latent_radius, noise=args.noise,
                                batch_size=args.batch_size, seed=args.seed)
    record = unrestricted_run(args.gan, args.model, attack, judge=args.judge, source=args.source, target=args.target,
                              n=args.n, save=args.save, out=args.out, data_dir=args.data_dir, device=device,
                              progress=not args.no_progress)
    text = (f"{record['n']} latent codes: success rate {record['success_rate']:.3f} "
            f"(attacked model right on the unattacked samples: {record['initially_correct']:.3f})")
    if "legitimacy" in record:
        lg = record["legitimacy"]
        pf = "n/a" if lg["pass_fraction"] is None else f"{lg['pass_fraction']:.3f}"
        ja = "n/a" if lg["judge_agrees_source"] is None else f"{lg['judge_agrees_source']:.3f}"
        text += f"; of the successes, judge says source {ja}, pass legitimacy checks {pf}"
    emit(args, record, text + f" ({record['seconds']:.1f} s); details in "
                              f"{Path(record['out']) / rundir.UNRESTRICTED_FILE}")
    return 0
