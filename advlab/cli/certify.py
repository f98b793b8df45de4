"""advlab certify: a certified lower bound on robust accuracy (randomized smoothing, IBP, CROWN, alpha-CROWN)
or the exact answer per point (complete verification).

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


def add_timeout(p) -> None:
    p.add_argument("--timeout", type=positive_float, default=None,
                   help="exact: seconds per point before it is reported unknown (default 60)")


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "certify", "Certified robust accuracy: randomized smoothing (L2), interval bound "
                                              "propagation (Linf), CROWN and alpha-CROWN (Linf, L2), or exact "
                                              "verification (Linf: verified, falsified or unknown per point).",
                       "advlab certify --run runs/fmnist-gauss --method smoothing --sigma 0.25 --samples 10000 "
                       "--samples0 100 --alpha 0.001 --n 500 --json\n"
                       "  advlab certify --run runs/fmnist-ibp --method ibp --eps 0.1 --n 500\n"
                       "  advlab certify --run runs/digits-mlp --method crown --eps 0.05 --n 500\n"
                       "  advlab certify --run runs/digits-mlp --method exact --eps 0.05 --timeout 10 --n 100\n"
                       "  advlab certify --model nets.py:build --weights ckpt.pt --dataset cifar10 --method smoothing "
                       "--sigma 0.25")
    p.add_argument("--method", required=True, choices=["smoothing", "ibp", "crown", "alpha-crown", "exact"],
                   help="smoothing: certifies the smoothed classifier in L2 (any model); ibp, crown, alpha-crown: "
                        "certify the model itself (MLPs, CNNs, ResNets of the zoo; crown is tighter than ibp, "
                        "alpha-crown tighter still and slower); exact: decides each point (ReLU networks, Linf)")
    add_smoothing_options(p, 10000)
    p.add_argument("--eps", type=positive_float, default=None,
                   help="ibp, crown, alpha-crown, exact: the budget, raw input units (0.1, 8/255)")
    p.add_argument("--norm", default=None, choices=["linf", "l2"],
                   help="the ball: linf (default for ibp, crown, alpha-crown, exact) or l2 (smoothing; crown and "
                        "alpha-crown)")
    add_timeout(p)
    add_points(p, "certify", "rows per forward pass (default 1000 noisy copies for smoothing, 256 points for ibp, "
                             "64 for crown, 32 for exact)")
    p.add_argument("--radii", type=radii, default=None,
                   help="radii of the certified-accuracy curve (default: 0 to 2 for smoothing; 0 and eps otherwise)")
    p.add_argument("--fresh", action="store_true", help="ignore saved state and start the certification over")
    finish_subject(p, run, "certify/METHOD-NORM-PARAM")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import names
    from ..artifacts.certify import certify_run, check_method
    from ..device import resolve_device

    device = resolve_device(args.device)  # a missing GPU fails first, before anything is read
    norm = check_method(args.method, args.sigma, args.eps, args.norm, args.timeout)
    subject = open_subject(args, device)
    check_supported(subject.model, args.method)
    out = Path(args.out) if args.out and args.run else \
        names.certify_dir(subject.run_dir, args.method, args.sigma, args.eps, norm)
    n = min(args.n, len(subject.data.y_test)) if args.n else len(subject.data.y_test)
    log(f"certifying {subject.model_record['spec']} on {n} {subject.data.name} test points with "
        + (f"randomized smoothing (sigma {args.sigma:g}, n0 {args.samples0}, n {args.samples}, alpha {args.alpha:g})"
           if args.method == "smoothing" else f"{DESCRIPTION[args.method]} ({norm} eps {args.eps:g})"))
    record = certify_run(subject, args.method, sigma=args.sigma, eps=args.eps, n=args.n, samples=args.samples,
                         samples0=args.samples0, alpha=args.alpha, batch_size=args.batch_size, radii=args.radii,
                         seed=args.seed, out=out, fresh=args.fresh, progress=not args.no_progress, norm=args.norm,
                         timeout=args.timeout)
    emit(args, record, text(record, out))
    return 0


DESCRIPTION = {"ibp": "interval bound propagation", "crown": "CROWN", "alpha-crown": "alpha-CROWN",
               "exact": "exact verification", "smoothing": "randomized smoothing"}


def check_supported(model, method: str) -> None:
    """Before any work: an AdvlabError naming the first layer `method` cannot go through."""
    if method == "ibp":
        from ..certify import check_ibp_supported
        check_ibp_supported(model)
    elif method in ("crown", "alpha-crown", "exact"):
        from ..certify import check_crown_supported
        check_crown_supported(model)


def text(record: dict, out: Path | None = None) -> str:
    """What `advlab certify` prints without --json."""
    if record["method"] == "smoothing":
        head = (f"randomized smoothing, sigma {record['sigma']:g} (L2), n0 {record['samples0']}, "
                f"n {record['samples']}, alpha {record['alpha']:g}: {record['n']} points, "
                f"{record['abstained']} abstained, {record['seconds']:.1f} s "
                f"({record['seconds_per_point']:.2f} s per point)")
    else:
        head = (f"{DESCRIPTION[record['method']]}, {record['norm']} eps {record['eps']:g}: {record['n']} points, "
                f"{record['seconds']:.1f} s")
        if record["method"] == "exact":
            head += (f"; {record['verified']} verified, {record['falsified']} falsified, {record['unknown']} unknown "
                     f"(timeout {record['timeout']:g} s per point)")
            if record.get("robust_accuracy_exact") is not None:
                head += f"\nrobust accuracy = {record['robust_accuracy_exact']:.4f} (exact)"
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
    g.add_argument("--certify", nargs="?", const="auto", default=None,
                   choices=["auto", "ibp", "crown", "alpha-crown", "exact", "smoothing"], metavar="METHOD",
                   help="add certified accuracy beside robust accuracy, at the same eps: ibp, crown, alpha-crown "
                        "(the model itself; crown and alpha-crown also for --norm l2), exact (Linf: every point "
                        "verified, falsified or unknown; robust accuracy is exact when none is unknown), smoothing "
                        "(--norm l2 with --sigma: the smoothed classifier). The bare flag (auto): ibp for --norm "
                        "linf, smoothing for --norm l2")
    add_smoothing_options(g, 1000)
    add_timeout(g)


def certified_text(record: dict) -> list[str]:
    """Lines `advlab evaluate` prints for --certify."""
    if "certify" not in record:
        return []
    c = record["certify"]
    lines = [f"certified ({c['method']}; certifies {c['certifies']}), {c['seconds']:.1f} s:",
             f"{'eps':>8}  {'certified':>10}  {'95% interval':>17}  {'attacked':>8}  {'gap':>6}"]
    for r in record["results"]:
        eps = f"{r['eps']:>8.4g}" if isinstance(r["eps"], (int, float)) else f"{str(r['eps']):>8}"
        if r.get("robust_accuracy_exact") is not None:
            lines.append(f"{eps}  robust accuracy = {r['robust_accuracy_exact']:.4f} (exact)")
            continue
        lo, hi = r["certified_ci95"]
        lines.append(f"{eps}  {r['certified_accuracy']:>10.4f}  [{lo:.4f}, {hi:.4f}]  "
                     f"{r['robust_accuracy']:>8.4f}  {r['robust_accuracy'] - r['certified_accuracy']:>6.3f}"
                     + (f"  ({r['unknown']} unknown)" if r.get("unknown") else ""))
    missed = [(r["eps"], r["missed_by_attacks"]) for r in record["results"] if r.get("missed_by_attacks")]
    for eps, k in missed:
        lines.append(f"exact verification broke {k} point(s) at eps {eps:g} that every attack of the suite left "
                     "standing")
    if c.get("contradictions"):
        lines.append(f"WARNING: {c['contradictions']} point(s) certified but broken by an attack: a bug "
                     "(please report it)")
    if c.get("hint"):
        lines.append(f"hint: {c['hint']}")
    return lines
