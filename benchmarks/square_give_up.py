"""What Square's `give_up` saves, and what it misses, on the two benchmark models.

    python benchmarks/square_give_up.py [--n 200] [--factors 3]

Square (Linf, eps 0.1, 5,000 queries, seed 0) on the Fashion-MNIST small CNNs of attack_speed.py
(standard, and FGSM + random start), first N test images, one thread, in two situations:
- alone, on every correctly classified image;
- after APGD-CE and APGD-T, on the images they leave robust: where the `standard` suite runs it.
For each: robust accuracy with the full budget and with give_up=h, the forward passes spent (rows
through the model, padding included) and CPU seconds. Once give_up drops a point the two runs draw
different random windows for the rest, so a point can fall to one run and not the other; both
counts are shown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, markdown_table, trained_model  # noqa: E402

EPS = 0.1


class Counted(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(x)


def square(model, x, y, give_up):
    from advlab.attacks import build_attack
    counted = Counted(model)
    c0 = time.process_time()
    r = build_attack("square", norm="linf", n_queries=5000, give_up=give_up)(counted, x, y, [EPS], bounds=(0.0, 1.0))
    return r.correct[0], counted.rows, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--factors", default="3", help="comma-separated give_up factors to compare with the full run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from advlab.data import load_dataset
    from advlab.evaluate import evaluate_robustness, get_suite
    x, y = load_dataset("fashion-mnist").test_subset(args.n)
    models = {"standard": lambda: trained_model("fm-cnn-standard", epochs=2),
              "FGSM-RS": lambda: trained_model("fm-cnn-fgsmrs", defense="fgsm-rs", eps=EPS, epochs=5)}
    factors = [float(f) for f in args.factors.split(",")]
    rows = []
    for name, make in models.items():
        model, _ = make()
        model.eval()
        ev = evaluate_robustness(model, x, y, [EPS], get_suite("standard")[:2], bounds=(0.0, 1.0), progress=False)
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        for situation, keep in (("alone", correct), ("after APGD-CE, APGD-T", ev.robust[0])):
            xs, ys = x[keep], y[keep]
            full, full_rows, full_cpu = square(model, xs, ys, None)
            rows.append([name, situation, int(keep.sum()), "full", 1 - full.float().mean().item(), full_rows,
                         full_cpu, "", ""])
            for h in factors:
                got, got_rows, got_cpu = square(model, xs, ys, h)
                rows.append([name, situation, int(keep.sum()), f"give_up={h:g}", 1 - got.float().mean().item(),
                             got_rows, got_cpu, int((~full & got).sum()), int((full & ~got).sum())])
            print(rows[-1], flush=True)
    headers = ["model", "Square runs", "points", "budget", "share broken", "forward rows", "CPU s",
               "broken by full only", "broken by give_up only"]
    text = (f"# Square with and without give_up (Fashion-MNIST small CNNs, Linf eps {EPS}, 5,000 queries, "
            f"first {args.n} test images)\n\n" + markdown_table(headers, rows) + "\n\n"
            "share broken: of the points Square was run on. forward rows: images through the model, padding included.\n")
    (RESULTS / "square_give_up.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
