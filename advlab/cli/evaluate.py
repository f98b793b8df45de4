"""advlab evaluate: robust accuracy under a suite of attacks, with intervals, per-class tables and checks."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import distributed
from ..artifacts.evaluate import COMMAND_FLAGS, COMMAND_REPEATED, checks_dominate
from ..device import resolve_device
from ..evaluate import get_suite
from ..evaluate.suites import SUITES
from .certify import add_certify_options, certified_text
from .common import add_budget, add_points, add_precision, add_subcommand, emit, finish_subject, log, open_subject
from . import types as T


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "evaluate", "Robust accuracy under a suite of attacks, with gradient-masking checks.",
                       "advlab evaluate --run runs/digits-cnn --eps 0.05,0.1 --suite standard --n 500 --json\n"
                       "  advlab evaluate --model nets.py:build --weights ckpt.pt --dataset cifar10 --eps 8/255 --n 1000\n"
                       "  torchrun --nproc_per_node=4 -m advlab evaluate --run runs/cifar-wrn --eps 8/255")
    add_budget(p)
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
    p.add_argument("--suite", default="standard", choices=[*SUITES, "custom"],
                   help="fast: APGD-CE and APGD-T, short; standard: APGD-CE, APGD-T on 3 ranked targets, Square with "
                        "give-up (AutoAttack's strength, a fifth of its passes); autoattack: AutoAttack's protocol "
                        "with full budgets; custom: --suite-file")
    p.add_argument("--suite-file", type=T.existing_file, default=None, help="TOML file with [[attack]] tables (for --suite custom)")
    p.add_argument("--adaptive", type=T.adaptations, default=None,
                   help="evaluate the model adapted to see through gradient masking, as the checks recommend: bpda "
                        "(non-differentiable preprocessing, advlab.models.Preprocessed: straight-through backward), "
                        "rescale (saturated softmax: logits divided by their std), eot (randomised model: the mean "
                        "probability over 16 passes); comma-separated; results in eval/SUITE-ADAPTATIONS-NORM")
    add_points(p, "evaluate")
    add_precision(p)
    p.add_argument("--shares", type=T.positive_int, default=None,
                   help="cut each attack's still-robust points into a multiple of K equal batches (default: the "
                        "number of torchrun processes, 1 alone); one process with --shares K gives exactly the "
                        "numbers of K processes")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    p.add_argument("--check-n", type=T.positive_int, default=200, help="points used by the gradient-masking checks")
    p.add_argument("--chunk-size", type=T.positive_int, default=None,
                   help="images read on demand (--preprocess, --dataset imagenet): points decoded and evaluated at a "
                        "time, so memory does not grow with --n (default 1000)")
    p.add_argument("--fresh", action="store_true", help="ignore saved state and start the evaluation over")
    p.add_argument("--ignore-recorded", action="store_true",
                   help="only the suite: leave out the adversarial examples the run directory already holds "
                        "(saved attacks, earlier evaluations, transferred examples), which by default count too")
    add_certify_options(p)
    finish_subject(p, run, "eval/SUITE-NORM")


def run(args: argparse.Namespace) -> int:
    from .. import rundir
    from ..artifacts.evaluate import evaluate_command, evaluate_run

    started = time.perf_counter()
    get_suite(args.suite, args.suite_file, norm=args.norm)  # a bad suite fails before anything is loaded
    with distributed.setup(resolve_device(args.device)) as device:
        subject = open_subject(args, device)
        folder = "-".join([args.suite, *(args.adaptive.split(",") if args.adaptive else [])])
        out = Path(args.out) if args.out and args.run else rundir.eval_dir(subject.run_dir, folder, args.norm)
        record = evaluate_run(
            subject, eps=args.eps, eps_per_class=args.eps_per_class, norm=args.norm, suite=args.suite,
            suite_file=args.suite_file, n=args.n, seed=args.seed, batch_size=args.batch_size, out=out,
            fresh=args.fresh, ignore_recorded=args.ignore_recorded, checks=not args.no_checks, check_n=args.check_n,
            chunk_size=args.chunk_size, precision=args.precision, graphs=args.graphs, shares=args.shares,
            adaptive=args.adaptive,
            certify=args.certify or False, sigma=args.sigma, samples=args.samples, samples0=args.samples0,
            alpha=args.alpha, timeout=args.timeout,
            command=evaluate_command(_flags(args), {k: getattr(args, k) for k in COMMAND_REPEATED},
                                     args.ignore_recorded),
            started=started, progress=not args.no_progress, log=log)
        if record is None:  # another process under torchrun: the first one prints
            return 0
    emit(args, record, _text(record, out))
    return 0


def _flags(args: argparse.Namespace) -> dict:
    """The flags of the reproducing command: under torchrun with --shares (default: the number of processes)
    resolved, so that the command run by one process gives the same numbers."""
    flags = {k: getattr(args, k) for k in COMMAND_FLAGS}
    if flags["shares"] is None and distributed.world_size() > 1:
        flags["shares"] = distributed.world_size()
    return flags


def _passes(p: dict) -> str:
    return f"{p.get('forward', 0):,} forward + {p.get('backward', 0):,} backward passes"


def _text(record: dict, out: Path) -> str:
    split = f"attacks {record['suite_seconds']:.1f} s"
    if record["checks"]:
        split += f", gradient-masking checks {record['checks_seconds']:.1f} s"
    lines = [f"suite {record['suite']} ({record['norm']}), n={record['n']}, clean accuracy "
             f"{record['clean_accuracy']:.4f}, {record['seconds']:.1f} s ({split})",
             f"{'eps':>8}  {'robust acc':>10}  {'95% interval':>17}"]
    for r in record["results"]:
        lo, hi = r["ci95"]
        lines.append(f"{r['eps']:>8.4g}  {r['robust_accuracy']:>10.4f}  [{lo:.4f}, {hi:.4f}]")
    lines += certified_text(record)
    if record["checks"]:
        lines.append(f"checks (on {record['check_n']} points, {record['checks_seconds']:.1f} s, "
                     f"{_passes(record['checks_passes'])}; the attacks: {_passes(record['passes'])}):")
        for c in record["checks"]:
            lines.append(f"  [{'pass' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
            if not c["passed"]:
                lines.append(f"         {c['explanation']} (see {c['doc']})")
    lines.append(f"verdict: {record['verdict']}")
    if record.get("adaptive"):
        lines.append(f"evaluated adapted: {', '.join(record['adaptive'])} (docs/adaptive-attacks.md)")
    if record.get("adaptive_command"):
        lines.append(f"adaptive attack: the failed checks point to --adaptive "
                     f"{','.join(record['recommended_adaptation'])}; run:\n  {record['adaptive_command']}")
    if record["checks"] and checks_dominate(record):
        ratio = record["checks_seconds"] / max(record["suite_seconds"], 1e-9)
        times = f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"
        lines.append(f"note: the gradient-masking checks took {record['checks_seconds']:.1f} s, {times} the "
                     f"attacks' {record['suite_seconds']:.1f} s; bound them with --check-n K (now "
                     f"{record['check_n']} points) or skip them with --no-checks")
    lines.append(f"results in {out}")
    return "\n".join(lines)
