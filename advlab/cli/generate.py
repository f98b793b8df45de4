"""advlab generate: AC-GAN training, samples, and unrestricted adversarial examples (Song et al. 2018).

    advlab generate train  --dataset digits --epochs 60 --judge runs/digits-mlp --out runs/gan-digits
    advlab generate sample --gan runs/gan-digits --judge runs/digits-mlp
    advlab generate attack --gan runs/gan-digits --model runs/digits-cnn --judge runs/digits-mlp --n 10

Each takes --device (default auto): the AC-GAN, the attacked classifier and the judge are loaded
there; the handler resolves it first, so a missing GPU is an error (exit 2) before any work.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..config import parse_number
from ..device import resolve_device
from ..errors import AdvlabError
from ..io import save_tensors, write_json
from .common import add_common, add_data_dir, add_device, add_subcommand, emit, log
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
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its last epoch")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    add_common(t, "run directory (default runs/gan-DATASET-sSEED)")
    add_data_dir(t)
    add_device(t)
    t.set_defaults(handler=run_train)

    s = add_subcommand(sub, "sample", "Sample grid of a trained AC-GAN and a judge's accuracy on its images per class.",
                       "advlab generate sample --gan runs/gan-digits --judge runs/digits-mlp --n-per-class 200 --json")
    s.add_argument("--gan", type=T.existing_dir, required=True, help="AC-GAN run directory (from advlab generate train)")
    s.add_argument("--judge", type=T.existing_dir, default=None, help="classifier run directory trained on real data")
    s.add_argument("--n-per-class", type=T.positive_int, default=100)
    add_common(s, "where the figures go (default GAN/samples)")
    add_device(s)
    s.set_defaults(handler=run_sample)

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
    a.add_argument("--steps", type=T.positive_int, default=200)
    a.add_argument("--lr", type=T.positive_float, default=0.05, help="Adam step size in latent space")
    a.add_argument("--lambda1", type=T.non_negative_float, default=10.0, help="weight of the latent distance term")
    a.add_argument("--lambda2", type=T.non_negative_float, default=10.0, help="weight of the auxiliary-classifier term")
    a.add_argument("--latent-eps", type=T.non_negative_float, default=0.1,
                   help="free zone of the latent term: mean(max(|z - z0| - latent_eps, 0)); 0 gives ||z - z0||_1 / m")
    a.add_argument("--latent-radius", type=T.positive_float, default=None,
                   help="hard Linf limit on z - z0, enforced after every step (default: none)")
    a.add_argument("--noise", type=T.non_negative_float, default=0.0, help="bound tau of the extra pixel noise tau * tanh(q), e.g. 0.1 (0: off)")
    a.add_argument("--batch-size", type=T.positive_int, default=256)
    a.add_argument("--save", action="store_true", help="write the examples (safetensors) next to the summary")
    add_common(a, "output directory (default GAN/attacks/MODELNAME-TARGET)")
    add_data_dir(a)
    add_device(a)
    a.set_defaults(handler=run_attack)


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
    from ..generative.acgan import generation_quality, load_gan
    from ..generative.figures import quality_figure, sample_grid
    device = resolve_device(args.device)  # a missing GPU fails before any work
    gan, card = load_gan(args.gan, device=device)
    classes = card["dataset"]["classes"]
    out = Path(args.out or Path(args.gan) / "samples")
    sample_grid(gan, classes, out / "samples.png", seed=args.seed, title=f"AC-GAN samples ({Path(args.gan).name})")
    record = {"gan": str(args.gan), "out": str(out), "grid": str(out / "samples.png")}
    text = f"sample grid in {out / 'samples.png'}"
    if args.judge is not None:
        judge = _load_classifier(args.judge, card, "--judge", device)
        quality = generation_quality(gan, judge, args.n_per_class, seed=args.seed)
        quality_figure(quality, classes, out / "quality.png")
        record.update(judge=str(args.judge), judge_accuracy=quality["accuracy"],
                      judge_accuracy_per_class=quality["per_class"], n_per_class=args.n_per_class)
        write_json(out / "quality.json", record)
        text += f"; judge accuracy on generated images {quality['accuracy']:.3f} (per class in {out / 'quality.json'})"
    emit(args, record, text)
    return 0


def run_attack(args: argparse.Namespace) -> int:
    from ..generative.acgan import load_gan
    from ..generative.figures import unrestricted_grid
    from ..generative.legitimacy import check_legitimacy
    from ..generative.unrestricted import UnrestrictedAttack, make_tasks
    from ..runs import dataset_from_card

    device = resolve_device(args.device)  # a missing GPU fails before any work
    noise = parse_number(args.noise, "--noise")
    attack = UnrestrictedAttack(steps=args.steps, lr=args.lr, lambda1=args.lambda1, lambda2=args.lambda2,
                                latent_eps=args.latent_eps, latent_radius=args.latent_radius, noise=noise,
                                batch_size=args.batch_size, seed=args.seed)
    gan, card = load_gan(args.gan, device=device)
    k = gan.num_classes
    sources = _parse_sources(args.source, k)
    targets = _parse_target(args.target, k)
    source, target = make_tasks(sources, targets, args.n, k)
    model = _load_classifier(args.model, card, "--model", device)
    judge = _load_classifier(args.judge, card, "--judge", device) if args.judge else None
    started = time.perf_counter()
    result = attack(gan, model, source, target, progress=not args.no_progress)
    seconds = time.perf_counter() - started
    classes = card["dataset"]["classes"]
    record = {"gan": str(args.gan), "model": str(args.model), "judge": args.judge, "target": args.target,
              "n": len(source), "seconds": seconds, "settings": result.settings, **result.summary()}
    legit = None
    if judge is not None:
        data = dataset_from_card(card, args.data_dir)
        legit = check_legitimacy(result.x, source, result.pred, result.success, judge, data.x_train, data.y_train, k)
        record["legitimacy"] = legit.summary(source, result.pred, result.success)
        # Control: the same checks on the unattacked G(z0, s), against the same predicted class p.
        # Without it one cannot tell how much of a flag rate the attack caused.
        control = check_legitimacy(result.x0, source, result.pred, result.success, judge, data.x_train,
                                   data.y_train, k)
        record["legitimacy_unattacked"] = control.summary(source, result.pred, result.success)
    record["per_source"] = _per_source(result, legit, k)
    name = f"{Path(args.model).name}-{args.target}"
    out = Path(args.out or Path(args.gan) / "attacks" / name)
    unrestricted_grid(result, classes, out / "examples.png", judge_label=legit.judge_label if legit else None,
                      title=f"unrestricted ({args.target}) vs {Path(args.model).name}")
    record["out"] = str(out)
    record["figures"] = {"examples": "examples.png"}
    write_json(out / "unrestricted.json", record)
    if args.save:
        tensors = {"x": result.x, "x0": result.x0, "z": result.z, "z0": result.z0, "source": result.source,
                   "target": result.target, "pred": result.pred, "aux_pred": result.aux_pred,
                   "success": result.success.to(torch.uint8)}
        if legit is not None:
            tensors.update(judge_label=legit.judge_label, dist_source=legit.dist_source,
                           dist_predicted=legit.dist_predicted, passes=legit.passes.to(torch.uint8))
        save_tensors(out / "examples.safetensors", tensors)
    text = (f"{record['n']} latent codes: success rate {record['success_rate']:.3f} "
            f"(attacked model right on the unattacked samples: {record['initially_correct']:.3f})")
    if legit is not None:
        lg = record["legitimacy"]
        pf = "n/a" if lg["pass_fraction"] is None else f"{lg['pass_fraction']:.3f}"
        ja = "n/a" if lg["judge_agrees_source"] is None else f"{lg['judge_agrees_source']:.3f}"
        text += f"; of the successes, judge says source {ja}, pass legitimacy checks {pf}"
    emit(args, record, text + f" ({seconds:.1f} s); details in {out / 'unrestricted.json'}")
    return 0


def _per_source(result, legit, k: int) -> list[dict]:
    rows = []
    for c in range(k):
        m = result.source == c
        if not m.any():
            continue
        row = {"source": c, "n": int(m.sum()), "success_rate": result.success[m].float().mean().item()}
        if legit is not None:
            row["pass_rate"] = legit.passes[m].float().mean().item()
        rows.append(row)
    return rows


def _parse_sources(text: str, k: int) -> list[int]:
    if text.strip() == "all":
        return list(range(k))
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise AdvlabError(f"--source must be 'all' or comma-separated class indices 0..{k - 1}, got {text!r}") from None
    bad = [v for v in values if not 0 <= v < k]
    if not values or bad:
        raise AdvlabError(f"--source must be 'all' or class indices in 0..{k - 1}, got {text!r}")
    return values


def _parse_target(text: str, k: int) -> str | int:
    if text in ("untargeted", "all"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise AdvlabError(f"--target must be 'untargeted', 'all' or a class index 0..{k - 1}, got {text!r}") from None
    if not 0 <= value < k:
        raise AdvlabError(f"--target must be a class index in 0..{k - 1}, got {value}")
    return value


def _load_classifier(run_dir: str, gan_card: dict, flag: str, device=None):
    from ..generative.acgan.store import KIND
    from ..generative.acgan.train import _check_same_data
    from ..runs import load_run, read_card
    if read_card(run_dir).get("kind") == KIND:
        raise AdvlabError(f"{flag} {run_dir} is an AC-GAN run; give a classifier run from `advlab train`")
    model, card = load_run(run_dir, device=device)

    class _Data:  # the GAN's dataset as _check_same_data expects it
        name = gan_card["dataset"]["name"]
        input_shape = tuple(gan_card["dataset"]["input_shape"])
        num_classes = gan_card["dataset"]["num_classes"]

    _check_same_data(card, _Data, f"{flag} {run_dir}")
    return model
