"""advlab attack: run one attack on a trained run over a list of epsilons."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..attacks import ATTACKS, build_attack
from ..attacks.registry import attack_parameters
from ..config import parse_eps_list, parse_key_values, parse_number
from ..errors import AdvlabError
from ..io import save_tensors, write_json
from .common import add_budget, add_common, add_subcommand, add_subject, budgets, emit, log, open_subject
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
    p.add_argument("--n", type=T.positive_int, default=None, help="attack the first N test points (default: all)")
    p.add_argument("--batch-size", type=T.positive_int, default=None,
                   help="points per batch (default: 500 on the CPU, 4096 on a GPU; halved if it does not fit)")
    p.add_argument("--save", action="store_true", help="write adversarial examples (safetensors) and a PNG grid")
    add_common(p, "with --run: where --save writes (default RUN/attacks/ATTACK-NORM); with --model: your model's run "
                  "directory (default runs/FUNCTION-HASH), --save writes to OUT/attacks/ATTACK-NORM")
    add_subject(p)
    p.set_defaults(handler=run)


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
    if args.eps is not None:
        parse_eps_list(args.eps)  # fail on a bad budget before loading anything
    embedding_card = None
    if args.threat == "embedding":
        if args.eps_per_class is not None:
            raise AdvlabError("--eps-per-class holds pixel budgets; with --threat embedding give --eps (embedding units)")
        attack, embedding_card = _embedding_attack(args)
    else:
        if args.embedding is not None or args.pixel_eps is not None:
            raise AdvlabError("--embedding and --pixel-eps belong to the embedding threat model: add --threat embedding")
        attack = build_attack(args.attack, **attack_options(args))
    if args.batch_size is not None and args.batch_size < 1:
        raise AdvlabError(f"--batch-size must be a positive integer, got {args.batch_size}")
    subject = open_subject(args)
    model, data = subject.model, subject.data
    if embedding_card is not None and list(embedding_card["dataset"]["input_shape"]) != list(data.input_shape):
        raise AdvlabError(f"the embedding run {args.embedding} takes inputs of shape "
                          f"{tuple(embedding_card['dataset']['input_shape'])} ({embedding_card['dataset']['name']}) but "
                          f"the model takes {data.input_shape} ({data.name}); use an embedding of the same dataset")
    x, y = data.test_subset(args.n)
    norm = getattr(getattr(attack, "norm", None), "name", None)
    eps, per_class = budgets(args, y, data.num_classes, norm)
    log(f"{attack.name} ({getattr(attack, 'threat_name', None) or 'spatial'}) on {len(y)} {data.name} test points, "
        f"eps {args.eps or 'per class from ' + args.eps_per_class}")
    result = attack(model, x, y, eps, bounds=data.bounds, progress=not args.no_progress)
    # result.norm: the attack's budget ("spatial" for the rotation/shift range).
    record = {"attack": attack.name, "norm": result.norm, "n": len(result.y), "clean_accuracy": result.clean_accuracy(),
              "seconds": result.seconds, "results": result.summary(), **subject.record()}
    if result.passes is not None:
        record["passes"] = result.passes
    if "batch_size_after_oom" in result.info:
        record["batch_size_after_oom"] = result.info["batch_size_after_oom"]
    if per_class is not None:
        record["eps_per_class"] = per_class
    if embedding_card is not None:
        record.update(threat="embedding", embedding=str(args.embedding), pixel_norm=result.info["pixel_norm"],
                      pixel_eps=result.info["pixel_eps"],
                      median_pixel_norm=[float(d[(result.success[e] & result.clean_correct)].median())
                                         if (result.success[e] & result.clean_correct).any() else float("nan")
                                         for e, d in enumerate(result.info["pixel_distances"])])
    if args.save:
        out = Path(args.out if args.out and args.run else subject.run_dir / "attacks" / f"{attack.name}-{result.norm}")
        save_outputs(out, x, result, data.classes, record)
        record["saved"] = str(out)
    lines = [f"{attack.name} {result.norm}  n={len(y)}  clean accuracy {record['clean_accuracy']:.4f}  "
             f"({result.seconds:.1f} s)", f"{'eps':>10}  {'robust acc':>10}  {'success':>8}  {'wrong conf':>10}  "
             f"{'median norm':>11}"]
    for r in record["results"]:
        lines.append(f"{r['eps']:>10.4g}  {r['robust_accuracy']:>10.4f}  {r['success_rate']:>8.4f}  "
                     f"{r['mean_wrong_confidence']:>10.4f}  {r['median_norm']:>11.4g}")
    if args.save:
        lines.append(f"saved to {record['saved']}")
    emit(args, record, "\n".join(lines))
    return 0


def _embedding_attack(args: argparse.Namespace):
    """The embedding-space attack of --threat embedding, and the embedding run's card."""
    from ..metric.triplet import load_embedding

    if args.embedding is None:
        raise AdvlabError("--threat embedding needs --embedding RUN_DIR: an embedding run (train one with "
                          "`advlab analyze embedding --dataset D --out DIR`; it is written to DIR/embedding)")
    options = attack_options(args)
    if args.pixel_eps is not None:
        options["pixel_eps"] = parse_number(args.pixel_eps, "--pixel-eps")
        if options["pixel_eps"] < 0:
            raise AdvlabError(f"--pixel-eps must be >= 0, got {args.pixel_eps}")
    embedding, card = load_embedding(args.embedding)
    return build_attack(args.attack, threat="embedding", embedding=embedding, **options), card


def save_outputs(out: Path, x, result, classes, record: dict, per_grid: int = 8) -> None:
    """Adversarial examples and logits as safetensors, the record as JSON, one PNG grid per epsilon."""
    from ..plotting import adversarial_grid

    x = result.info.get("start", x)  # fooling images start from noise or blank, not from the test points
    tensors = {"x": x, "x_adv": result.x_adv, "logits": result.logits, "y": result.y,
               "clean_logits": result.clean_logits}
    save_tensors(out / "adversarial.safetensors", tensors, {"eps": ",".join(map(str, result.eps))})
    write_json(out / "result.json", record)
    probs = result.logits.softmax(2)  # (E, N, K)
    for e, eps in enumerate(result.eps):
        # Fooled points first: they are what the grid is for.
        fooled = result.success[e] & result.clean_correct
        idx = torch.cat([fooled.nonzero().flatten(), (~fooled).nonzero().flatten()])[:per_grid]
        adversarial_grid(x[idx], result.x_adv[e][idx], result.y[idx], probs[e][idx].argmax(1),
                         probs[e][idx].amax(1), classes, out / f"grid-eps{eps:g}.png",
                         title=f"{result.attack} {result.norm} eps={eps:g}")
