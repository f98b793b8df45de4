"""Certified robustness on Fashion-MNIST: randomized smoothing and IBP, with the bracket against the attack suite.

    python benchmarks/certify.py [--n 500] [--samples 10000] [--device auto] [--threads 2]
    (appends a dated section to benchmarks/results/certify.md)

First N test images (500, as issue 21 asks), seed 0:
1. cnn-small trained with Gaussian noise (`--defense gaussian`, sigma 0.25, --gauss-epochs epochs), then
   CERTIFY (Cohen et al. 2019; n0 100, n --samples, alpha 0.001): certified accuracy at L2 radii 0.25, 0.5
   and 1.0 and seconds per image on this machine's device. With n = 10,000 the largest radius CERTIFY can
   return at sigma 0.25 is 0.25 * Phi^-1(0.001^(1/10000)) = 0.80, so radius 1.0 is 0 by construction
   (the paper's CIFAR-10 table has 0% there too).
2. cnn-small IBP-trained at Linf eps 0.1 (`--defense ibp`, --ibp-epochs epochs): IBP-certified accuracy
   against the `standard` suite's attacked accuracy on the same images, the gap in points (images that are
   neither certified nor broken), and the training time.
Models are cached in benchmarks/.cache (certify-gaussian, certify-ibp); a cached model's training time is
the one its card recorded.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, RESULTS, markdown_table  # noqa: E402

EPS, SIGMA, RADII = 0.1, 0.25, [0.25, 0.5, 1.0]
LR = 3e-3  # advlab train's default for adam


def trained(name: str, defense: str, kwargs: dict, epochs: int, device) -> tuple[Path, float, bool]:
    """(run dir, training seconds, cached?) of a Fashion-MNIST cnn-small trained with `defense`."""
    from advlab.defenses import TrainConfig
    from advlab.defenses.run import train_run
    from advlab.runs import read_card

    run = CACHE / name
    cached = (run / "card.json").exists()
    if cached:
        card = read_card(run)
        same = card["defense"]["name"] == defense and card["epochs"] == epochs and card["train"]["lr"] == LR and \
            card["train"]["seed"] == 0 and all(card["defense"].get(k) == v for k, v in kwargs.items())
        if not same:
            print(f"{run} was trained with other settings: training again", flush=True)
            cached = False
    if not cached:
        train_run("fashion-mnist", "cnn-small", run, config=TrainConfig(epochs=epochs, lr=LR, seed=0), defense=defense,
                  defense_kwargs=kwargs, overwrite=True, progress=False, log=print, device=device)
    return run, read_card(run)["metrics"]["train_seconds"], cached


def machine(device: torch.device) -> str:
    from advlab.device import describe
    cpu = platform.processor() or platform.machine()
    return (f"{describe(device)}; {os.cpu_count()} CPU cores ({cpu}), {torch.get_num_threads()} torch threads; "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--samples", type=int, default=10000, help="CERTIFY's n (noisy samples per image)")
    parser.add_argument("--samples0", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--gauss-epochs", type=int, default=3)
    parser.add_argument("--ibp-epochs", type=int, default=5)
    parser.add_argument("--suite", default="standard")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--timing-samples", type=int, default=10000,
                        help="also time CERTIFY with this n on the first --timing-points images (0: skip)")
    parser.add_argument("--timing-points", type=int, default=20)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: smoothing, ibp")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from advlab.certify import certify_ibp, certify_smoothing
    from advlab.device import resolve_device
    from advlab.evaluate import evaluate_robustness, get_suite
    from advlab.runs import load_run
    from advlab.data import load_dataset

    device = resolve_device(args.device)
    data = load_dataset("fashion-mnist")
    x, y = data.test_subset(args.n)
    started = time.perf_counter()
    date = time.strftime("%Y-%m-%d %H:%M")
    sections = []
    skip = set(filter(None, args.skip.split(",")))

    if "smoothing" not in skip:
        run, train_s, cached = trained("certify-gaussian", "gaussian", {"sigma": SIGMA}, args.gauss_epochs, device)
        model, card = load_run(run, device=device)
        t0 = time.perf_counter()
        cert = certify_smoothing(model, x, y, SIGMA, n0=args.samples0, n=args.samples, alpha=args.alpha,
                                 batch_size=1000, seed=0, progress=True)
        seconds = time.perf_counter() - t0
        curve = {r["radius"]: r for r in cert.curve([0.0, *RADII])}
        rows = [[f"{r:g}", curve[r]["accuracy"], f"[{curve[r]['ci95'][0]:.3f}, {curve[r]['ci95'][1]:.3f}]"]
                for r in [0.0, *RADII]]
        max_radius = cert.params["sigma"] * float(__import__("scipy.stats").stats.norm.ppf(
            args.alpha ** (1 / args.samples)))
        text = (f"### Randomized smoothing: cnn-small + Gaussian noise (sigma {SIGMA}), L2\n\n"
                f"Trained {card['epochs']} epochs ({train_s:.0f} s{', cached' if cached else ''}), clean test "
                f"accuracy {card['metrics']['test_accuracy']:.3f}. CERTIFY on the first {len(y)} test images: n0 "
                f"{args.samples0}, n {args.samples}, alpha {args.alpha}; {cert.abstained()} abstained; "
                f"**{seconds / len(y):.3f} s per image** on {device} ({seconds:.0f} s in all, "
                f"{cert.params['forward_rows']} forward rows). Largest radius reachable with this n: "
                f"{max_radius:.2f}.\n\n" + markdown_table(["L2 radius", "certified accuracy", "95% interval"], rows))
        if args.timing_samples and args.timing_samples != args.samples:
            k = min(args.timing_points, len(y))
            t0 = time.perf_counter()
            certify_smoothing(model, x[:k], y[:k], SIGMA, n0=args.samples0, n=args.timing_samples, alpha=args.alpha,
                              batch_size=1000, seed=0, progress=True)
            per = (time.perf_counter() - t0) / k
            text += (f"\n\nThe paper's protocol costs more: with n {args.timing_samples}, CERTIFY takes **{per:.3f} s "
                     f"per image** here (first {k} images).")
        print(text, flush=True)
        sections.append(text)

    if "ibp" not in skip:
        run, train_s, cached = trained("certify-ibp", "ibp", {"eps": EPS}, args.ibp_epochs, device)
        model, card = load_run(run, device=device)
        t0 = time.perf_counter()
        cert = certify_ibp(model, x, y, EPS, bounds=data.bounds, progress=False)
        ibp_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ev = evaluate_robustness(model, x, y, [EPS], get_suite(args.suite, None, norm="linf"), norm="linf",
                                 bounds=data.bounds, seed=0, progress=True)
        suite_s = time.perf_counter() - t0
        certified = cert.certified(EPS)
        robust = ev.robust[0]
        broken_certified = int((certified & ~robust).sum())
        unknown = int((robust & ~certified).sum())
        c_acc, a_acc = certified.float().mean().item(), robust.float().mean().item()
        rows = [["clean", ev.clean_accuracy(), "", ""],
                [f"attacked ({args.suite} suite): upper bound", a_acc, f"{suite_s:.0f}", ""],
                ["IBP-certified: lower bound", c_acc, f"{ibp_s:.1f}", ""],
                ["gap (not certified, not broken)", a_acc - c_acc, "", f"{unknown} of {len(y)} images"]]
        text = (f"### IBP: cnn-small IBP-trained at Linf eps {EPS}\n\n"
                f"Trained {card['epochs']} epochs (warm-up 10% of the steps, eps ramped over the next 50%, kappa 1 -> "
                f"0.5): **{train_s:.0f} s** of training{' (cached run)' if cached else ''}. First {len(y)} test "
                f"images, eps {EPS}:\n\n"
                + markdown_table(["", "accuracy", "seconds", "images"], rows)
                + f"\n\nCertified points broken by the suite: {broken_certified} (must be 0).")
        print(text, flush=True)
        sections.append(text)

    load = os.getloadavg()[2] if hasattr(os, "getloadavg") else float("nan")
    header = (f"## {date}: {machine(device)}\n\nFashion-MNIST, first {args.n} test images, seed 0; "
              f"{time.perf_counter() - started:.0f} s for this run; load average over the last 15 minutes at the "
              f"end {load:.1f} (times grow with the other jobs on the machine).\n\n")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "certify.md"
    old = path.read_text() if path.exists() else "# Certified robustness (benchmarks/certify.py)\n\n"
    path.write_text(old.rstrip("\n") + "\n\n" + header + "\n\n".join(sections) + "\n")
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
