"""Robust accuracy and wall time of the evaluation attacks on one trained model.

    nice python benchmarks/eval_attacks.py --run /tmp/runs-attacks/fm-std --n 1000 --eps 0.1

PGD-20 (step 0.01), APGD-CE, APGD-T and Square (1000 queries) at Linf eps, then the median L2
norm of the minimal perturbations C&W and DeepFool find, on the first N test images. Prints a
markdown table and writes it to benchmarks/results/eval_attacks.md. Times are the attacks' own.
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import torch

from advlab import load_run
from advlab.attacks import APGD, APGDT, CW, PGD, DeepFool, Square
from advlab.data import load_dataset
from advlab.io import atomic_write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval_attacks.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, card = load_run(args.run)
    data = load_dataset(card["dataset"]["name"])
    x, y = data.x_test[:args.n], data.y_test[:args.n]

    rows = []
    fixed = [("PGD-20, step 0.01", PGD("linf", steps=20, step_size=0.01)),
             ("APGD-CE, 100 steps", APGD("linf")),
             ("APGD-T, 9 targets x 100 steps", APGDT("linf")),
             ("Square, 1000 queries", Square("linf", n_queries=1000))]
    for label, attack in fixed:
        r = attack(model, x, y, eps=[args.eps], bounds=data.bounds)
        rows.append((label, f"linf {args.eps:g}", f"{r.clean_accuracy():.3f}", f"{r.robust_accuracy()[0]:.3f}", "",
                     f"{r.seconds:.1f}"))
        print(rows[-1], flush=True)
    minimal = [("C&W L2, 9 x 100 steps", CW()), ("DeepFool L2", DeepFool("l2")), ("DeepFool Linf", DeepFool("linf"))]
    for label, attack in minimal:
        r = attack(model, x, y, eps=[math.inf], bounds=data.bounds)
        found = r.min_distance[r.clean_correct]
        rows.append((label, f"{attack.norm.name} minimal", f"{r.clean_accuracy():.3f}",
                     f"found {torch.isfinite(found).float().mean().item():.3f}", f"{found.median().item():.4f}",
                     f"{r.seconds:.1f}"))
        print(rows[-1], flush=True)

    out = io.StringIO()
    out.write(f"# Evaluation attacks on `{args.run}` ({card['dataset']['name']}, {card['model']['name']}), "
              f"first {args.n} test images, {args.threads} thread(s)\n\n")
    out.write("| attack | budget | clean acc | robust acc | median norm (clean-correct) | seconds |\n")
    out.write("|---|---|---|---|---|---|\n")
    for row in rows:
        out.write("| " + " | ".join(row) + " |\n")
    text = out.getvalue()
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, text.encode())


if __name__ == "__main__":
    main()
