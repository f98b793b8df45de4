"""Ground truth (issue 26): certified accuracy by IBP, CROWN, alpha-CROWN and exact verification, attacked accuracy by
PGD-20, advlab's `fast` and `standard` suites and AutoAttack, and the breakable points each attack missed.

    python benchmarks/verify.py                                   (about an hour on 2 busy cores)
    benchmarks/.env-peers/bin/python benchmarks/verify.py         (adds AutoAttack: pyautoattack, `make bench` env)
    python benchmarks/verify.py --only digits-mlp --n 40 --timeout 5        (a quick look)
    python benchmarks/verify.py --strategies                      (branch and bound against the MILP)
    python benchmarks/verify.py --only demo-cnn,demo-cnn-pgd --batch-size 4    (the CNNs: alpha-CROWN's memory)
    (appends a dated section to benchmarks/results/verify.md)

Models (trained once, cached in benchmarks/.cache; Linf, first N test images, seed 0):
- digits-mlp: `advlab train --dataset digits --model mlp` (two hidden layers of 256), 15 epochs;
- digits-mlp-x1000: the same weights with the last layer times 1,000: the same decisions (so the same exact
  answer) but a cross-entropy whose gradient vanishes on confident points, where a weak attack misses breaks;
- fmnist-mlp, fmnist-mlp-pgd: a small Fashion-MNIST MLP (64, 64), 3 epochs, standard and PGD-trained (eps 0.1);
- demo-cnn, demo-cnn-pgd: the digits demo's cnn-small, standard and PGD-trained (eps 0.1, 5 steps), 15 epochs.

For each model and eps: certified accuracy (IBP, CROWN, alpha-CROWN: lower bounds; exact: verified, with the
falsified and unknown counts at --timeout seconds per point), attacked accuracy (upper bounds), seconds per point,
and per attack the points exact falsified that the attack left standing ("missed"). A point exact verified that an
attack broke would be a bug: counted as "contradictions" (must be 0).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, markdown_table, trained_model  # noqa: E402

MODELS = {
    # name: (dataset, recipe kwargs for trained_model, eps list, default n)
    "digits-mlp": ("digits", dict(name="verify-digits-mlp", model="mlp", epochs=15, dataset="digits"), [0.02, 0.05], 100),
    "digits-mlp-x1000": ("digits", dict(name="verify-digits-mlp", model="mlp", epochs=15, dataset="digits"),
                         [0.02, 0.05], 100),
    "fmnist-mlp": ("fashion-mnist", dict(name="verify-fmnist-mlp", model="mlp", epochs=3,
                                         model_kwargs={"hidden": [64, 64]}), [0.01, 0.02], 100),
    "fmnist-mlp-pgd": ("fashion-mnist", dict(name="verify-fmnist-mlp-pgd", model="mlp", epochs=3, defense="pgd",
                                             eps=0.1, model_kwargs={"hidden": [64, 64]}), [0.02, 0.05], 100),
    "demo-cnn": ("digits", dict(name="verify-demo-cnn", model="cnn-small", epochs=15, dataset="digits"),
                 [0.02, 0.05], 30),
    "demo-cnn-pgd": ("digits", dict(name="verify-demo-cnn-pgd", model="cnn-small", epochs=15, dataset="digits",
                                    defense="pgd", eps=0.1, defense_kwargs={"steps": 5}), [0.02, 0.05], 30),
}


def scaled_logits(model: torch.nn.Module, factor: float) -> torch.nn.Module:
    """A copy whose last Linear layer (weights and bias) is multiplied by `factor`."""
    out = copy.deepcopy(model)
    last = [m for m in out.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(factor)
        last.bias.mul_(factor)
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} CPU cores ({cpu}), {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def autoattack_robust(model, x, y, eps):
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        return None
    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", seed=0)
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=250)
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def one_row(name, model, data, eps, n, timeout, log, batch_size=None):
    from advlab.attacks import PGD
    from advlab.certify import certify_crown, certify_ibp, verify_exact
    from advlab.evaluate import evaluate_robustness, get_suite

    x, y = data.test_subset(n)
    bounds = data.bounds
    with torch.no_grad():
        clean = (model(x).argmax(1) == y)
    row = {"model": name, "eps": eps, "n": len(y), "clean": clean.float().mean().item()}
    cert = {}
    for method in ("ibp", "crown", "alpha-crown"):
        if method == "ibp":
            c, s = timed(lambda: certify_ibp(model, x, y, eps, bounds=bounds, progress=False))
        else:
            c, s = timed(lambda: certify_crown(model, x, y, eps, bounds=bounds, method=method, progress=False,
                                               **({"batch_size": batch_size} if batch_size else {})))
        cert[method] = c.certified(eps)
        row[method], row[f"{method} s/pt"] = c.accuracy_at(eps), s / len(y)
        log(f"  {name} eps {eps:g}: {method} {row[method]:.3f} ({s / len(y):.2f} s/pt)")
    ex, s = timed(lambda: verify_exact(model, x, y, eps, bounds=bounds, timeout=timeout, progress=False,
                                       **({"batch_size": batch_size} if batch_size else {})))
    status = ex.status
    verified = torch.tensor([st == "verified" for st in status])
    falsified = torch.tensor([st == "falsified" for st in status])
    row.update(exact=verified.float().mean().item(), falsified=int(falsified.sum()),
               unknown=status.count("unknown"), **{"exact s/pt": s / len(y)},
               **{"exact max s": float(ex.extra["point_seconds"].max())})
    log(f"  {name} eps {eps:g}: exact {row['exact']:.3f}, {row['falsified']} falsified, {row['unknown']} unknown "
        f"({s / len(y):.2f} s/pt)")
    attacks = {}
    r, s = timed(lambda: PGD("linf", steps=20, seed=0)(model, x, y, eps=[eps], bounds=bounds))
    attacks["PGD-20"] = (r.correct[0].cpu(), s)
    for suite in ("fast", "standard"):
        ev, s = timed(lambda: evaluate_robustness(model, x, y, [eps], get_suite(suite, None, norm="linf"), norm="linf",
                                                  bounds=bounds, seed=0, progress=False))
        attacks[suite] = (ev.robust[0].cpu(), s)
    aa, s = timed(lambda: autoattack_robust(model, x, y, eps))
    if aa is not None:
        attacks["AutoAttack"] = (aa.cpu(), s)
    contradictions = 0
    for key, (robust, s) in attacks.items():
        row[key], row[f"{key} s/pt"] = robust.float().mean().item(), s / len(y)
        row[f"{key} missed"] = int((falsified & robust).sum())
        contradictions += int((verified & ~robust).sum())
        for method in ("ibp", "crown", "alpha-crown"):
            contradictions += int((cert[method] & ~robust).sum())
        log(f"  {name} eps {eps:g}: {key} {row[key]:.3f}, missed {row[f'{key} missed']} ({s / len(y):.2f} s/pt)")
    row["contradictions"] = contradictions
    return row


def strategies(data, n, eps, timeout, log) -> str:
    """Branch and bound against the MILP on the digits MLP: decided share and time per point."""
    from advlab.certify import verify_exact
    model, _ = trained_model(**MODELS["digits-mlp"][1])
    x, y = data.test_subset(n)
    rows = []
    for strategy in ("bab", "milp"):
        c, s = timed(lambda: verify_exact(model, x, y, eps, bounds=data.bounds, timeout=timeout, strategy=strategy,
                                          progress=False))
        secs = c.extra["point_seconds"]
        rows.append([strategy, c.status.count("verified"), c.status.count("falsified"), c.status.count("unknown"),
                     f"{1 - c.status.count('unknown') / len(y):.1%}", f"{s / len(y):.2f}",
                     f"{float(secs.median()):.2f}", f"{float(secs.max()):.1f}"])
        log(f"  {strategy}: {rows[-1]}")
    return (f"### Branch and bound against the MILP: digits-mlp, eps {eps:g}, first {len(y)} test images, timeout "
            f"{timeout:g} s per point\n\n" +
            markdown_table(["strategy", "verified", "falsified", "unknown", "decided", "s/pt (mean)", "s/pt (median)",
                            "s (slowest)"], rows))


COLUMNS = ["model", "eps", "n", "clean", "ibp", "crown", "alpha-crown", "exact", "falsified", "unknown", "PGD-20",
           "fast", "standard", "AutoAttack"]


def tables(rows: list[dict]) -> str:
    has_aa = any("AutoAttack" in r for r in rows)
    cols = [c for c in COLUMNS if c != "AutoAttack" or has_aa]
    acc = [[r.get(c, "") for c in cols] for r in rows]
    attacks = [a for a in ("PGD-20", "fast", "standard", "AutoAttack") if a != "AutoAttack" or has_aa]
    secs = [[r["model"], r["eps"]] + [f"{r[f'{m} s/pt']:.3f}" for m in ("ibp", "crown", "alpha-crown", "exact")]
            + [f"{r['exact max s']:.1f}"] + [f"{r[f'{a} s/pt']:.3f}" for a in attacks] for r in rows]
    missed = [[r["model"], r["eps"], r["falsified"], r["unknown"]] + [r[f"{a} missed"] for a in attacks]
              + [r["contradictions"]] for r in rows]
    return ("Accuracy (certified: a lower bound; attacked: an upper bound; exact: verified share, with the counts of "
            "falsified and unknown points):\n\n" + markdown_table(cols, acc) +
            "\n\nSeconds per point (exact: all three stages; its slowest point beside it):\n\n" +
            markdown_table(["model", "eps", "ibp", "crown", "alpha-crown", "exact", "exact slowest", *attacks], secs) +
            "\n\nBreakable points (exact falsified them) that each attack left standing; contradictions (a certified or "
            "verified point that an attack broke) must be 0:\n\n" +
            markdown_table(["model", "eps", "falsified", "unknown", *[f"{a} missed" for a in attacks],
                            "contradictions"], missed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated model names (default: all)")
    parser.add_argument("--n", type=int, default=None, help="test images per model (default: its own, 30 to 100)")
    parser.add_argument("--timeout", type=float, default=10.0, help="exact verification: seconds per point")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="points per CROWN and exact-verification batch (default: theirs, 64 and 32; alpha-CROWN on "
                             "a CNN needs about 4: docs/certify.md)")
    parser.add_argument("--strategies", action="store_true", help="only compare branch and bound with the MILP")
    parser.add_argument("--strategy-n", type=int, default=60)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from advlab.data import load_dataset

    started, date = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M")
    log = lambda m: print(m, flush=True)  # noqa: E731
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "verify.md"
    before = path.read_text() if path.exists() else "# Ground truth: certified, exact and attacked (benchmarks/verify.py)\n\n"

    def save(sections: list[str], done: bool) -> None:
        """The dated section, rewritten after every row (an interrupted run keeps the rows it finished)."""
        load = os.getloadavg()[2] if hasattr(os, "getloadavg") else float("nan")
        header = (f"## {date}: {machine()}\n\nLinf, first N test images, seed 0; exact timeout {args.timeout:g} s per "
                  f"point; {time.perf_counter() - started:.0f} s for this run{'' if done else ' so far (running)'}; load "
                  f"average over the last 15 minutes {load:.1f} (times grow with the other jobs on the machine).\n\n")
        path.write_text(before.rstrip("\n") + "\n\n" + header + "\n\n".join(sections) + "\n")

    if args.strategies:
        save([strategies(load_dataset("digits"), args.strategy_n, 0.05, args.timeout, log)], True)
    else:
        names = [n for n in args.only.split(",") if n] or list(MODELS)
        rows = []
        for name in names:
            dataset, recipe, eps_list, n = MODELS[name]
            data = load_dataset(dataset)
            model, _ = trained_model(**recipe)
            if name.endswith("-x1000"):
                model = scaled_logits(model, 1000.0)
            model.eval()
            for eps in eps_list:
                rows.append(one_row(name, model, data, eps, args.n or n, args.timeout, log, args.batch_size))
                print(tables(rows), flush=True)
                save([tables(rows)], False)
        save([tables(rows)], True)
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
