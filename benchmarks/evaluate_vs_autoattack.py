"""advlab's `standard` evaluation suite against AutoAttack (pyautoattack, standard version), issue 19.

    benchmarks/.env-peers/bin/python benchmarks/evaluate_vs_autoattack.py --reuse-autoattack
    benchmarks/.env-peers/bin/python benchmarks/evaluate_vs_autoattack.py --models FGSM-RS standard --n 500 1000

Same models (the Fashion-MNIST small CNNs of benchmarks/common.py: standard, and FGSM + random start
at eps 0.1), same first N test images (1,000 by default), Linf eps 0.1, batch 250, one process, one
thread. Both run on the model wrapped in advlab.passes.PassCounter, so the passes are counted the
same way: image rows through the forward, plus rows through the backward when the output needs a
gradient. Also wall and CPU seconds of this process (CPU decides when the machine is shared) and
AutoAttack's robust accuracy after each of its stages (from its log).

Targets (issue 19): advlab's robust accuracy at most 0.001 above AutoAttack's on each model (lower
means a stronger evaluation) with at most 1/5 of its forward+backward passes. The worst case of both
is shown too, with the points only one of them breaks.

AutoAttack's result (robust mask, passes, stages, times) is kept in benchmarks/.cache per model,
images and thread count; `--reuse-autoattack` takes it from there instead of spending another hour,
and the table then says when it was measured (its times come from that other run).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, RESULTS, markdown_table, trained_model  # noqa: E402

EPS, N, BATCH = 0.1, 1000, 250
HEADERS = ["model", "images", "evaluation", "robust acc", "passes", "vs AutoAttack", "CPU s", "wall s", "notes"]


def run_advlab(model, x, y, suite="standard"):
    """advlab's suite in this process: (wall s, CPU s, robust mask, passes, seconds per attack)."""
    from advlab.evaluate import evaluate_robustness, get_suite
    t0, c0 = time.perf_counter(), time.process_time()
    ev = evaluate_robustness(model, x, y, [EPS], get_suite(suite), bounds=(0.0, 1.0), batch_size=BATCH,
                             progress=False)
    per_attack = {k: f"{v:.0f} s, {sum(ev.attack_passes.get(k, {}).values()) / 1e6:.3f}M passes"
                  for k, v in ev.attack_seconds.items()}
    return time.perf_counter() - t0, time.process_time() - c0, ev.robust[0], ev.passes, per_attack


class _StageLog(logging.Handler):
    """AutoAttack logs 'robust accuracy after APGD-CE: 72.10% (total time ...)' after each attack:
    record the robust accuracy, the passes and the seconds at that moment."""

    def __init__(self, counter, t0):
        super().__init__(logging.DEBUG)
        self.counter, self.t0, self.stages = counter, t0, []

    def emit(self, record):
        m = re.match(r"robust accuracy after (\S+): ([\d.]+)%", record.getMessage())
        if m:
            c = self.counter.counts()
            self.stages.append({"attack": m.group(1).lower(), "robust_accuracy": float(m.group(2)) / 100,
                                "forward": c["forward"], "backward": c["backward"],
                                "seconds": time.perf_counter() - self.t0})


def run_autoattack(model, x, y):
    """AutoAttack standard on a PassCounter around the model: (wall s, CPU s, robust mask, passes, stages)."""
    from pyautoattack import AutoAttack
    from advlab.passes import PassCounter
    counter = PassCounter(model)
    adversary = AutoAttack(counter, norm="Linf", eps=EPS, version="standard", device="cpu", seed=0)
    adversary.verbose = True  # the per-stage log lines; pyautoattack logs them at DEBUG level
    t0, c0 = time.perf_counter(), time.process_time()
    logger = logging.getLogger("auto-attack")
    stage_log = _StageLog(counter, t0)
    logger.addHandler(stage_log)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=BATCH)  # pyautoattack returns (x_adv, y_adv)
    finally:
        logger.removeHandler(stage_log)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    passes = counter.counts()
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    return seconds, cpu, robust, passes, stage_log.stages


def autoattack_cached(name, model, x, y, threads, reuse):
    """AutoAttack's result for this model and these images: measured now, or (reuse) read from the
    last measurement on the same weights, images and thread count. It takes ~an hour on the robust
    model and does not change when advlab does. Returns a dict: wall, cpu, robust (mask), passes,
    stages, note."""
    digest = hashlib.sha256()
    for t in [*model.state_dict().values(), x, y]:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    path = CACHE / f"autoattack-{name}-{len(x)}-{threads}t.pt"
    if reuse and path.exists():
        saved = torch.load(path)
        if saved["digest"] == digest.hexdigest() and "passes" in saved:
            return {**saved, "note": f"measured {saved['date']}, reused"}
        print(f"{path.name} is from other weights or images, or has no pass counts: running AutoAttack", flush=True)
    wall, cpu, robust, passes, stages = run_autoattack(model, x, y)
    CACHE.mkdir(exist_ok=True)
    date = time.strftime("%Y-%m-%d %H:%M")
    saved = {"digest": digest.hexdigest(), "wall": wall, "cpu": cpu, "robust": robust, "date": date,
             "passes": passes, "stages": stages}
    torch.save(saved, path)
    return {**saved, "note": f"measured {date}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["FGSM-RS", "standard"])
    parser.add_argument("--n", type=int, nargs="*", default=[N],
                        help="test images per model: one number for all, or one per model in --models' order")
    parser.add_argument("--suite", default="standard", help="advlab's suite to compare (standard, autoattack, fast)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both (1: CPU seconds are comparable on a shared machine)")
    parser.add_argument("--reuse-autoattack", action="store_true",
                        help="take AutoAttack's result from its last run on the same model, images and threads "
                             "(benchmarks/.cache); its times then come from another process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from advlab.data import load_dataset
    data = load_dataset("fashion-mnist")
    sizes = args.n if len(args.n) == len(args.models) else [args.n[0]] * len(args.models)
    recipes = {"standard": lambda: trained_model("fm-cnn-standard", epochs=2),
               "FGSM-RS": lambda: trained_model("fm-cnn-fgsmrs", defense="fgsm-rs", eps=EPS, epochs=5)}
    rows, verdicts = [], []
    for name, n in zip(args.models, sizes):
        x, y = data.test_subset(n)
        model, _ = recipes[name]()
        model.eval()
        a_time, a_cpu, a_robust, a_passes, per_attack = run_advlab(model, x, y, args.suite)
        # Printed now: AutoAttack takes far longer, and a failure there must not lose this.
        print(f"{name}: advlab {args.suite} robust {a_robust.float().mean().item():.3f}, {a_passes}, {a_time:.0f} s "
              f"wall, {a_cpu:.0f} s CPU, {per_attack}", flush=True)
        aa = autoattack_cached(name, model, x, y, args.threads, args.reuse_autoattack)
        a_acc, aa_acc = a_robust.float().mean().item(), aa["robust"].float().mean().item()
        a_total, aa_total = sum(a_passes.values()), sum(aa["passes"].values())
        only_advlab = int((~a_robust & aa["robust"]).sum())
        only_aa = int((a_robust & ~aa["robust"]).sum())
        stages = ", ".join(f"{s['attack']} {s['robust_accuracy']:.3f}" for s in aa["stages"])
        rows.append([name, n, f"advlab {args.suite}", a_acc, _passes(a_passes), f"1/{aa_total / a_total:.1f}",
                     a_cpu, a_time, "; ".join(f"{k} {v}" for k, v in per_attack.items())])
        rows.append([name, n, "AutoAttack standard", aa_acc, _passes(aa["passes"]), "1", aa["cpu"], aa["wall"],
                     f"{aa['note']}; robust after {stages}"])
        rows.append([name, n, "worst case of both", (a_robust & aa["robust"]).float().mean().item(), "", "", "", "",
                     f"only advlab breaks {only_advlab}, only AutoAttack breaks {only_aa}"])
        ok = a_acc <= aa_acc + 0.001 and a_total * 5 <= aa_total
        verdicts.append(f"- {name} ({n} images): robust accuracy {a_acc:.3f} vs AutoAttack {aa_acc:.3f} "
                        f"({100 * (a_acc - aa_acc):+.1f} points; target <= +0.1), passes {a_total:,} vs {aa_total:,} = "
                        f"1/{aa_total / a_total:.1f} (target <= 1/5), CPU {a_cpu:.0f} s vs {aa['cpu']:.0f} s = "
                        f"1/{aa['cpu'] / a_cpu:.1f}: {'PASS' if ok else 'FAIL'}")
        print(markdown_table(HEADERS, rows[-3:]), flush=True)
        write_report(args.suite, rows, verdicts)  # after every model: a long run stopped halfway keeps what it has


def _passes(p) -> str:
    return f"{(p['forward'] + p['backward']) / 1e6:.3f}M ({p['forward'] / 1e6:.3f}M fwd + {p['backward'] / 1e6:.3f}M bwd)"


LATEST = ("<!-- latest: written by benchmarks/evaluate_vs_autoattack.py -->",
          "<!-- end of latest; earlier results below are kept by hand -->")


def write_report(suite, rows, verdicts) -> None:
    """The dated section between the LATEST markers of evaluate.md; what is outside them (the history
    and its notes) stays as it is."""
    section = (f"{LATEST[0]}\n## {time.strftime('%Y-%m-%d')}: advlab `{suite}` vs AutoAttack, passes counted\n\n"
               f"Fashion-MNIST, first N test images, Linf eps {EPS}, batch {BATCH}, torch {torch.__version__}, "
               f"{torch.get_num_threads()} thread(s), one process; passes are image rows through the model's "
               "forward and backward (advlab.passes.PassCounter around the model for both).\n\n"
               + markdown_table(HEADERS, rows) + "\n\n" + "\n".join(verdicts) + f"\n{LATEST[1]}")
    path = RESULTS / "evaluate.md"
    text = path.read_text() if path.exists() else "# advlab evaluation suites vs AutoAttack\n\n"
    if LATEST[0] in text and LATEST[1] in text:
        head, rest = text.split(LATEST[0], 1)
        text = head + section + rest.split(LATEST[1], 1)[1]
    else:
        first, _, rest = text.partition("\n")
        text = f"{first}\n\n{section}\n\n{rest.lstrip()}"
    RESULTS.mkdir(exist_ok=True)
    path.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
