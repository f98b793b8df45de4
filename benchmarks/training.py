"""Adversarial training on Fashion-MNIST: clean / robust accuracy / time for each defense, epoch cost
ratios, and robust self-training with vs without an unlabelled pool.

    nice python benchmarks/training.py                       # every configuration, then the report
    nice python benchmarks/training.py --only cost,fgsm-rs-5 # some of them
    nice python benchmarks/training.py --only pgd7-10 --train-only; ... --reeval pgd7-10   # in two steps
    python benchmarks/training.py --report                   # rebuild benchmarks/results/training.md

Setting (issue 5): small CNN (conv32-conv64-fc128), eps = 0.1 (Linf), Adam with the one-cycle
schedule, batch 128, seed 0; robust accuracy on the first 1,000 test images: "standard" is advlab's
`standard` suite (APGD-CE, APGD-T, Square: AutoAttack's protocol), "robust" the worst case per
image over PGD-50 with the cross-entropy loss and PGD-50 with the margin (CW) loss. Each configuration
writes benchmarks/results/training/NAME.json; the report is built from whatever is there.

Times: wall seconds and CPU seconds of the training process (one thread). On a shared machine
the wall time is inflated by the other jobs; the CPU time is what the run itself used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from advlab import load_run, rng  # noqa: E402
from advlab.attacks import PGD  # noqa: E402
from advlab.data import load_dataset  # noqa: E402
from advlab.defenses.registry import build_defense  # noqa: E402
from advlab.defenses.run import train_run  # noqa: E402
from advlab.defenses.training import TrainConfig, clean_objective  # noqa: E402
from advlab.evaluate import evaluate_robustness, get_suite  # noqa: E402
from advlab.models import build_model  # noqa: E402

EPS = 0.1
N_EVAL = 1000
RESULTS = ROOT / "results" / "training"
RUNS = ROOT.parent / "runs" / "bench-training"
NOTES = ROOT / "results" / "training-notes.md"  # hand-written conclusions, appended to the report

# name -> (defense, defense options, epochs, model options, what it is for)
CONFIGS = {
    "clean-5": ("none", {}, 5, {}, "standard training"),
    "fgsm-rs-5": ("fgsm-rs", {"eps": EPS}, 5, {}, "the reference recipe (Wong et al. 2020)"),
    "fgsm-rs-10": ("fgsm-rs", {"eps": EPS}, 10, {}, "target 1: <= 10 min"),
    "pgd3-5": ("pgd", {"eps": EPS, "steps": 3}, 5, {}, "target 1: <= 10 min"),
    "trades-3x5": ("trades", {"eps": EPS, "steps": 3, "beta": 3.0}, 5, {}, "target 1: <= 10 min"),
    "pgd7-10": ("pgd", {"eps": EPS, "steps": 7}, 10, {}, "target 2: <= 60 min"),
    "rst-5000-pool": ("rst", {"eps": EPS, "labels": 5000, "base": "fgsm-rs", "teacher_epochs": 20}, 5, {},
                      "RST: 5,000 labels + pseudo-labelled pool"),
    "rst-5000-nopool": ("rst", {"eps": EPS, "labels": 5000, "base": "fgsm-rs", "use_pool": False}, 20, {},
                        "RST control: the same 5,000 labels, no pool"),
    "rst-5000-nopool-54": ("rst", {"eps": EPS, "labels": 5000, "base": "fgsm-rs", "use_pool": False}, 54, {},
                           "RST control with as many steps as the pool run (54 x 5,000 ~ 5 x 54,000)"),
}
REFERENCE = {"name": "reference FGSM-RS (issue 5)", "epochs": 5, "clean": 0.872, "pgd50": 0.633,
             "autoattack": 0.582, "seconds": 258}


def robust_eval(run_dir: Path, ds, standard_only: bool = False) -> dict:
    model, card = load_run(run_dir)
    x, y = ds.test_subset(N_EVAL)
    if standard_only:
        return standard_eval(model, x, y, ds)
    out = {}
    t = time.perf_counter()
    r = PGD(steps=50, loss="ce", batch_size=250)(model, x, y, eps=[EPS], bounds=ds.bounds)
    out["clean"], out["pgd50_ce"] = r.clean_accuracy(), r.robust_accuracy()[0]
    # The margin-loss attack only needs to run on the images PGD-50 CE left correct.
    worst = r.correct[0].clone()
    idx = worst.nonzero().flatten()
    if len(idx):
        r2 = PGD(steps=50, loss="margin", batch_size=250)(model, x[idx], y[idx], eps=[EPS], bounds=ds.bounds)
        worst[idx] = r2.correct[0]
    out["robust"] = worst.float().mean().item()
    # Stronger still: DLR loss (scale-invariant, as in APGD-T), 100 steps, 2 restarts, on what is left.
    idx = worst.nonzero().flatten()
    if len(idx):
        r3 = PGD(steps=100, rel_step_size=0.125, loss="dlr", restarts=2, batch_size=250)(
            model, x[idx], y[idx], eps=[EPS], bounds=ds.bounds)
        worst[idx] = r3.correct[0]
    out["robust_strong"] = worst.float().mean().item()
    out["eval_seconds"] = time.perf_counter() - t
    out.update(standard_eval(model, x, y, ds))
    out["robust_attacks"] = ("robust: worst case of PGD-50 CE and PGD-50 margin (random start, step 2.5*eps/50); "
                             "robust_strong: also PGD-100 DLR, 2 restarts, step eps/8")
    return out


def standard_eval(model, x, y, ds) -> dict:
    t = time.perf_counter()
    ev = evaluate_robustness(model, x, y, [EPS], get_suite("standard"), bounds=ds.bounds, batch_size=250,
                             progress=False)
    return {"clean": ev.clean_accuracy(), "standard": ev.robust_accuracy()[0],
            "standard_seconds": time.perf_counter() - t}


def run_config(name: str, ds, evaluate: bool = True) -> dict:
    defense, options, epochs, model_kw, purpose = CONFIGS[name]
    config = TrainConfig(epochs=epochs, batch_size=128, lr=3e-3, seed=0)
    out = RUNS / name
    wall, cpu = time.perf_counter(), time.process_time()
    record = train_run("fashion-mnist", "cnn-small", out, config=config, defense=defense, defense_kwargs=options,
                       model_kwargs=model_kw, overwrite=True, progress=False, log=lambda m: print(m, flush=True))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _, card = load_run(out)
    result = {"name": name, "purpose": purpose, "defense": defense, "options": options, "epochs": epochs,
              "model": {"name": "cnn-small", **model_kw}, "train_wall_seconds": wall, "train_cpu_seconds": cpu,
              "epoch_seconds": [m["epoch_seconds"] for m in card["metrics"]["history"]],
              "stop_reason": card["metrics"].get("stop_reason"), "test_accuracy_full": record["test_accuracy"],
              "rst": card["metrics"].get("rst")}
    if evaluate:
        result.update(robust_eval(out, ds))
    return result


def epoch_costs(ds, batches: int = 30) -> dict:
    """Per-batch cost of each objective relative to clean training, interleaved batch by batch in one
    process so that load from other jobs hits every objective alike; medians over the batches."""
    mean, std = ds.channel_stats()
    with rng.seeded(0):
        net = build_model("cnn-small", ds.input_shape, 10, {"mean": mean, "std": std})
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = rng.generator(0)
    objectives = {"clean": clean_objective,
                  "fgsm-rs": build_defense("fgsm-rs", eps=EPS, bounds=ds.bounds),
                  **{f"pgd-{k}": build_defense("pgd", eps=EPS, steps=k, bounds=ds.bounds) for k in (3, 7)},
                  "trades-3": build_defense("trades", eps=EPS, steps=3, bounds=ds.bounds)}
    wall = {k: [] for k in objectives}
    cpu = {k: [] for k in objectives}
    net.train()
    for b in range(batches + 2):
        x, y = ds.x_train[b * 128:(b + 1) * 128], ds.y_train[b * 128:(b + 1) * 128]
        for name, objective in objectives.items():
            t, c = time.perf_counter(), time.process_time()
            loss, _ = objective(net, x, y, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if b >= 2:  # warm-up
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    medw = {k: statistics.median(v) for k, v in wall.items()}
    return {"batches": batches, "batch_size": 128, "cpu_ms": {k: 1000 * v for k, v in med.items()},
            "wall_ms": {k: 1000 * v for k, v in medw.items()},
            "ratio_cpu": {k: v / med["clean"] for k, v in med.items()},
            "ratio_wall": {k: v / medw["clean"] for k, v in medw.items()},
            "targets": {"fgsm-rs": 2.1, "pgd-3": 4 * 1.1, "pgd-7": 8 * 1.1, "trades-3": None}}


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def report() -> str:
    rows = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    lines = ["# Adversarial training on Fashion-MNIST (issue 5)", "",
             "Small CNN (conv32-conv64-fc128), eps = 0.1 Linf, Adam + one-cycle (peak 3e-3), batch 128, seed 0, "
             "54,000 training / 6,000 validation images; accuracies on the first 1,000 test images. "
             "**standard** = advlab's `standard` evaluation suite (APGD-CE, APGD-T over 9 targets, Square 5000 "
             "queries with give_up=5; AutoAttack's protocol without FAB-T), the number the targets refer to (runs measured before the suite "
             "existed show '-'). **Robust** = worst case per image over PGD-50 (CE) and PGD-50 (margin loss), "
             "random start. **+ DLR-100x2** adds PGD-100 with the DLR loss, 2 restarts, step eps/8, on the points "
             "still robust.", "",
             "Measured on the shared 2-core machine with `nice` and one thread per process, with other "
             "developers' jobs running (load average 5-10): **wall times are inflated** several-fold. "
             "CPU seconds are what the training process itself used, the better estimate of a quiet run.", "",
             "| run | defense | epochs | clean | standard | PGD-50 CE | robust | + DLR-100x2 | train wall s | train CPU s "
             "| note |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             f"| {REFERENCE['name']} | fgsm-rs | 5 | {REFERENCE['clean']:.3f} | AA {REFERENCE['autoattack']:.3f} | "
             f"{REFERENCE['pgd50']:.3f} | - | - | {REFERENCE['seconds']} (quiet) | - | reference |"]
    for name, r in rows.items():
        if name == "cost" or "clean" not in r:  # "cost", or trained with --train-only and not evaluated yet
            continue
        note = r["purpose"] + (f"; stopped: {r['stop_reason']}" if r.get("stop_reason") else "")
        if r.get("rst"):
            note += f"; pseudo-label acc {r['rst'].get('pseudo_label_accuracy', float('nan')):.3f}" \
                if "pseudo_label_accuracy" in r["rst"] else ""
        lines.append(f"| {name} | {r['defense']} {_opts(r['options'])} | {r['epochs']} | {r['clean']:.3f} | "
                     f"{_num(r.get('standard'))} | {_num(r.get('pgd50_ce'))} | {_num(r.get('robust'))} | {_num(r.get('robust_strong'))} | "
                     f"{r['train_wall_seconds']:.0f} | {r['train_cpu_seconds']:.0f} | {note} |")
    rst = [n for n in ("rst-5000-pool", "rst-5000-nopool", "rst-5000-nopool-54", "fgsm-rs-5") if n in rows]
    if rst:
        lines += ["", "## Robust self-training: 5,000 labels, with and without the unlabelled pool", "",
                  "FGSM-RS as the base defense (the cheapest); the teacher is the same small CNN trained cleanly for "
                  "20 epochs on the 5,000 labels, and pseudo-labels the other 49,000 training images. Joint "
                  "variant (labelled and pseudo-labelled images shuffled together).", "",
                  "| run | labelled | pseudo-labelled | pseudo-label acc | optimizer steps | clean | robust | "
                  "+ DLR-100x2 |", "|---|---|---|---|---|---|---|---|"]
        for n in rst:
            r = rows[n]
            info = r.get("rst") or {"n_labelled": 54000, "n_pool": 0}
            n_train = info["n_labelled"] + info["n_pool"]
            steps = r["epochs"] * -(-n_train // 128)
            acc = info.get("pseudo_label_accuracy")
            lines.append(f"| {n} | {info['n_labelled']} | {info['n_pool']} | {f'{acc:.3f}' if acc else '-'} | "
                         f"{steps} | {r['clean']:.3f} | {r['robust']:.3f} | {r.get('robust_strong', float('nan')):.3f} |")
    if NOTES.exists():
        lines += ["", NOTES.read_text().strip()]
    if "cost" in rows:
        c = rows["cost"]
        lines += ["", "## Epoch cost against clean training (same model and data, one process)", "",
                  f"Median over {c['batches']} batches of {c['batch_size']}, objectives interleaved batch by batch "
                  "so that load from other jobs hits all of them alike.", "",
                  "| objective | CPU ms / batch | ratio (CPU) | ratio (wall) | target |", "|---|---|---|---|---|"]
        for k in c["cpu_ms"]:
            t = c["targets"].get(k)
            lines.append(f"| {k} | {c['cpu_ms'][k]:.1f} | {c['ratio_cpu'][k]:.2f} | {c['ratio_wall'][k]:.2f} | "
                         f"{'<= %.2f' % t if t else '-'} |")
    return "\n".join(lines) + "\n"


def _opts(options: dict) -> str:
    shown = {k: v for k, v in options.items() if k != "eps"}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None, help=f"comma-separated: cost,{','.join(CONFIGS)}")
    parser.add_argument("--report", action="store_true", help="only rebuild the markdown report")
    parser.add_argument("--reeval", default=None, help="comma-separated runs to evaluate again (no training)")
    parser.add_argument("--train-only", action="store_true",
                        help="train and save the runs; evaluate them later with --reeval")
    parser.add_argument("--standard-only", action="store_true",
                        help="with --reeval: only the `standard` suite (the PGD columns show '-')")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.reeval:
        ds = load_dataset("fashion-mnist")
        for name in args.reeval.split(","):
            path = RESULTS / f"{name}.json"
            result = {**json.loads(path.read_text()), **robust_eval(RUNS / name, ds, args.standard_only)}
            path.write_text(json.dumps(result, indent=1))
            print(name, {k: result.get(k) for k in ("clean", "standard", "pgd50_ce", "robust", "robust_strong")},
                  flush=True)
    elif not args.report:
        names = args.only.split(",") if args.only else ["cost", *CONFIGS]
        ds = load_dataset("fashion-mnist")
        for name in names:
            print(f"== {name}", flush=True)
            result = epoch_costs(ds) if name == "cost" else run_config(name, ds, not args.train_only)
            (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
            print(json.dumps(result)[:400], flush=True)
    (ROOT / "results" / "training.md").write_text(report())


if __name__ == "__main__":
    main()
