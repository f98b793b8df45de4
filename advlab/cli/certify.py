"""advlab certify: a certified lower bound on robust accuracy (randomized smoothing or IBP).

Also the options and the step that `advlab evaluate --certify` adds (add_certify_options, check_certify,
add_certified), so evaluate.py only calls them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import AdvlabError
from .common import add_common, add_subcommand, add_subject, emit, log, open_subject
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
    p.add_argument("--n", type=positive_int, default=None, help="certify the first N test points (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="rows per forward pass (default 1000 noisy copies for smoothing, 256 points for ibp)")
    p.add_argument("--radii", type=radii, default=None,
                   help="radii of the certified-accuracy curve (default: 0 to 2 for smoothing; 0 and eps for ibp)")
    p.add_argument("--fresh", action="store_true", help="ignore saved state and start the certification over")
    add_common(p, "with --run: where results go (default RUN/certify/METHOD-NORM-PARAM); with --model: your model's "
                  "run directory (default runs/FUNCTION-HASH), results in OUT/certify/...")
    add_subject(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..certify.run import certify_subject, result_dir_name, text
    from ..device import resolve_device

    device = resolve_device(args.device)  # a missing GPU fails first, before anything is read
    if args.method == "smoothing":
        if args.sigma is None:
            raise AdvlabError("--method smoothing needs --sigma (the noise level, raw input units, e.g. 0.25)")
        if args.eps is not None:
            raise AdvlabError("--eps belongs to --method ibp; randomized smoothing certifies L2 radii from --sigma")
    else:
        if args.eps is None:
            raise AdvlabError("--method ibp needs --eps (the Linf budget, raw input units, e.g. 0.1 or 8/255)")
        if args.sigma is not None:
            raise AdvlabError("--sigma belongs to --method smoothing; IBP certifies the Linf ball of --eps")
    subject = open_subject(args, device)
    if args.method == "ibp":
        from ..certify import check_ibp_supported
        check_ibp_supported(subject.model)
    out = Path(args.out) if args.out and args.run else \
        subject.run_dir / "certify" / result_dir_name(args.method, args.sigma, args.eps)
    n = min(args.n, len(subject.data.y_test)) if args.n else len(subject.data.y_test)
    log(f"certifying {subject.model_record['spec']} on {n} {subject.data.name} test points with "
        + (f"randomized smoothing (sigma {args.sigma:g}, n0 {args.samples0}, n {args.samples}, alpha {args.alpha:g})"
           if args.method == "smoothing" else f"interval bound propagation (Linf eps {args.eps:g})"))
    record = certify_subject(subject, args.method, sigma=args.sigma, eps=args.eps, n=args.n, samples=args.samples,
                             samples0=args.samples0, alpha=args.alpha, batch_size=args.batch_size, radii=args.radii,
                             seed=args.seed, out=out, fresh=args.fresh, progress=not args.no_progress)
    emit(args, record, text(record, out))
    return 0


# -- advlab evaluate --certify --------------------------------------------------------------------
def add_certify_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("certified lower bound (--certify)")
    g.add_argument("--certify", action="store_true",
                   help="add certified accuracy beside robust accuracy: IBP at the same eps for --norm linf (the "
                        "model itself); randomized smoothing with --sigma for --norm l2 (the smoothed classifier)")
    add_smoothing_options(g, 1000)


def check_certify(args: argparse.Namespace, subject) -> None:
    """Before the evaluation: fail now on what would fail after it."""
    smoothing_flags = args.sigma is not None
    if not args.certify:
        if smoothing_flags:
            raise AdvlabError("--sigma is an option of --certify (randomized smoothing for --norm l2); add --certify")
        return
    if args.norm == "linf":
        if smoothing_flags:
            raise AdvlabError("--certify with --norm linf uses interval bound propagation; --sigma is for --norm l2")
        from ..certify import check_ibp_supported
        check_ibp_supported(subject.model)
    elif args.norm == "l2":
        if args.sigma is None:
            raise AdvlabError("--certify with --norm l2 needs --sigma: randomized smoothing certifies the smoothed "
                              "classifier, e.g. --sigma 0.25")
    else:
        raise AdvlabError(f"--certify has no certificate for --norm {args.norm}; use --norm linf (IBP) or l2 "
                          "(randomized smoothing with --sigma)")


def add_certified(args: argparse.Namespace, subject, x, y, eps, ev, record: dict, out: Path) -> None:
    """After the evaluation: certified accuracy and its interval in each result row (docs/certify.md)."""
    if not args.certify:
        return
    from ..certify.bracket import certified_rows

    log(f"certifying the same {len(y)} points ({'IBP' if args.norm == 'linf' else f'smoothing, sigma {args.sigma:g}'})")
    record["certify"] = certified_rows(subject, x, y, eps, args.norm, record["results"], robust=ev.robust,
                                       sigma=args.sigma, samples=args.samples, samples0=args.samples0,
                                       alpha=args.alpha, seed=args.seed, state_dir=out / "certify",
                                       progress=not args.no_progress)


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
    return lines
