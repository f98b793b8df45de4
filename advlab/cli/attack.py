"""advlab attack: run one attack on a trained run over a list of epsilons."""

from __future__ import annotations

import argparse

from ..attacks import ATTACKS, build_attack
from ..attacks.registry import attack_parameters
from ..parsing import parse_key_values, parse_number
from ..errors import AdvlabError
from .common import add_budget, add_points, add_precision, add_subcommand, emit, finish_subject, log, open_subject
from . import types as T


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "attack", "Attack a trained run, or your own model, over a list of epsilons.",
                       "advlab attack --run runs/digits-cnn --attack pgd --norm linf --eps 0.05,0.1 --steps 20 "
                       "--n 500 --json\n"
                       "  advlab attack --model nets.py:build --weights ckpt.pt --data test.npz --attack pgd --eps 8/255")
    p.add_argument("--attack", required=True, choices=sorted(ATTACKS))
    p.add_argument("--norm", default=None, choices=["linf", "l2", "l1"],
                   help="threat model (default linf; spatial has none: its budget is a rotation/shift range)")
    add_budget(p)
    p.add_argument("--steps", type=T.positive_int, default=None, help="iterations (iterative attacks; queries for square)")
    p.add_argument("--step-size", type=T.positive_float, default=None, help="absolute step size, e.g. 0.01 or 2/255")
    p.add_argument("--restarts", type=T.positive_int, default=None, help="random restarts (PGD)")
    p.add_argument("--loss", default=None, choices=["ce", "margin", "dlr"], help="loss to ascend")
    p.add_argument("--attack-arg", action="append", metavar="KEY=VALUE", help="any other attack option, repeatable")
    p.add_argument("--threat", default="lp", choices=["lp", "embedding"],
                   help="lp: --eps bounds the perturbation's --norm; embedding: --eps bounds ||f(x')-f(x)||_2 in the "
                        "embedding of --embedding (pgd, bim, fgsm; --norm is then the norm of the pixel steps)")
    p.add_argument("--embedding", type=T.existing_dir, default=None, metavar="RUN_DIR",
                   help="--threat embedding: an embedding run (triplet network from `advlab analyze embedding`)")
    p.add_argument("--pixel-eps", type=T.non_negative_float, default=None,
                   help="--threat embedding: also keep the perturbation inside this --norm ball in pixel space")
    add_points(p, "attack")
    add_precision(p)
    p.add_argument("--save", action="store_true", help="write adversarial examples (safetensors) and a PNG grid")
    finish_subject(p, run, "attacks/ATTACK-NORM", "files of --save")


def attack_options(args: argparse.Namespace) -> dict:
    options = parse_key_values(args.attack_arg, "--attack-arg")
    options.update(seed=args.seed, batch_size=args.batch_size)
    if args.norm is not None:
        options["norm"] = args.norm  # given explicitly: an error for an attack without a norm
    elif "norm" in attack_parameters(args.attack):
        options["norm"] = "linf"
    # Square's iterations are queries: --steps sets n_queries.
    steps_key = "n_queries" if args.attack == "square" else "steps"
    for key, value in ((steps_key, args.steps), ("restarts", args.restarts), ("loss", args.loss)):
        if value is not None:
            options[key] = value
    if args.step_size is not None:
        options["step_size"] = parse_number(args.step_size, "--step-size")
    return options


def run(args: argparse.Namespace) -> int:
    from ..artifacts.attack import attack_run, embedding_attack

    embedding = None
    if args.threat == "embedding":
        if args.eps_per_class is not None:
            raise AdvlabError("--eps-per-class holds pixel budgets; with --threat embedding give --eps (embedding units)")
        options = attack_options(args)
        if args.pixel_eps is not None:
            options["pixel_eps"] = args.pixel_eps
        attack, card = embedding_attack(args.attack, args.embedding, **options)
        embedding = (str(args.embedding), card)
    else:
        if args.embedding is not None or args.pixel_eps is not None:
            raise AdvlabError("--embedding and --pixel-eps belong to the embedding threat model: add --threat embedding")
        attack = build_attack(args.attack, **attack_options(args))
    if args.precision != "fp32" or args.graphs:
        from ..precision import with_precision
        attack = with_precision(attack, args.precision, args.graphs)
    subject = open_subject(args)
    out = args.out if args.save and args.out and args.run else None
    record = attack_run(subject, attack, eps=args.eps, eps_per_class=args.eps_per_class, n=args.n, save=args.save,
                        out=out, embedding=embedding, progress=not args.no_progress, log=log)
    emit(args, record, _text(record))
    return 0


def _text(record: dict) -> str:
    lines = [f"{record['attack']} {record['norm']}  n={record['n']}  clean accuracy {record['clean_accuracy']:.4f}  "
             f"({record['seconds']:.1f} s)", f"{'eps':>10}  {'robust acc':>10}  {'success':>8}  {'wrong conf':>10}  "
             f"{'median norm':>11}"]
    for r in record["results"]:
        lines.append(f"{r['eps']:>10.4g}  {r['robust_accuracy']:>10.4f}  {r['success_rate']:>8.4f}  "
                     f"{r['mean_wrong_confidence']:>10.4f}  {r['median_norm']:>11.4g}")
    if "saved" in record:
        lines.append(f"saved to {record['saved']}")
    return "\n".join(lines)
