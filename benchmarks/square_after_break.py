"""Should Square keep giving up after it breaks a point? What the give-up rules would save and lose on the
panel's masked models, from full 5,000-query Square runs recorded point by point.

    python benchmarks/square_after_break.py             (records what is missing, then the table; about an hour of CPU)
    (writes benchmarks/results/square_after_break.md; trajectories cached in benchmarks/.cache/square-after-break)

In the `standard` suite Square's give_up stops dropping points once Square has broken one (a break after the
gradient attacks is the sign of misleading gradients, and then every point gets the full budget, as in
AutoAttack). That costs the most on a masked model. Here: the panel's quantised model (Square alone: the
gradient is zero) and the BPDA-adapted thresholded model (Square after the gradient stages of `standard`),
Linf 0.1, every point the gradient stages leave, one point at a time, 3 seeds each, with the margin
z_y - max_{j != y} z_j recorded at give_up's checkpoints. Each rule is then replayed on the recordings: a
point stops at the first checkpoint where the rule calls it hopeless. "Lost" is a point the full run broke
that the rule would have stopped first; "saved" the queries the rule spares the points the full run never
broke. Rules: give_up's straight line (advlab/attacks/give_up.py, factor 1, 2, 3) and a projection per
doubling of the queries (tried for the screen and taken back, docs/evaluate.md).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import CACHE, RESULTS, markdown_table  # noqa: E402

QUERIES = 5000
RECORDED = [1, 25, 50, 100, 175, 250, 375, 500, 750, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500]
CHECKPOINTS = [250, 500, 1000, 2000, 3000, 4000]  # where a rule may stop a point (give_up's 5%..80% of 5000)
CASES = [("quantize", None), ("threshold", "bpda")]
SEEDS = (0, 1, 2)
EPS, N = 0.1, 50


def remaining(name, adaptation):
    """The model (adapted) and the points the gradient stages of `standard` leave robust."""
    import panel_models
    from advlab.data import load_dataset
    from advlab.evaluate import evaluate_robustness, get_suite
    model = panel_models.PANEL[name][0]().eval()
    if adaptation:
        from advlab.models.adaptive import adapt
        model = adapt(model, adaptation)
    x, y = load_dataset("fashion-mnist").test_subset(N)
    # APGD-CE and APGD-T as `standard` runs them; not its BPDA stage (the question is Square's after a break,
    # where it works alone, as on a masked model without a layer to see through)
    gradient_stages = [e for e in get_suite("standard") if e.label in ("apgd-ce", "apgd-t")]
    ev = evaluate_robustness(model, x, y, [EPS], gradient_stages, norm="linf", bounds=(0, 1), progress=False)
    idx = ev.robust[0].nonzero().flatten()
    return model, x[idx], y[idx], idx


def record(model, x, y, seed):
    """(margin at each recorded query count while unbroken, final margin) per point: Square alone on it."""
    import advlab.attacks.square as square
    from advlab.attacks.losses import margin
    seen = {}

    def note(now, then, spent, left, factor):  # give_up's hook, called at each checkpoint: record, stop nothing
        seen[QUERIES - left] = float(now[0])
        return torch.zeros_like(now, dtype=torch.bool)

    attack = square.Square("linf", n_queries=QUERIES, give_up=1.0, seed=seed)
    attack.checkpoints = lambda: set(RECORDED)
    out, hopeless = [], square.hopeless
    square.hopeless = note
    try:
        for i in range(len(x)):
            seen.clear()
            xa = attack.perturb(model, x[i:i + 1], y[i:i + 1], EPS, bounds=(0, 1), early_stop=True)
            with torch.no_grad():
                final = float(-margin(model(xa), y[i:i + 1])[0])
            out.append((dict(seen), final))
    finally:
        square.hopeless = hopeless
    return out


def stops(trajectory: dict, factor: float, per_doubling: bool) -> int | None:
    """The checkpoint at which the rule stops this point, or None (it runs to the end or to its break)."""
    then_q, then_m = 1, trajectory.get(1)
    for q in CHECKPOINTS:
        if q not in trajectory or then_m is None:
            return None  # broken before q
        now = trajectory[q]
        if per_doubling:
            rate, left = (then_m - now) / math.log2(q / then_q), math.log2(QUERIES / q)
        else:
            rate, left = (then_m - now) / (q - then_q), QUERIES - q
        if now > factor * max(rate, 0.0) * left:
            return q
        then_q, then_m = q, now
    return None


def main() -> None:
    torch.set_num_threads(1)
    cache = CACHE / "square-after-break"
    cache.mkdir(parents=True, exist_ok=True)
    runs = []  # (case, seed, point, trajectory, final margin)
    for name, adaptation in CASES:
        loaded = None
        for seed in SEEDS:
            path = cache / f"{name}-{adaptation or 'none'}-{seed}.pt"
            if not path.exists():
                loaded = loaded or remaining(name, adaptation)
                model, x, y, idx = loaded
                torch.save({"points": idx.tolist(), "runs": record(model, x, y, seed)}, path)
                print(f"recorded {path.name}", flush=True)
            rec = torch.load(path)
            runs += [(f"{name}{'+' + adaptation if adaptation else ''}", seed, p, t, f)
                     for p, (t, f) in zip(rec["points"], rec["runs"])]
    broke = [r for r in runs if r[4] < 0]
    unbroken = len(runs) - len(broke)
    rows = []
    for per_doubling in (False, True):
        for factor in (1.0, 2.0, 3.0):
            lost = [r for r in broke if stops(r[3], factor, per_doubling) is not None]
            saved = sum(QUERIES - q for r in runs if r[4] >= 0
                        for q in [stops(r[3], factor, per_doubling)] if q is not None)
            rows.append([("per doubling" if per_doubling else "straight line") + f", factor {factor:g}",
                         f"{saved:,} of {unbroken * QUERIES:,} ({saved / max(unbroken * QUERIES, 1):.0%})",
                         f"{len(lost)} of {len(broke)}",
                         ", ".join(f"{c} seed {s} point {p}" for c, s, p, _, _ in lost[:4]) or "-"])
    text = ("# Square's give-up after a break (benchmarks/square_after_break.py)\n\n"
            f"{len(runs)} single-point Square runs of {QUERIES:,} queries at Linf {EPS:g} (seeds {SEEDS}) on the points "
            "the gradient stages of `standard` leave: " +
            ", ".join(f"{sum(r[0] == c for r in runs)} on {c}" for c in dict.fromkeys(r[0] for r in runs)) +
            f"; {len(broke)} broke. Each rule replayed at give_up's checkpoints {CHECKPOINTS}.\n\n" +
            markdown_table(["rule", "queries saved on points never broken", "breaks lost", "lost"], rows) + "\n")
    (RESULTS / "square_after_break.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
