"""What a shortcut saves, and what it misses: an attack with its full budget against the same attack with a
shortcut (give_up, Square's screen), side by side on the same points.

    python benchmarks/give_up.py [--n 300] [--factors 5] [--attacks apgd-t,square]
    python benchmarks/give_up.py --models pgd-at,trades,quantize --n 200 \\
        --variants "square:give_up=1,screen=1000;square:give_up=1,screen=250;apgd-ce:give_up=3" --out NAME
    (writes benchmarks/results/give_up-ATTACKS.md, or give_up-NAME.md)

Linf eps 0.1, seed 0, Fashion-MNIST: the small CNNs of attack_speed.py (standard, FGSM-RS) or any model of
the panel (benchmarks/panel_models.py), first N test images, one thread. Each attack runs where the
`standard` suite runs it:
- APGD-CE (100 steps) on every correctly classified image;
- APGD-T (9 targets, 100 steps) on the images APGD-CE leaves robust;
- Square (5,000 queries) on the images APGD-CE and APGD-T leave robust, and alone on every
  correctly classified image (where it has most to find: a stand-in for a model whose gradients mislead).
For each: the share broken with the full budget and with each shortcut, the forward (and backward) rows spent
(images through the model, padding included) and CPU seconds. Once a shortcut drops a point the two runs take
different random draws for the rest, so a point can fall to one run and not the other; both counts are shown.
The rules: docs/evaluate.md, advlab/attacks/give_up.py, advlab/attacks/square.py.
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
OPTIONS = {"apgd-ce": {}, "apgd-t": {}, "square": {"n_queries": 5000}}


def attack(name, model, x, y, options):
    from advlab.attacks import build_attack
    from advlab.passes import PassCounter
    counted = PassCounter(model)
    c0 = time.process_time()
    r = build_attack(name, norm="linf", **{**OPTIONS[name], **options})(counted, x, y, [EPS], bounds=(0.0, 1.0))
    return r.correct[0], counted.counts(), time.process_time() - c0


def parse_variants(text: str) -> list[tuple[str, dict]]:
    """'square:give_up=1,screen=250;apgd-ce:give_up=3' -> [("square", {...}), ("apgd-ce", {...})]."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(";"))):
        name, _, opts = item.partition(":")
        options = {}
        for kv in filter(None, opts.split(",")):
            k, _, v = kv.partition("=")
            options[k.strip()] = int(v) if v.strip().isdigit() else float(v)
        out.append((name.strip(), options))
    return out


def recipes():
    import panel_models
    legacy = {"standard": lambda: trained_model("fm-cnn-standard", epochs=2)[0],
              "FGSM-RS": lambda: trained_model("fm-cnn-fgsmrs", defense="fgsm-rs", eps=EPS, epochs=5)[0]}
    return {**{k: v[0] for k, v in panel_models.PANEL.items()}, **legacy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--factors", default="5", help="comma-separated give_up factors to compare with the full run")
    parser.add_argument("--attacks", default="apgd-t,square")
    parser.add_argument("--variants", help="instead of --factors/--attacks: ATTACK:OPT=V,OPT=V;... (each against "
                                           "the full budget of its attack)")
    parser.add_argument("--models", default="FGSM-RS,standard")
    parser.add_argument("--situations", default="all", help="for square: after,alone or all")
    parser.add_argument("--out", help="results file name: give_up-OUT.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from advlab.data import load_dataset
    from advlab.evaluate import evaluate_robustness, get_suite
    x, y = load_dataset("fashion-mnist").test_subset(args.n)
    if args.variants:
        variants = parse_variants(args.variants)
    else:
        variants = [(a, {"give_up": float(f)}) for a in args.attacks.split(",") for f in args.factors.split(",")]
    attacks = list(dict.fromkeys(a for a, _ in variants))
    suite = get_suite("standard")  # APGD-T and Square run with give_up=None here, the suite's is below
    models = recipes()
    rows = []
    for name in args.models.split(","):
        model = models[name]()
        model.eval()
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        situations = []
        if "apgd-ce" in attacks:
            situations.append(("apgd-ce", "all correct", correct))
        if "apgd-t" in attacks:
            after_ce = evaluate_robustness(model, x, y, [EPS], suite[:1], bounds=(0.0, 1.0), progress=False).robust[0]
            situations.append(("apgd-t", "after APGD-CE", after_ce))
        if "square" in attacks:
            if args.situations in ("all", "after"):
                after_t = evaluate_robustness(model, x, y, [EPS], suite[:2], bounds=(0.0, 1.0),
                                              progress=False).robust[0]
                situations.append(("square", "after APGD-CE, APGD-T", after_t))
            if args.situations in ("all", "alone"):
                situations.append(("square", "alone", correct))
        for attack_name, situation, keep in situations:
            xs, ys = x[keep], y[keep]
            full, full_p, full_cpu = attack(attack_name, model, xs, ys, {})
            rows.append([name, attack_name, situation, int(keep.sum()), "full", 1 - full.float().mean().item(),
                         full_p["forward"], full_p["backward"], full_cpu, "", ""])
            print(rows[-1], flush=True)
            for a, options in variants:
                if a != attack_name:
                    continue
                got, got_p, got_cpu = attack(attack_name, model, xs, ys, options)
                label = ", ".join(f"{k}={v:g}" for k, v in options.items())
                rows.append([name, attack_name, situation, int(keep.sum()), label, 1 - got.float().mean().item(),
                             got_p["forward"], got_p["backward"], got_cpu, int((~full & got).sum()),
                             int((full & ~got).sum())])
                print(rows[-1], flush=True)
    headers = ["model", "attack", "runs on", "points", "budget", "share broken", "forward rows", "backward rows",
               "CPU s", "broken by full only", "broken by shortcut only"]
    text = (f"# Shortcuts: full budget against early give-up and screens (Fashion-MNIST, Linf eps {EPS}, "
            f"first {args.n} test images, one thread, torch {torch.__version__})\n\n" + markdown_table(headers, rows)
            + "\n\nshare broken: of the points the attack was run on. rows: images through the model, padding "
              "included.\n")
    out = RESULTS / f"give_up-{args.out or '-'.join(attacks)}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
