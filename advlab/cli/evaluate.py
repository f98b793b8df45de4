"""advlab evaluate: robust accuracy under a suite of attacks, with intervals, per-class tables and checks."""

from __future__ import annotations

import argparse
import csv
import io
import shlex
import time
from pathlib import Path

from .. import distributed
from ..attacks.base import _eps_list
from ..config import parse_eps_list
from ..device import describe, resolve_device
from ..errors import AdvlabError
from ..evaluate import evaluate_robustness, get_suite, run_checks, verdict
from ..evaluate.recorded import recorded_sources, save_examples
from ..evaluate.suites import SUITES
from ..io import atomic_write, write_json
from .certify import add_certified, add_certify_options, certified_text, check_certify
from .common import add_budget, add_common, add_subcommand, add_subject, budgets, emit, log, open_subject
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
    p.add_argument("--n", type=T.positive_int, default=None, help="evaluate the first N test points (default: all)")
    p.add_argument("--batch-size", type=T.positive_int, default=None,
                   help="points per batch (default: 500 on the CPU, 4096 on a GPU; halved if it does not fit)")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    p.add_argument("--check-n", type=T.positive_int, default=200, help="points used by the gradient-masking checks")
    p.add_argument("--fresh", action="store_true", help="ignore saved state and start the evaluation over")
    p.add_argument("--ignore-recorded", action="store_true",
                   help="only the suite: leave out the adversarial examples the run directory already holds "
                        "(saved attacks, earlier evaluations, transferred examples), which by default count too")
    add_common(p, "with --run: where results go (default RUN/eval/SUITE-NORM); with --model: your model's run "
                  "directory (default runs/FUNCTION-HASH), results in OUT/eval/SUITE-NORM")
    add_subject(p)
    add_certify_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.eps is not None:
        parse_eps_list(args.eps)  # fail on a bad budget before loading anything
    for flag, value in (("--batch-size", args.batch_size), ("--check-n", args.check_n)):
        if value is not None and value < 1:
            raise AdvlabError(f"{flag} must be a positive integer, got {value}")
    suite = get_suite(args.suite, args.suite_file, norm=args.norm)
    with distributed.setup(resolve_device(args.device)) as device:
        subject = open_subject(args, device)
        check_certify(args, subject)
        record, out = _evaluate(args, subject, suite, started)
        if not distributed.is_main():
            return 0
    emit(args, record, _text(record, out))
    return 0


def _evaluate(args: argparse.Namespace, subject, suite, started: float) -> tuple[dict, Path]:
    model, data = subject.model, subject.data
    x, y = data.test_subset(args.n)
    eps, per_class = budgets(args, y, data.num_classes, args.norm)
    out = Path(args.out if args.out and args.run else subject.run_dir / "eval" / f"{args.suite}-{args.norm}")
    state = out / "state.safetensors"
    if args.fresh and state.exists() and distributed.is_main():
        state.unlink()
    distributed.barrier()
    # The worst case over everything the run already holds at this threat: those examples go first.
    recorded = [] if args.ignore_recorded else recorded_sources(subject.run_dir, args.norm, exclude=[out])
    if recorded:
        log(f"counting the examples already recorded in {subject.run_dir}: "
            f"{', '.join(r.label.removeprefix('recorded ') for r in recorded)}")
    log(f"evaluating {subject.model_record['spec']} on {len(y)} {data.name} test points ({describe(subject.device)}"
        f"{f', {distributed.world_size()} processes' if distributed.is_distributed() else ''}): suite {args.suite} "
        f"({', '.join(s.label for s in suite)}), {args.norm} eps {args.eps or 'per class from ' + args.eps_per_class}")
    ev = evaluate_robustness(model, x, y, eps, [*recorded, *suite], norm=args.norm, bounds=data.bounds, seed=args.seed,
                             batch_size=args.batch_size, state_dir=out, progress=not args.no_progress,
                             identity=subject.identity())
    if not distributed.is_main():
        return {}, out
    checks = []
    if not args.no_checks:
        log(f"gradient-masking checks on {min(args.check_n, len(y))} points ...")
        check_eps = eps if per_class is None else sorted(set(per_class))
        # The convergence check compares a stronger attack with what this evaluation reported.
        reported = None if per_class is not None else \
            {e: robust[:args.check_n] for e, robust in zip(ev.eps, ev.robust)}
        checks = run_checks(model, x[:args.check_n], y[:args.check_n], check_eps, norm=args.norm, bounds=data.bounds,
                            seed=args.seed, reported_robust=reported, progress=log)
    record = {"suite": args.suite, "norm": args.norm, "n": len(y), "clean_accuracy": ev.clean_accuracy(),
              "seconds": time.perf_counter() - started, "attack_seconds": ev.attack_seconds,
              "verdict": verdict(checks) if checks else "not checked",
              "results": ev.results(), "confidence_clean_mistakes": ev.confidence()["clean_mistakes"],
              "adversarial_confusion": ev.adversarial_confusion(), "classes": list(data.classes),
              "checks": [c.as_dict() for c in checks], **subject.record(), "passes": ev.passes,
              "world_size": distributed.world_size()}
    if ev.oom_batch_sizes:
        record["batch_size_after_oom"] = ev.oom_batch_sizes
    if per_class is not None:
        record["eps_per_class"] = per_class
    add_certified(args, subject, x, y, eps, ev, record, out)
    record["summary"] = summary(record, args)
    save_examples(out, x, ev, _eps_list(eps, len(y)))
    write_json(out / "result.json", record)
    _write_csvs(out, record)
    return record, out


def summary(record: dict, args: argparse.Namespace) -> dict:
    """RobustBench-style: what one line of a leaderboard needs, and the command that reproduces it."""
    return {"clean_accuracy": record["clean_accuracy"], "threat": record["norm"],
            "eps": [r["eps"] for r in record["results"]],
            "robust_accuracy": [r["robust_accuracy"] for r in record["results"]],
            "ci95": [r["ci95"] for r in record["results"]], "n": record["n"], "suite": record["suite"],
            "passes": record["passes"], "seconds": record["seconds"], "device": record["device"],
            "command": reproduce_command(args)}


def reproduce_command(args: argparse.Namespace) -> str:
    """The `advlab evaluate` command line that gives these numbers again (resolved defaults included)."""
    parts = ["advlab", "evaluate"]
    for flag, value in (("--run", args.run), ("--model", args.model), ("--weights", args.weights),
                        ("--mean", args.mean), ("--std", args.std), ("--dataset", args.dataset),
                        ("--data", args.data), ("--classes", args.classes), ("--bounds", args.bounds),
                        ("--eps", args.eps), ("--eps-per-class", args.eps_per_class), ("--norm", args.norm),
                        ("--suite", args.suite), ("--suite-file", args.suite_file), ("--n", args.n),
                        ("--seed", args.seed), ("--batch-size", args.batch_size)):
        if value is not None:
            parts += [flag, shlex.quote(str(value))]
    for key, values in (("--model-arg", args.model_arg), ("--dataset-arg", args.dataset_arg)):
        for v in values or []:
            parts += [key, shlex.quote(v)]
    if args.ignore_recorded:
        parts.append("--ignore-recorded")
    return " ".join(parts)


def _write_csvs(out: Path, record: dict) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["eps", "robust_accuracy", "ci95_low", "ci95_high", "mean_wrong_confidence"])
    for r in record["results"]:
        w.writerow([r["eps"], r["robust_accuracy"], *r["ci95"], r["mean_wrong_confidence"]])
    atomic_write(out / "curve.csv", buf.getvalue().encode())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["eps", *record["classes"]])
    for r in record["results"]:
        w.writerow([r["eps"], *r["per_class"]])
    atomic_write(out / "per_class.csv", buf.getvalue().encode())


def _text(record: dict, out: Path) -> str:
    lines = [f"suite {record['suite']} ({record['norm']}), n={record['n']}, clean accuracy "
             f"{record['clean_accuracy']:.4f}, {record['seconds']:.1f} s",
             f"{'eps':>8}  {'robust acc':>10}  {'95% interval':>17}"]
    for r in record["results"]:
        lo, hi = r["ci95"]
        lines.append(f"{r['eps']:>8.4g}  {r['robust_accuracy']:>10.4f}  [{lo:.4f}, {hi:.4f}]")
    lines += certified_text(record)
    if record["checks"]:
        lines.append("checks:")
        for c in record["checks"]:
            lines.append(f"  [{'pass' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
            if not c["passed"]:
                lines.append(f"         {c['explanation']} (see {c['doc']})")
    lines.append(f"verdict: {record['verdict']}")
    lines.append(f"results in {out}")
    return "\n".join(lines)
