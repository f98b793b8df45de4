"""GPU benchmark: a ResNet-18 trained and attacked on one GPU, advlab beside its peers, in one process.

    benchmarks/.env-peers/bin/python benchmarks/gpu.py                 (about 5 minutes on one GPU)
    python benchmarks/gpu.py --small --device cpu --out /tmp/gpu.md     (CPU smoke run, ~15 s)
    benchmarks/.env-peers/bin/python benchmarks/gpu.py --precision fp32,bf16,fp16 --graphs   (+ step 4)

1. Trains `resnet18` (CIFAR stem, 1 channel) on Fashion-MNIST with FGSM + random start (Wong et al.
   2020), eps 0.1, 3 epochs, Adam one-cycle to 3e-3, batch 128, with advlab's Trainer on the device;
   prints the clean accuracy on the 10,000 test images.
2. PGD-20, Linf eps 0.1, step 0.01, one random start, on the 10,000 test images: advlab
   (`advlab.attacks.PGD`, its evaluation path: clean mistakes are skipped and a point leaves the batch
   once broken) against torchattacks' PGD with the same settings, at batch 500 and at batch 10,000.
   A warm-up call of each first, then `--repeats` interleaved runs; seconds are medians.
3. advlab's `standard` suite (APGD-CE, APGD-T, Square) against AutoAttack standard (pyautoattack, or
   the `autoattack` package) on the first 1,000 test images, batch 500, one run each.

4. With `--precision` naming more than fp32, or `--graphs`: advlab's PGD-20 (at the largest batch)
   and its suite again for every other search setting (bf16 / fp16 search under autocast, every
   break verified in fp32, advlab.precision; CUDA graphs, advlab.graphs), each beside advlab fp32:
   robust accuracy (lower = stronger) and seconds (fp32 seconds / these seconds).

Peers come from benchmarks/.env-peers (benchmarks/run_all.py creates it; no network needed after
that); one that is not importable is skipped with a note in the table. No file is downloaded:
Fashion-MNIST comes from advlab.load_dataset (`apt-get install dataset-fashion-mnist`).

`--small` is a smoke run in well under a minute on a CPU (about 15 s on 2 cores): width 8, 540
training images (batch 16), 1 epoch, clean accuracy on 500 test images, PGD on 100 images at batches
25 and 100, and a cheap suite on 50 (APGD-CE and APGD-T with 10 steps and 3 targets, Square with 50
queries; AutoAttack, when importable, runs the same cheap attacks with the same settings).

Results: a dated section appended to `--out` (default benchmarks/results/gpu.md) with the device,
torch version, the settings and a table | setting | advlab | peer | advlab vs peer |. A new file
starts with the H200 baseline of 2026-12-04 (shared/REFERENCES.md, "Measured on a GPU").
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, markdown_table  # noqa: E402

EPS, ALPHA, STEPS = 0.1, 0.01, 20
BOUNDS = (0.0, 1.0)

BASELINE = """# GPU benchmark: ResNet-18 on Fashion-MNIST, advlab vs torchattacks and AutoAttack

Written by `benchmarks/gpu.py`; every run appends a dated section below.

Baseline (one H200, torch 2.11 cu130, 2026-12-04, advlab through the Python API; shared/REFERENCES.md):
ResNet-18 (CIFAR stem, 1 channel) trained 3 epochs FGSM-RS on Fashion-MNIST (clean .84-.87), eps .1.

| setting | advlab | peer | advlab vs peer |
|---|---|---|---|
| PGD-20 seconds, 10,000 images, batch 500 | 4.56 | 3.62 (torchattacks) | 0.79x |
| PGD-20 seconds, 10,000 images, batch 10,000 | 2.85 | 3.26 (torchattacks) | 1.14x |
| PGD-20 robust accuracy (GPU; CPU .750) | 0.749 | - | - |
| standard suite robust accuracy, 1,000 images | 0.673 | 0.679 (AutoAttack) | -0.006 |
| standard suite seconds, 1,000 images | 80.0 (Square 57.5) | 115.6 (AutoAttack) | 1.45x |

A plain fp32 PGD-20 loop took 3.26-3.62 s (~60k image-steps/s), a plain bf16 loop 2.08-2.63 s;
advlab's PGD spent 47% of host time in cudaStreamSynchronize. cnn-small FGSM-RS: standard suite
40.2 s (.714) vs AutoAttack 46.9 s (.716). "advlab vs peer" is advlab minus the peer for robust
accuracies (lower = stronger attack) and peer seconds / advlab seconds for times (above 1x = advlab
faster).
"""


@dataclass
class Scale:
    width: int            # ResNet-18 base channels
    n_train: int | None   # training images before the 10% validation split (None: all 60,000)
    epochs: int
    train_batch: int
    n_clean: int | None   # test images for the clean accuracy (None: all 10,000)
    n_attack: int         # PGD images (the first n of the test split)
    batches: tuple        # PGD batch sizes
    n_suite: int          # standard-suite images
    repeats: int


FULL = Scale(width=64, n_train=None, epochs=3, train_batch=128, n_clean=None, n_attack=10_000, batches=(500, 10_000),
             n_suite=1000, repeats=3)
SMALL = Scale(width=8, n_train=600, epochs=1, train_batch=16, n_clean=500, n_attack=100, batches=(25, 100),
              n_suite=50, repeats=1)
# The cheap suite of --small, and the matching AutoAttack settings.
CHEAP = {"apgd_steps": 10, "n_target_classes": 3, "square_queries": 50}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device}, CUDA {torch.version.cuda})"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """(seconds, result) with the device's queue drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


# -- 1. training ----------------------------------------------------------------------------------
def train(ds, scale: Scale, device: torch.device, seed: int = 0):
    """ResNet-18 trained with FGSM-RS at EPS by advlab's Trainer on `device`; returns (model, seconds)."""
    from advlab import rng
    from advlab.data import holdout_split
    from advlab.defenses import TrainConfig, Trainer, build_defense
    from advlab.models import build_model

    x, y = ds.x_train, ds.y_train
    if scale.n_train is not None:
        x, y = x[:scale.n_train], y[:scale.n_train]
    split = holdout_split(x, y, val=0.1, seed=seed)
    mean, std = ds.channel_stats()
    with rng.seeded(seed):
        model = build_model("resnet18", ds.input_shape, ds.num_classes, {"mean": mean, "std": std},
                            width=scale.width).to(device)
    objective = build_defense("fgsm-rs", eps=EPS, bounds=ds.bounds)
    config = TrainConfig(epochs=scale.epochs, batch_size=scale.train_batch, lr=3e-3, seed=seed)
    trainer = Trainer(model, split.x_train, split.y_train, split.x_val, split.y_val, config=config,
                      objective=objective, hooks=objective.hooks(split.x_val, split.y_val), progress=False,
                      log=lambda m: print("  " + m, flush=True))
    seconds, result = timed(trainer.fit, device)
    if result.stop_reason:
        print(f"  training stopped: {result.stop_reason}", flush=True)
    return model.eval(), seconds


# -- 2. PGD-20: advlab vs torchattacks --------------------------------------------------------------
def pgd_advlab(model, x, y, batch):
    from advlab.attacks import PGD
    attack = PGD(norm="linf", steps=STEPS, step_size=ALPHA, random_start=True, batch_size=batch, seed=0)
    return attack(model, x, y, [EPS], bounds=BOUNDS).robust_accuracy()[0]


def pgd_advlab_shrinking(model, x, y, batch):
    """advlab's PGD with the CPU's early stopping (the batch shrinks, a host sync per step): the
    engine's device masks (docs/engine.md) are the difference to `pgd_advlab` on a GPU."""
    from advlab.attacks import PGD
    attack = PGD(norm="linf", steps=STEPS, step_size=ALPHA, random_start=True, batch_size=batch, seed=0,
                 sync_free=False)
    return attack(model, x, y, [EPS], bounds=BOUNDS).robust_accuracy()[0]


def pgd_torchattacks(model, x, y, batch):
    import torchattacks
    device = next(model.parameters()).device
    torch.manual_seed(0)  # torchattacks draws its random start from the global RNG
    atk = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
        adv = atk(xb, yb)  # (B, 1, 28, 28) on the device
        with torch.no_grad():
            correct += (model(adv).argmax(1) == yb).sum()
    return correct.item() / len(x)


def peer_missing(module: str) -> str | None:
    """None when `module` imports, else why not (the peer is then skipped, and the table says so)."""
    try:
        __import__(module)
    except Exception as e:  # not installed, or broken
        return f"{module} not importable ({type(e).__name__}: {e})".replace("|", "/")
    return None


def bench_pgd(model, x, y, scale: Scale, device: torch.device, rows: list, notes: list) -> None:
    model.eval()
    runners = {"advlab": pgd_advlab}
    if device.type != "cpu":
        runners["advlab shrinking batch"] = pgd_advlab_shrinking
    missing = peer_missing("torchattacks")
    if missing:
        notes.append(f"PGD peer skipped: {missing}.")
        print(f"  {missing}: torchattacks skipped", flush=True)
    else:
        runners["torchattacks"] = pgd_torchattacks
    warm = min(scale.batches[0], len(x))
    for run in runners.values():  # warm-up: CUDA context, kernels, allocator
        timed(lambda: run(model, x[:warm], y[:warm], warm), device)
    for batch in scale.batches:
        times: dict[str, list[float]] = {n: [] for n in runners}
        accs: dict[str, float] = {}
        for _ in range(scale.repeats):  # interleaved, so machine noise hits both alike
            for name, run in runners.items():
                t, accs[name] = timed(lambda: run(model, x, y, batch), device)
                times[name].append(t)
        med = {n: statistics.median(t) for n, t in times.items()}
        for name in runners:
            print(f"  PGD-20 batch {batch}: {name} robust {accs[name]:.4f}, median {med[name]:.2f} s "
                  f"(runs {', '.join(f'{t:.2f}' for t in times[name])})", flush=True)
        what = f"{len(x):,} images, batch {batch:,}"
        peer = "torchattacks" in runners
        rows.append([f"PGD-20 robust accuracy, {what}", f"{accs['advlab']:.4f}",
                     f"{accs['torchattacks']:.4f} (torchattacks)" if peer else "skipped",
                     f"{round(accs['advlab'] - accs['torchattacks'], 4) + 0.0:+.4f}" if peer else "-"])
        rows.append([f"PGD-20 seconds (median of {scale.repeats}), {what}", f"{med['advlab']:.2f}",
                     f"{med['torchattacks']:.2f} (torchattacks)" if peer else "skipped",
                     f"{med['torchattacks'] / med['advlab']:.2f}x" if peer else "-"])
        if "advlab shrinking batch" in med:
            rows.append([f"PGD-20 seconds, {what}, advlab with a shrinking batch (sync_free=False)",
                         f"{med['advlab shrinking batch']:.2f}", f"{med['advlab']:.2f} (advlab, device masks)",
                         f"{med['advlab shrinking batch'] / med['advlab']:.2f}x"])


# -- 3. standard suite vs AutoAttack -----------------------------------------------------------------
def suite_advlab(model, x, y, small: bool, precision: str = "fp32", graphs: bool = False):
    from advlab.evaluate import evaluate_robustness, get_suite
    from advlab.evaluate.suites import SuiteEntry
    suite = get_suite("standard")
    if small:  # the same three attacks, cheap
        suite = [SuiteEntry("apgd-ce", "apgd-ce", {"steps": CHEAP["apgd_steps"]}),
                 SuiteEntry("apgd-t", "apgd-t", {"steps": CHEAP["apgd_steps"],
                                                 "n_target_classes": CHEAP["n_target_classes"]}),
                 SuiteEntry("square", "square", {"n_queries": CHEAP["square_queries"], "give_up": 5.0})]
    ev = evaluate_robustness(model, x, y, [EPS], suite, bounds=BOUNDS, batch_size=500, progress=False,
                             precision=precision, graphs=graphs)
    return ev.robust_accuracy()[0], ev.attack_seconds


def autoattack_module() -> tuple[str | None, str | None]:
    """(module name, None) for the first AutoAttack package that imports, else (None, why not)."""
    why = []
    for module in ("pyautoattack", "autoattack"):
        missing = peer_missing(module)
        if missing is None:
            return module, None
        why.append(missing)
    return None, "; ".join(why)


def suite_autoattack(model, x, y, module: str, small: bool, device: torch.device) -> float:
    AutoAttack = __import__(module).AutoAttack
    if small:
        attacks = ["apgd-ce", "apgd-t", "square"]
        kwargs = {"attacks": attacks} if module == "pyautoattack" else {"attacks_to_run": attacks}
        adversary = AutoAttack(model, norm="Linf", eps=EPS, version="custom", device=device, seed=0, **kwargs)
        adversary.apgd.n_restarts = 1
        for apgd in (adversary.apgd, adversary.apgd_targeted):
            # APGD derives its step-size checkpoints from n_iter in __init__: set them as it would
            n = apgd.n_iter = CHEAP["apgd_steps"]
            apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = max(int(0.22 * n), 1), max(int(0.06 * n), 1), \
                max(int(0.03 * n), 1)
        adversary.apgd_targeted.n_target_classes = CHEAP["n_target_classes"]
        adversary.square.n_queries = CHEAP["square_queries"]
    else:
        adversary = AutoAttack(model, norm="Linf", eps=EPS, version="standard", device=device, seed=0)
    adversary.verbose = False
    if module == "pyautoattack":
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=500)  # returns (x_adv, y_adv)
    else:
        x_adv = adversary.run_standard_evaluation(x, y, bs=500)
    from advlab.predict import predict_logits
    return (predict_logits(model, x_adv).argmax(1) == y).float().mean().item()


def bench_suite(model, x, y, small: bool, device: torch.device, rows: list, notes: list) -> tuple[float, float]:
    seconds, (acc, per_attack) = timed(lambda: suite_advlab(model, x, y, small), device)
    # evaluate_robustness (c748815) can hand the model back in train mode; AutoAttack must see eval mode
    model.eval()
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in per_attack.items())
    print(f"  advlab {'cheap' if small else 'standard'} suite: robust {acc:.4f} in {seconds:.1f} s ({stages})",
          flush=True)
    module, why = autoattack_module()
    if module is None:
        notes.append(f"AutoAttack skipped: {why}.")
        print(f"  {why}: AutoAttack skipped", flush=True)
    else:
        aa_seconds, aa_acc = timed(lambda: suite_autoattack(model, x, y, module, small, device), device)
        print(f"  AutoAttack ({module}): robust {aa_acc:.4f} in {aa_seconds:.1f} s", flush=True)
    name = "cheap suite (APGD-CE, APGD-T, Square)" if small else "standard suite"
    peer = f"AutoAttack{' (same cheap attacks)' if small else ''}"
    rows.append([f"{name} robust accuracy, {len(x):,} images", f"{acc:.4f}",
                 f"{aa_acc:.4f} ({peer})" if module else "skipped",
                 f"{round(acc - aa_acc, 4) + 0.0:+.4f}" if module else "-"])
    rows.append([f"{name} seconds, {len(x):,} images", f"{seconds:.1f} ({stages})",
                 f"{aa_seconds:.1f} ({peer})" if module else "skipped",
                 f"{aa_seconds / seconds:.2f}x" if module else "-"])
    return acc, seconds


# -- 4. search precision and CUDA graphs -------------------------------------------------------------
def search_label(precision: str, graphs: bool) -> str:
    what = "fp32" if precision == "fp32" else f"{precision} search, fp32-verified"
    return what + (", CUDA graphs" if graphs else "")


def search_settings(precisions: list[str], graphs: bool) -> list[tuple[str, bool]]:
    """Every (precision, graphs) setting to measure beside plain fp32 (which steps 2 and 3 measured)."""
    return [(p, g) for p in precisions for g in ((False, True) if graphs else (False,)) if (p, g) != ("fp32", False)]


def bench_search(model, x, y, xs, ys, scale: Scale, device: torch.device, settings: list[tuple[str, bool]],
                 suite_fp32: tuple[float, float] | None, small: bool, rows: list, notes: list) -> None:
    """PGD-20 at the largest batch (and the suite, when suite_fp32 = its fp32 (accuracy, seconds) is given)
    in every search setting, beside advlab fp32."""
    from advlab.attacks import PGD
    from advlab.precision import with_precision
    batch = min(scale.batches[-1], len(x))

    def pgd(precision, graphs):
        attack = with_precision(PGD(norm="linf", steps=STEPS, step_size=ALPHA, random_start=True, batch_size=batch,
                                    seed=0), precision, graphs)
        return attack(model, x, y, [EPS], bounds=BOUNDS).robust_accuracy()[0]

    runs = [("fp32", False), *settings]
    times: dict[tuple, list[float]] = {s: [] for s in runs}
    accs: dict[tuple, float] = {}
    for s in runs:  # warm-up: autocast kernels, graph capture
        timed(lambda s=s: pgd(*s), device)
    for _ in range(scale.repeats):
        for s in runs:
            t, accs[s] = timed(lambda s=s: pgd(*s), device)
            times[s].append(t)
    med = {s: statistics.median(t) for s, t in times.items()}
    what = f"{len(x):,} images, batch {batch:,}"
    base = ("fp32", False)
    for s in settings:
        label = search_label(*s)
        print(f"  PGD-20 {label}: robust {accs[s]:.4f} (fp32 {accs[base]:.4f}), median {med[s]:.2f} s "
              f"(fp32 {med[base]:.2f} s)", flush=True)
        rows.append([f"PGD-20 robust accuracy, {what}, {label}", f"{accs[s]:.4f}", f"{accs[base]:.4f} (advlab fp32)",
                     f"{round(accs[s] - accs[base], 4) + 0.0:+.4f}"])
        rows.append([f"PGD-20 seconds (median of {scale.repeats}), {what}, {label}", f"{med[s]:.2f}",
                     f"{med[base]:.2f} (advlab fp32)", f"{med[base] / med[s]:.2f}x"])
    if device.type != "cuda" and any(g for _, g in settings):
        notes.append("--graphs without CUDA runs eagerly: its rows measure the eager path.")
    if suite_fp32 is None:
        return
    name = "cheap suite" if small else "standard suite"
    for s in settings:
        label = search_label(*s)
        seconds, (acc, _) = timed(lambda s=s: suite_advlab(model, xs, ys, small, *s), device)
        print(f"  advlab {name} {label}: robust {acc:.4f} in {seconds:.1f} s", flush=True)
        rows.append([f"{name} robust accuracy, {len(xs):,} images, {label}", f"{acc:.4f}",
                     f"{suite_fp32[0]:.4f} (advlab fp32)", f"{round(acc - suite_fp32[0], 4) + 0.0:+.4f}"])
        rows.append([f"{name} seconds, {len(xs):,} images, {label}", f"{seconds:.1f}",
                     f"{suite_fp32[1]:.1f} (advlab fp32)", f"{suite_fp32[1] / seconds:.2f}x"])


# -- the report ---------------------------------------------------------------------------------------
def write_section(out: Path, args, scale: Scale, device: torch.device, rows: list, notes: list,
                  train_seconds: float, total: float) -> None:
    settings = (f"resnet18 width {scale.width}, FGSM-RS eps {EPS}, {scale.epochs} epoch(s) on "
                f"{'54,000' if scale.n_train is None else f'{int(scale.n_train * 0.9):,}'} training images, "
                f"batch {scale.train_batch} "
                f"({train_seconds:.1f} s); PGD-20 Linf eps {EPS} step {ALPHA} on the first {scale.n_attack:,} test "
                f"images; suite on the first {scale.n_suite:,}")
    lines = [f"## {time.strftime('%Y-%m-%d %H:%M')}{' (--small smoke run)' if args.small else ''}", "",
             f"Device: {device_name(device)}; torch {torch.__version__}; Python {platform.python_version()}.",
             f"Settings: {settings}. Total {total:.0f} s.", "", markdown_table(["setting", "advlab", "peer",
                                                                                 "advlab vs peer"], rows), ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "" if out.exists() and out.stat().st_size else BASELINE
    with open(out, "a") as f:
        f.write(text + "\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N (auto = CUDA when available)")
    parser.add_argument("--small", action="store_true", help="CPU smoke run in well under a minute")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.md", help="results file (a section is appended)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="PGD repeats per library and batch size (default 3; 1 with --small)")
    parser.add_argument("--precision", default="fp32",
                        help="search precisions to measure, comma-separated from fp32,bf16,fp16 (step 4 for each "
                             "but fp32; every break verified in fp32)")
    parser.add_argument("--graphs", action="store_true", help="also measure each precision with CUDA graphs (step 4)")
    args = parser.parse_args(argv)
    from advlab.device import resolve_device
    from advlab.errors import AdvlabError
    try:
        device = resolve_device(args.device)
    except AdvlabError as e:  # e.g. --device cuda on a machine without a GPU: one line, exit 2
        print(f"gpu.py: {e}", file=sys.stderr)
        return 2
    if device.type == "cpu" and not args.small and args.device == "auto":
        print("gpu.py: no GPU here; the full-size benchmark would take hours on a CPU. Run it on a GPU, "
              "use --small for a smoke run, or pass --device cpu to run it anyway.", flush=True)
        return 0
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    bad = [p for p in precisions if p not in ("fp32", "bf16", "fp16")]
    if bad or not precisions:
        print(f"gpu.py: --precision takes fp32, bf16, fp16 (comma-separated), got {args.precision!r}", file=sys.stderr)
        return 2
    settings = search_settings(precisions, args.graphs)
    scale = SMALL if args.small else FULL
    if args.repeats is not None:
        scale = dataclasses.replace(scale, repeats=max(1, args.repeats))
    started = time.perf_counter()
    print(f"device {device_name(device)}, torch {torch.__version__}", flush=True)
    from advlab import load_dataset
    ds = load_dataset("fashion-mnist")
    if tuple(ds.bounds) != BOUNDS:
        raise SystemExit(f"expected Fashion-MNIST in {BOUNDS}, got bounds {ds.bounds}")

    print(f"1. training resnet18 (width {scale.width}), FGSM-RS eps {EPS}, {scale.epochs} epoch(s)", flush=True)
    model, train_seconds = train(ds, scale, device)
    x, y = ds.test_subset(scale.n_attack)
    from advlab.predict import predict_logits
    xc, yc = ds.test_subset(scale.n_clean)
    clean = (predict_logits(model, xc).argmax(1) == yc).float().mean().item()
    print(f"  clean accuracy {clean:.4f} on {len(yc):,} test images; trained in {train_seconds:.1f} s", flush=True)
    rows = [[f"clean accuracy, {len(yc):,} test images", f"{clean:.4f}", "-", "-"],
            [f"FGSM-RS training seconds, {scale.epochs} epoch(s)", f"{train_seconds:.1f}", "-", "-"]]
    notes: list[str] = []

    print(f"2. PGD-20 on {len(x):,} images, batches {', '.join(map(str, scale.batches))}", flush=True)
    bench_pgd(model, x, y, scale, device, rows, notes)

    xs, ys = ds.test_subset(scale.n_suite)
    print(f"3. {'cheap' if args.small else 'standard'} suite vs AutoAttack on {len(xs):,} images", flush=True)
    suite_fp32 = bench_suite(model, xs, ys, args.small, device, rows, notes)

    if settings:
        print(f"4. search settings: {', '.join(search_label(*s) for s in settings)}", flush=True)
        bench_search(model, x, y, xs, ys, scale, device, settings, suite_fp32, args.small, rows, notes)

    total = time.perf_counter() - started
    write_section(args.out, args, scale, device, rows, notes, train_seconds, total)
    print(markdown_table(["setting", "advlab", "peer", "advlab vs peer"], rows))
    print(f"{total:.0f} s in total; appended to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
