"""advlab certify: a certified lower bound on robust accuracy (randomized smoothing or IBP).

Also the options `advlab evaluate --certify` adds and the lines it prints (add_certify_options,
certified_text); the step itself is advlab.artifacts.evaluate's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_points, add_subcommand, emit, finish_subject, log, open_subject
from .types import positive_float, positive_int, probability, radii


def add_smoothing_options(p: argparse.ArgumentParser, samples_default: int) -> None:
    p.add_argument("--sigma", type=positive_float, default=None,
                   help="randomized smoothing: standard deviation of the Gaussian noise, raw input units")
    p.add_argument("--samples", type=positive_int, default=samples_default,
                   help="randomized smoothing: noisy samples per point that estimate the top class's probability (n)")
    p.add_argument("--samples0", type=positive_int, default=100,
                   help="randomized smoothing: noisy samples per point that select the top class (n0)")
    p.add_argument("--alpha", type=probability, default=0.001,
                   help="randomized smoothing: each certificate fails with probability at most alpha")


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "certify", "Certified robust accuracy: randomized smoothing (L2) or interval bound "
                                              "propagation (Linf).",
                       "advlab certify --run runs/fmnist-gauss --method smoothing --sigma 0.25 --samples 10000 "
                       "--samples0 100 --alpha 0.001 --n 500 --json\n"
                       "  advlab certify --run runs/fmnist-ibp --method ibp --eps 0.1 --n 500\n"
                       "  advlab certify --model nets.py:build --weights ckpt.pt --dataset cifar10 --method smoothing "
                       "--sigma 0.25")
    p.add_argument("--method", required=True, choices=["smoothing", "ibp"],
                   help="smoothing: certifies the smoothed classifier in L2 (any model); ibp: certifies the model "
                        "itself in Linf (MLPs, CNNs, ResNets of the zoo)")
    add_smoothing_options(p, 10000)
    p.add_argument("--eps", type=positive_float, default=None,
                   help="ibp: the Linf budget, raw input units (0.1, 8/255)")
    add_points(p, "certify", "rows per forward pass (default 1000 noisy copies for smoothing, 256 points for ibp)")
    p.add_argument("--radii", type=radii, default=None,
                   help="radii of the certified-accuracy curve (default: 0 to 2 for smoothing; 0 and eps for ibp)")
    p.add_argument("--fresh", action="store_true", help="ignore saved state and start the certification over")
    finish_subject(p, run, "certify/METHOD-NORM-PARAM")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import names
    from ..artifacts.certify import certify_run, check_method
    from ..device import resolve_device

    device = resolve_device(args.device)  # a missing GPU fails first, before anything is read
    check_method(args.method, args.sigma, args.eps)
    subject = open_subject(args, device)
    if args.method == "ibp":
        from ..certify import check_ibp_supported
        check_ibp_supported(subject.model)
    out = Path(args.out) if args.out and args.run else \
        names.certify_dir(subject.run_dir, args.method, args.sigma, args.eps)
    n = min(args.n, len(subject.data.y_test)) if args.n else len(subject.data.y_test)
    log(f"certifying {subject.model_record['spec']} on {n} {subject.data.name} test points with "
        + (f"randomized smoothing (sigma {args.sigma:g}, n0 {args.samples0}, n {args.samples}, alpha {args.alpha:g})"
           if args.method == "smoothing" else f"interval bound propagation (Linf eps {args.eps:g})"))
    record = certify_run(subject, args.method, sigma=args.sigma, eps=args.eps, n=args.n, samples=args.samples,
                         samples0=args.samples0, alpha=args.alpha, batch_size=args.batch_size, radii=args.radii,
                         seed=args.seed, out=out, fresh=args.fresh, progress=not args.no_progress)
    emit(args, record, text(record, out))
    return 0


def text(record: dict, out: Path | None = None) -> str:
    """What `advlab certify` prints without --json."""
    if record["method"] == "smoothing":
        head = (f"randomized smoothing, sigma {record['sigma']:g} (L2), n0 {record['samples0']}, "
                f"n {record['samples']}, alpha {record['alpha']:g}: {record['n']} points, "
                f"{record['abstained']} abstained, {record['seconds']:.1f} s "
                f"({record['seconds_per_point']:.2f} s per point)")
    else:
        head = (f"interval bound propagation, Linf eps {record['eps']:g}: {record['n']} points, "
                f"{record['seconds']:.1f} s")
    lines = [head, f"clean accuracy (the model) {record['clean_accuracy']:.4f}; certifies {record['certifies']}",
             f"{'radius':>8}  {'certified acc':>13}  {'95% interval':>17}"]
    for r in record["certified_accuracy"]:
        lo, hi = r["ci95"]
        lines.append(f"{r['radius']:>8.4g}  {r['accuracy']:>13.4f}  [{lo:.4f}, {hi:.4f}]")
    if record.get("hint"):
        lines.append(f"hint: {record['hint']}")
    if out is not None:
        lines.append(f"results in {out}")
    return "\n".join(lines)


# -- advlab evaluate --certify --------------------------------------------------------------------
def add_certify_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("certified lower bound (--certify)")
    g.add_argument("--certify", action="store_true",
                   help="add certified accuracy beside robust accuracy: IBP at the same eps for --norm linf (the "
                        "model itself); randomized smoothing with --sigma for --norm l2 (the smoothed classifier)")
    add_smoothing_options(g, 1000)


def certified_text(record: dict) -> list[str]:
    """Lines `advlab evaluate` prints for --certify."""
    if "certify" not in record:
        return []
    c = record["certify"]
    lines = [f"certified ({c['method']}; certifies {c['certifies']}), {c['seconds']:.1f} s:",
             f"{'eps':>8}  {'certified':>10}  {'95% interval':>17}  {'attacked':>8}  {'gap':>6}"]
    for r in record["results"]:
        lo, hi = r["certified_ci95"]
        lines.append(f"{r['eps']:>8.4g}  {r['certified_accuracy']:>10.4f}  [{lo:.4f}, {hi:.4f}]  "
                     f"{r['robust_accuracy']:>8.4f}  {r['robust_accuracy'] - r['certified_accuracy']:>6.3f}")
    if c.get("contradictions"):
        lines.append(f"WARNING: {c['contradictions']} point(s) certified but broken by an attack: a bug "
                     "(please report it)")
    if c.get("hint"):
        lines.append(f"hint: {c['hint']}")
    return lines
