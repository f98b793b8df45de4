"""What `give_up` saves, and what it misses, for APGD-T and Square on the two benchmark models.

    python benchmarks/give_up.py [--n 300] [--factors 5] [--attacks apgd-t,square]
    (writes benchmarks/results/give_up-ATTACKS.md)

Linf eps 0.1, seed 0, on the Fashion-MNIST small CNNs of attack_speed.py (standard, and FGSM +
random start), first N test images, one thread. Each attack runs where the `standard` suite runs it:
- APGD-T (9 targets, 100 steps) on the images APGD-CE leaves robust;
- Square (5,000 queries) on the images APGD-CE and APGD-T leave robust, and alone on every
  correctly classified image (where it has most to find).
For each: the share broken with the full budget and with give_up=h, the forward rows spent (images
through the model, padding included) and CPU seconds. Once give_up drops a point the two runs take
different random draws for the rest, so a point can fall to one run and not the other; both counts
are shown. The rule: benchmarks/results/evaluate.md (notes of 2026-11-30) and advlab/attacks/give_up.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, markdown_table, trained_model  # noqa: E402

EPS = 0.1
OPTIONS = {"apgd-t": {}, "square": {"n_queries": 5000}}


def attack(name, model, x, y, give_up):
    from advlab.attacks import build_attack
    from advlab.passes import PassCounter
    counted = PassCounter(model)
    c0 = time.process_time()
    r = build_attack(name, norm="linf", give_up=give_up, **OPTIONS[name])(counted, x, y, [EPS], bounds=(0.0, 1.0))
    return r.correct[0], counted.forward_rows, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--factors", default="5", help="comma-separated give_up factors to compare with the full run")
    parser.add_argument("--attacks", default="apgd-t,square")
    parser.add_argument("--models", default="FGSM-RS,standard")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from advlab.data import load_dataset
    from advlab.evaluate import evaluate_robustness, get_suite
    x, y = load_dataset("fashion-mnist").test_subset(args.n)
    recipes = {"standard": lambda: trained_model("fm-cnn-standard", epochs=2),
               "FGSM-RS": lambda: trained_model("fm-cnn-fgsmrs", defense="fgsm-rs", eps=EPS, epochs=5)}
    factors = [float(f) for f in args.factors.split(",")]
    suite = get_suite("standard")  # APGD-T and Square run with give_up=None here, the suite's is below
    rows = []
    for name in args.models.split(","):
        model, _ = recipes[name]()
        model.eval()
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        after_ce = evaluate_robustness(model, x, y, [EPS], suite[:1], bounds=(0.0, 1.0), progress=False).robust[0]
        situations = []
        if "apgd-t" in args.attacks:
            situations.append(("apgd-t", "after APGD-CE", after_ce))
        if "square" in args.attacks:
            after_t = evaluate_robustness(model, x, y, [EPS], suite[:2], bounds=(0.0, 1.0), progress=False).robust[0]
            situations += [("square", "after APGD-CE, APGD-T", after_t), ("square", "alone", correct)]
        for attack_name, situation, keep in situations:
            xs, ys = x[keep], y[keep]
            full, full_rows, full_cpu = attack(attack_name, model, xs, ys, None)
            rows.append([name, attack_name, situation, int(keep.sum()), "full", 1 - full.float().mean().item(),
                         full_rows, full_cpu, "", ""])
            print(rows[-1], flush=True)
            for h in factors:
                got, got_rows, got_cpu = attack(attack_name, model, xs, ys, h)
                rows.append([name, attack_name, situation, int(keep.sum()), f"give_up={h:g}",
                             1 - got.float().mean().item(), got_rows, got_cpu, int((~full & got).sum()),
                             int((full & ~got).sum())])
                print(rows[-1], flush=True)
    headers = ["model", "attack", "runs on", "points", "budget", "share broken", "forward rows", "CPU s",
               "broken by full only", "broken by give_up only"]
    text = (f"# give_up: full budget against early give-up (Fashion-MNIST small CNNs, Linf eps {EPS}, "
            f"first {args.n} test images, one thread)\n\n" + markdown_table(headers, rows) + "\n\n"
            "share broken: of the points the attack was run on. forward rows: images through the model, "
            "padding included.\n")
    (RESULTS / f"give_up-{args.attacks.replace(',', '-')}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
