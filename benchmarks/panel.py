"""The panel (issue 27): advlab's suites against AutoAttack on ordinary and gradient-masking defenses.

    benchmarks/.env-peers/bin/python benchmarks/panel.py                 # the full panel (python benchmarks/run_all.py makes the venv)
    benchmarks/.env-peers/bin/python benchmarks/panel.py --autoattack-only --models pgd-at,trades   # baselines, in the background
    benchmarks/.env-peers/bin/python benchmarks/panel.py --models ibp,trades   # a second process, from the other end
    benchmarks/.env-peers/bin/python benchmarks/panel.py --cached-only        # the table of what is measured so far
    python benchmarks/panel.py --quick                                     # digits, 5 small models, `fast` for `standard`, no AutoAttack (tests/test_panel.py)

Per model (benchmarks/panel_models.py; Fashion-MNIST cnn-small variants trained by advlab and cached), on the
first N test images, one thread: PGD-20, advlab's `fast` and `standard` suites, AutoAttack (`standard`, or
`rand` for the randomised model; pyautoattack), each on the model wrapped in advlab.passes.PassCounter:
robust accuracy with its 95% Clopper-Pearson interval, forward and backward passes (image rows), wall and CPU
seconds. Then the gradient-masking checks (advlab.evaluate.run_checks, given what `standard` left robust)
with their verdict and the adaptation they point to (advlab.evaluate.adaptive.recommend); on the masking
defenses `standard` again on the adapted model (advlab.models.adaptive.adapt: BPDA, rescaled logits, EOT)
beside AutoAttack on the same adapted model (AutoAttack `rand` for the randomised one).

Every piece is cached in benchmarks/.cache/panel (keyed by the weights, the images and, for advlab's pieces,
the source of advlab's attacks, evaluation and models), so a rerun only computes what changed and an
interrupted run resumes; AutoAttack also resumes inside a model (pyautoattack's state file). Results:
benchmarks/results/panel.md (--quick: printed only, unless --out).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import CACHE, RESULTS, markdown_table  # noqa: E402

PANEL_CACHE = CACHE / "panel"
BATCH = 250
EOT_SCORING_SAMPLES, SCORING_DRAWS = 16, 10


@dataclass(frozen=True)
class Row:
    model: str
    norm: str
    eps: float
    n: int
    dataset: str = "fashion-mnist"
    exact: bool = False  # exact verification decides every point: the row's ground truth

    @property
    def key(self) -> str:
        return f"{self.model}-{self.norm}-{self.eps:g}-{self.n}"


# Sized for 2 shared CPU cores (see docs/evaluate.md for the time): AutoAttack costs most where gradient attacks
# fail or the model is robust (every such point reaches FAB-T's and Square's budgets), so the rows take 30 to 50
# points (the standard model's 200: its AutoAttack was measured first). --n N sets every row's n.
FULL = [Row("standard", "linf", 0.1, 200)] + \
       [Row(m, "linf", 0.1, 50) for m in ("quantize", "saturated", "pgd-at")] + \
       [Row(m, "linf", 0.1, 30) for m in ("threshold", "random", "fgsm-rs", "gaussian", "ibp", "trades")] + \
       [Row("standard", "l2", 1.0, 30), Row("trades", "l2", 1.0, 30)] + \
       [Row(m, "linf", 0.02, 100, "digits", exact=True) for m in ("digits-mlp", "digits-mlp-x1000")]
QUICK = [Row(m, "linf", 0.1, 100) for m in ("standard", "quantize", "threshold", "saturated", "random")]


# ---------------------------------------------------------------------------------------------- models

def full_models():
    import panel_models
    return {name: (fn, what, adaptation, randomised) for name, (fn, what, adaptation, randomised)
            in panel_models.PANEL.items()}


def quick_models():
    """digits versions of five panel models, trained in seconds (no cache): standard, quantisation,
    thresholded first layer, saturated softmax, random resize-and-pad."""
    from torch.nn import functional as F
    from advlab.data import load_dataset
    from advlab.defenses import TrainConfig, Trainer
    from advlab.models import Preprocessed, Quantize, Randomized, RandomResizePad, build_model
    from advlab.rng import seeded
    import panel_models
    data = load_dataset("digits")
    trained = {}

    def train(augment=None):
        key = augment is not None
        if key not in trained:
            with seeded(0):
                model = build_model("cnn-small", data.input_shape, data.num_classes)

            def objective(m, x, y, g):
                logits = m(augment(x, g) if augment is not None else x)
                return F.cross_entropy(logits, y), logits

            Trainer(model, data.x_train, data.y_train, config=TrainConfig(epochs=8, lr=3e-3), objective=objective,
                    progress=False, log=lambda msg: None).fit()
            trained[key] = model.eval()
        return trained[key]

    t = RandomResizePad(0.75)

    def thresholded():
        model = panel_models.threshold_model(data.input_shape, data.num_classes)
        panel_models.train_threshold(model, data, epochs=8)
        return model.eval()

    return {
        "standard": (lambda: train(), "digits cnn-small", None, False),
        "quantize": (lambda: Preprocessed(train(), Quantize(4, bounds=data.bounds)).eval(),
                     "4-level quantisation + cnn-small", "bpda", False),
        "threshold": (thresholded, "first-layer activations thresholded to 0/1", "bpda", False),
        "saturated": (lambda: panel_models.Saturated(train()).eval(), "cnn-small, logits x1000", "rescale", False),
        "random": (lambda: Randomized(train(t), t, seed=1).eval(), "random resize-and-pad", "eot", True),
    }


# ---------------------------------------------------------------------------------------------- caching

def _digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_digest(model, x, y) -> str:
    return _digest(*model.state_dict().values(), x, y)


@functools.lru_cache(maxsize=None)
def advlab_digest() -> str:
    """The code that decides advlab's numbers: a change there recomputes advlab's pieces. Computed once, when
    main() has imported those modules: a process keys its pieces by the code it runs, not by files edited since
    (a panel process started before an edit once cached old results under the new key). Comments and docstrings
    do not count (the syntax tree without them), so rewording a docstring keeps the measured pieces."""
    import advlab
    root = Path(advlab.__file__).parent
    h = hashlib.sha256()
    for sub in ("attacks", "evaluate", "models", "threat.py", "passes.py"):
        for f in sorted((root / sub).rglob("*.py")) if (root / sub).is_dir() else [root / sub]:
            h.update(_code_of(f).encode())
    return h.hexdigest()[:12]


def _code_of(path: Path) -> str:
    """The file's syntax tree without docstrings (comments are not in it): what the code does, not what it says."""
    import ast
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@functools.lru_cache(maxsize=None)
def certify_digest() -> str:
    """The source of exact verification (advlab/certify): keys the ground-truth rows' exact piece."""
    import advlab
    h = hashlib.sha256()
    for f in sorted((Path(advlab.__file__).parent / "certify").rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def cached(path: Path | None, compute):
    """compute() unless `path` holds its result (torch.save of plain tensors, numbers and strings)."""
    if path is not None and path.exists():
        return torch.load(path)
    out = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(out, tmp)
        tmp.replace(path)
    return out


# ---------------------------------------------------------------------------------------------- measuring

def _measure(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def run_pgd20(model, x, y, row, bounds):
    from advlab.attacks import PGD
    from advlab.passes import PassCounter
    counter = PassCounter(model)
    r, wall, cpu = _measure(lambda: PGD(row.norm, steps=20, seed=0)(counter, x, y, [row.eps], bounds=bounds))
    return {"robust": r.correct[0].cpu(), "passes": counter.counts(), "wall": wall, "cpu": cpu,
            "x_adv": r.x_adv[0].cpu()}


def run_suite(model, x, y, row, bounds, suite, inner_counter=None):
    """advlab's suite; passes from `inner_counter` when given (EOT: the rows through the defense itself)."""
    from advlab.evaluate import evaluate_robustness, get_suite
    before = inner_counter.counts() if inner_counter is not None else None
    ev, wall, cpu = _measure(lambda: evaluate_robustness(model, x, y, [row.eps], get_suite(suite, norm=row.norm),
                                                         norm=row.norm, bounds=bounds, batch_size=BATCH,
                                                         progress=False))
    passes = ev.passes if inner_counter is None else \
        {k: v - before[k] for k, v in inner_counter.counts().items()}
    per_attack = {k: {"seconds": ev.attack_seconds.get(k, 0.0), **ev.attack_passes.get(k, {})}
                  for k in ev.attacks}
    return {"robust": ev.robust[0].cpu(), "passes": passes, "wall": wall, "cpu": cpu, "per_attack": per_attack,
            "x_adv": ev.x_adv[0].cpu(), "broken_by": ev.broken_by_attack()[0]}


def run_checks_row(model, x, y, row, bounds, reported):
    from advlab.evaluate import run_checks
    from advlab.evaluate.adaptive import recommend
    from advlab.evaluate.checks import verdict
    checks, wall, cpu = _measure(lambda: run_checks(model, x, y, [row.eps], norm=row.norm, bounds=bounds,
                                                    reported_robust={row.eps: reported}))
    return {"verdict": verdict(checks), "failed": [c.name for c in checks if not c.passed],
            "details": {c.name: c.detail for c in checks}, "recommend": recommend(checks, model),
            "passes": checks.passes, "wall": wall, "cpu": cpu}


def run_exact(model, x, y, row, bounds, timeout=30.0):
    """Exact verification (advlab.certify.verify_exact): each point verified, falsified or unknown."""
    from advlab.certify import verify_exact
    ex, wall, cpu = _measure(lambda: verify_exact(model, x, y, row.eps, bounds=bounds, timeout=timeout,
                                                  progress=False))
    return {"verified": torch.tensor([st == "verified" for st in ex.status]),
            "falsified": torch.tensor([st == "falsified" for st in ex.status]),
            "unknown": ex.status.count("unknown"), "wall": wall, "cpu": cpu}


class _StageLog(logging.Handler):
    """AutoAttack logs 'robust accuracy after APGD-CE: 72.10% (total time ...)' after each attack."""

    def __init__(self, counter, t0, done):
        super().__init__(logging.DEBUG)
        self.counter, self.t0, self.stages, self.done = counter, t0, [], done

    def emit(self, record):
        m = re.match(r"robust accuracy after (\S+): ([\d.]+)%", record.getMessage())
        if m:
            c = self.counter.counts()
            self.stages.append({"attack": m.group(1).lower(), "robust_accuracy": float(m.group(2)) / 100,
                                "forward": c["forward"], "backward": c["backward"],
                                "seconds": time.perf_counter() - self.t0})
            self.done(self.stages)


def run_autoattack(model, x, y, row, version, state_dir: Path | None):
    """pyautoattack on a PassCounter around the model. Resumes (pyautoattack's state file plus our record of
    the stages finished, with their passes) when interrupted; work inside an unfinished stage is redone."""
    from pyautoattack import AutoAttack
    from advlab.passes import PassCounter
    counter = PassCounter(model)
    adversary = AutoAttack(counter, norm={"linf": "Linf", "l2": "L2"}[row.norm], eps=row.eps, version=version,
                           device="cpu", seed=0)
    adversary.verbose = True
    earlier = {"stages": [], "wall": 0.0, "cpu": 0.0}
    state_path = stages_path = None
    if state_dir is not None and version != "rand":  # rand: one short run, its examples are needed whole
        state_dir.mkdir(parents=True, exist_ok=True)
        state_path, stages_path = state_dir / "aa-state.json", state_dir / "aa-stages.json"
        if stages_path.exists() and state_path.exists():
            earlier = json.loads(stages_path.read_text())
        elif state_path.exists():
            state_path.unlink()
    t0, c0 = time.perf_counter(), time.process_time()
    base = earlier["stages"][-1] if earlier["stages"] else {"forward": 0, "backward": 0}

    def save(stages):
        if stages_path is not None:
            shifted = [{**s, "forward": s["forward"] + base["forward"], "backward": s["backward"] + base["backward"],
                        "seconds": s["seconds"] + earlier["wall"]} for s in stages]
            stages_path.write_text(json.dumps({"stages": earlier["stages"] + shifted,
                                               "wall": earlier["wall"] + time.perf_counter() - t0,
                                               "cpu": earlier["cpu"] + time.process_time() - c0}))

    logger = logging.getLogger("auto-attack")
    log = _StageLog(counter, t0, save)
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=BATCH, state_path=state_path)
    finally:
        logger.removeHandler(log)
    wall, cpu = earlier["wall"] + time.perf_counter() - t0, earlier["cpu"] + time.process_time() - c0
    passes = {k: counter.counts()[k] + base[k] for k in ("forward", "backward")}
    stages = earlier["stages"] + [{**s, "forward": s["forward"] + base["forward"],
                                   "backward": s["backward"] + base["backward"]} for s in log.stages]
    if state_path is not None:  # the robust flags of every stage, this run's and the earlier ones'
        from pyautoattack.state import EvaluationState
        robust = EvaluationState.from_disk(state_path).robust_flags.cpu()
    else:
        with torch.no_grad():
            robust = counter.model(x_adv).argmax(1) == y
    return {"robust": robust, "passes": passes, "wall": wall, "cpu": cpu, "stages": stages,
            "resumed": bool(earlier["stages"]), "x_adv": x_adv.cpu(), "date": time.strftime("%Y-%m-%d %H:%M")}


# ---------------------------------------------------------------------------------------------- one model

def evaluate_row(row, entry, data, args, log=print, wait=True):
    """One row; a lock per row, so two panel processes (e.g. one per core) never compute the same row twice
    (wait=False: Busy when another process holds it)."""
    if args.no_cache:
        return _evaluate_row(row, entry, data, args, log)
    import fcntl
    PANEL_CACHE.mkdir(parents=True, exist_ok=True)
    with open(PANEL_CACHE / f"{row.key}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (fcntl.LOCK_NB if args.cached_only or not wait else 0))
        except BlockingIOError:
            if args.cached_only:
                raise NotCached(f"{row.key} is being measured by another process") from None
            raise Busy(row.key) from None
        return _evaluate_row(row, entry, data, args, log)


class Busy(Exception):
    """Another panel process is measuring the row."""


class NotCached(Exception):
    """--cached-only: a piece of the row (or its model) is not measured yet."""


def _evaluate_row(row, entry, data, args, log=print):
    fn, what, adaptation, randomised = entry
    torch.manual_seed(0)
    try:
        model = fn()
    except LookupError as e:  # --cached-only (ADVLAB_BENCH_NO_TRAIN): the model is not trained yet
        raise NotCached(str(e)) from None
    model.eval()
    x, y = data.test_subset(row.n)
    bounds = data.bounds
    digest = model_digest(model, x, y)
    cache_dir = None if args.no_cache else PANEL_CACHE / f"{row.key}-{digest}"
    source = advlab_digest()

    def piece(name, compute, advlab_piece=True):
        path = None if cache_dir is None else cache_dir / (f"{name}-{source}.pt" if advlab_piece else f"{name}.pt")
        if path is not None and not path.exists():
            if args.cached_only or (args.cached_autoattack_only and not advlab_piece):
                raise NotCached(f"{row.key}: {name}")
            log(f"{row.key}: {name} ...")
        return cached(path, compute)

    if args.cached_autoattack_only and cache_dir is not None and \
            not (cache_dir / f"aa-{'rand' if randomised else 'standard'}.pt").exists():
        raise NotCached(f"{row.key}: AutoAttack")
    out = {"row": row, "what": what, "adaptation": adaptation, "randomised": randomised,
           "suite": "fast" if args.quick else "standard"}
    with torch.no_grad():
        out["clean"] = (model(x).argmax(1) == y).float().mean().item()
    if not args.autoattack_only:
        out["pgd20"] = piece("pgd20", lambda: run_pgd20(model, x, y, row, bounds))
        out["fast"] = piece("fast", lambda: run_suite(model, x, y, row, bounds, "fast"))
        if not args.quick:  # --quick: `fast` stands in for `standard` (Square's queries are most of its cost)
            out["standard"] = piece("standard", lambda: run_suite(model, x, y, row, bounds, "standard"))
        reported = out[out["suite"]]["robust"]
        out["checks"] = piece("checks", lambda: run_checks_row(model, x[:args.check_n], y[:args.check_n], row,
                                                               bounds, reported[:args.check_n]))
        if row.exact:
            out["exact"] = piece(f"exact-{certify_digest()}", lambda: run_exact(model, x, y, row, bounds),
                                 advlab_piece=False)
        if adaptation is not None:
            out["adaptive"] = piece(f"adaptive-{adaptation}", lambda: _adaptive(model, x, y, row, bounds, adaptation,
                                                                                out["suite"]))
    if args.autoattack and _has_autoattack():
        version = "rand" if randomised else "standard"
        out["aa"] = piece(f"aa-{version}", lambda: run_autoattack(model, x, y, row, version,
                                                                  cache_dir and cache_dir / f"aa-{version}"),
                          advlab_piece=False)
        if adaptation in ("bpda", "rescale"):
            from advlab.models.adaptive import adapt
            out["aa_adaptive"] = piece(f"aa-standard-{adaptation}", lambda: run_autoattack(
                adapt(model, adaptation), x, y, row, "standard", cache_dir and cache_dir / f"aa-{adaptation}"),
                advlab_piece=False)
        elif randomised:
            out["aa_adaptive"] = out["aa"]
    if randomised and "adaptive" in out and "aa" in out:
        out["rescored"] = piece("rescored", lambda: _rescore(model, x, y, out), advlab_piece=True)
    return out


def _adaptive(model, x, y, row, bounds, adaptation, suite="standard"):
    """`suite` on the adapted model; for EOT the passes are the rows through the defense itself."""
    from advlab.models.adaptive import adapt
    from advlab.passes import PassCounter
    if adaptation == "eot":
        inner = PassCounter(model)
        return run_suite(adapt(inner, "eot", seed=0), x, y, row, bounds, suite, inner_counter=inner)
    return run_suite(adapt(model, adaptation), x, y, row, bounds, suite)


def _rescore(model, x, y, out):
    """The randomised defense's examples scored two ways, the same for AutoAttack's and advlab's: by the EOT
    classifier (mean probability over 16 draws, fixed seed) and by single draws (share of 10 draws right)."""
    from advlab.models import EOT
    res = {}
    for name in ("standard", "adaptive", "aa"):
        x_adv = out[name]["x_adv"]
        with torch.no_grad():
            eot = EOT(model, samples=EOT_SCORING_SAMPLES, seed=12345).eval()
            by_eot = eot(x_adv).argmax(1) == y
            model.reset(seed=54321)
            draws = torch.stack([model(x_adv).argmax(1) == y for _ in range(SCORING_DRAWS)]).float().mean(0)
        res[name] = {"eot": by_eot, "draws": draws}
    return res


def _has_autoattack() -> bool:
    try:
        import pyautoattack  # noqa: F401
        return True
    except ImportError:
        return False


# ---------------------------------------------------------------------------------------------- the table

HEADERS = ["model", "threat, n", "evaluation", "robust acc [95% CI]", "forward", "backward", "vs AutoAttack",
           "wall s", "CPU s", "notes"]


def _acc(mask) -> str:
    from advlab.evaluate.stats import clopper_pearson
    k, n = int(mask.sum()), len(mask)
    lo, hi = clopper_pearson(k, n)
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]"


def _ratio(p, ref) -> str:
    if ref is None:
        return ""
    total, ref_total = p["forward"] + p["backward"], ref["forward"] + ref["backward"]
    fwd = ref["forward"] / max(p["forward"], 1)
    bwd = ref["backward"] / max(p["backward"], 1) if p["backward"] else float("inf")
    return f"1/{ref_total / max(total, 1):.1f} (fwd 1/{fwd:.1f}, bwd 1/{bwd:.1f})"


def table_rows(out) -> list[list]:
    row, rows = out["row"], []
    threat = f"{row.norm} {row.eps:g}, {row.n}"
    aa = out.get("aa")
    aa_p = aa["passes"] if aa else None
    name = row.model

    def line(label, r, ref=aa_p, note=""):
        rows.append([name, threat, label, _acc(r["robust"]), f"{r['passes']['forward']:,}",
                     f"{r['passes']['backward']:,}", _ratio(r["passes"], ref), f"{r['wall']:.1f}", f"{r['cpu']:.1f}",
                     note])

    rows.append([name, threat, "clean", f"{out['clean']:.3f}", "", "", "", "", "", out["what"]])
    if "pgd20" in out:
        line("PGD-20", out["pgd20"])
        line("advlab fast", out["fast"], note=_per_attack(out["fast"]))
        if "standard" in out:
            line("advlab standard", out["standard"], note=_per_attack(out["standard"]))
    if aa:
        version = "rand" if out["randomised"] else "standard"
        stages = ", ".join(f"{s['attack']} {s['robust_accuracy']:.3f}" for s in aa["stages"])
        line(f"AutoAttack {version}", aa, note=f"measured {aa['date']}{' (resumed)' if aa.get('resumed') else ''}; "
                                                f"robust after {stages}")
        if "standard" in out:
            a, b = out["standard"]["robust"], aa["robust"]
            rows.append([name, threat, "worst case of both", _acc(a & b), "", "", "", "", "",
                         f"only advlab standard breaks {int((~a & b).sum())}, only AutoAttack breaks "
                         f"{int((a & ~b).sum())}"])
    if "exact" in out:
        ex = out["exact"]
        rows.append([name, threat, "exact verification", _acc(~ex["falsified"]), "", "", "", f"{ex['wall']:.1f}",
                     f"{ex['cpu']:.1f}", f"verified {int(ex['verified'].sum())}, falsified {int(ex['falsified'].sum())}, "
                     f"unknown {ex['unknown']}: robust accuracy is at most the falsified points' complement, at "
                     "least the verified share"])
    if "checks" in out:
        c = out["checks"]
        rec = ", ".join(c["recommend"]) or "none"
        rows.append([name, threat, "checks", c["verdict"], f"{c['passes']['forward']:,}",
                     f"{c['passes']['backward']:,}", "", f"{c['wall']:.1f}", f"{c['cpu']:.1f}",
                     f"adaptation recommended: {rec}"])
    if "adaptive" in out:
        ad = out["adaptive"]
        aa_ad = out.get("aa_adaptive")
        line(f"advlab {out['suite']} --adaptive {out['adaptation']}", ad, ref=aa_ad["passes"] if aa_ad else None,
             note=_per_attack(ad))
        if aa_ad is not None and not out["randomised"]:
            stages = ", ".join(f"{s['attack']} {s['robust_accuracy']:.3f}" for s in aa_ad["stages"])
            line(f"AutoAttack standard on {out['adaptation']}", aa_ad, ref=aa_ad["passes"],
                 note=f"measured {aa_ad['date']}; robust after {stages}")
    if "rescored" in out:
        rs = out["rescored"]
        for label, key in (("advlab standard (naive)", "standard"), ("advlab --adaptive eot", "adaptive"),
                           ("AutoAttack rand", "aa")):
            rows.append([name, threat, f"{label}, rescored", f"EOT-16 {rs[key]['eot'].float().mean():.3f}; "
                         f"single draws {rs[key]['draws'].mean():.3f}", "", "", "", "", "",
                         "the same scoring for all three (fixed seeds)"])
    return rows


def _per_attack(r) -> str:
    """Each attack's passes and how many points it was the first to break."""
    broke = r.get("broken_by", {})
    return "; ".join(f"{k} {(v.get('forward', 0) + v.get('backward', 0)):,} passes" +
                     (f", broke {broke[k]}" if k in broke else "") for k, v in r["per_attack"].items())


def verdicts(out) -> list[str]:
    """The targets of issue 27 on this model: what holds, and by how much the rest misses."""
    row, lines = out["row"], []
    head = f"{row.model} ({row.norm} {row.eps:g}, {row.n})"
    aa = out.get("aa")
    if "standard" not in out:
        return lines
    if aa is None:
        return [f"- {head}: no AutoAttack result yet"]
    st = out["standard"]
    acc, aa_acc = st["robust"].float().mean().item(), aa["robust"].float().mean().item()
    total = st["passes"]["forward"] + st["passes"]["backward"]
    aa_total = aa["passes"]["forward"] + aa["passes"]["backward"]
    parts = []
    if out["randomised"] and "rescored" in out:
        rs = out["rescored"]
        a, b = rs["adaptive"]["eot"].float().mean().item(), rs["aa"]["eot"].float().mean().item()
        parts.append(f"robust accuracy (EOT-16 scoring) advlab --adaptive eot {a:.3f} vs AutoAttack rand {b:.3f}: "
                     + ("holds" if a <= b else f"MISSES by {100 * (a - b):.1f} points"))
    else:
        parts.append(f"robust accuracy {acc:.3f} vs AutoAttack {aa_acc:.3f}: " +
                     ("holds" if acc <= aa_acc else f"MISSES by {100 * (acc - aa_acc):.1f} points "
                                                    f"({int((st['robust'] & ~aa['robust']).sum())} points only "
                                                    f"AutoAttack broke)"))
        ratio = aa_total / max(total, 1)
        fwd = aa["passes"]["forward"] / max(st["passes"]["forward"], 1)
        bwd = aa["passes"]["backward"] / max(st["passes"]["backward"], 1)
        parts.append(f"passes 1/{ratio:.1f} (target 1/10: " + ("holds" if ratio >= 10 else
                     f"MISSES, {total:,} vs {aa_total / 10:,.0f} allowed{_costliest(st)}") +
                     f"; moonshot fwd 1/{fwd:.1f} of 1/11, bwd 1/{bwd:.1f} of 1/6: " +
                     ("holds" if fwd >= 11 and bwd >= 6 else "not reached") + ")")
    if "exact" in out:
        ex = out["exact"]
        missed = int((st["robust"] & ex["falsified"]).sum())
        wrong = int((~st["robust"] & ex["verified"]).sum())
        parts.append(f"against exact verification ({int(ex['falsified'].sum())} breakable, {ex['unknown']} "
                     f"undecided): advlab standard missed {missed}, AutoAttack missed "
                     f"{int((aa['robust'] & ex['falsified']).sum())}, contradictions {wrong}: " +
                     ("holds" if missed == 0 and wrong == 0 and ex["unknown"] == 0 else "MISSES"))
    if out.get("adaptation"):
        c = out["checks"]
        parts.append(f"checks '{c['verdict']}' -> recommend {', '.join(c['recommend']) or 'nothing'} "
                     f"(expected {out['adaptation']}): " +
                     ("holds" if c["verdict"] != "ok" and out["adaptation"] in c["recommend"] else "MISSES"))
        aa_ad = out.get("aa_adaptive")
        if aa_ad is not None and not out["randomised"]:
            a = out["adaptive"]["robust"].float().mean().item()
            b = aa_ad["robust"].float().mean().item()
            parts.append(f"--adaptive {out['adaptation']} {a:.3f} vs AutoAttack on the same adaptation {b:.3f}: "
                         + ("holds" if a <= b else f"MISSES by {100 * (a - b):.1f} points"))
    return [f"- {head}: " + "; ".join(parts)]


def _totals(outs) -> str:
    """What the rows cost when they were measured (training excluded), for docs/evaluate.md's timing."""
    wall = {"advlab": 0.0, "AutoAttack": 0.0}
    cpu = dict(wall)
    for out in outs:
        for key in ("pgd20", "fast", "standard", "checks", "adaptive", "aa", "aa_adaptive"):
            if key in out and not (key == "aa_adaptive" and out[key] is out.get("aa")):
                who = "AutoAttack" if key.startswith("aa") else "advlab"
                wall[who] += out[key]["wall"]
                cpu[who] += out[key]["cpu"]
    return (f"the rows' pieces took {wall['advlab'] / 60:.0f} min wall ({cpu['advlab'] / 60:.0f} min CPU) for advlab "
            f"and {wall['AutoAttack'] / 60:.0f} min wall ({cpu['AutoAttack'] / 60:.0f} min CPU) for AutoAttack "
            "when measured (one thread each, on 2 CPU cores shared with other work; training not included)")


def _costliest(st) -> str:
    """', of which STAGE N passes (broke K points)': where a miss of the pass target comes from."""
    per = {k: v.get("forward", 0) + v.get("backward", 0) for k, v in st["per_attack"].items()}
    if not per:
        return ""
    k = max(per, key=per.get)
    broke = st.get("broken_by", {}).get(k)
    return f", of which {k} {per[k]:,}" + (f" (it broke {broke} points)" if broke is not None else "")


def write_report(outs, args, started, pending=()) -> str:
    rows, lines = [], []
    for out in outs:
        rows += table_rows(out)
        lines += verdicts(out)
    text = (f"# The panel: advlab's suites vs AutoAttack on {len(outs)} rows ({time.strftime('%Y-%m-%d')})\n\n"
            f"Written by `benchmarks/panel.py{' --quick' if args.quick else ''}`. {'digits' if args.quick else 'Fashion-MNIST (the ground-truth rows: digits)'}, "
            f"first n test images, torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {BATCH}. "
            "Passes are image rows through the model's forward and backward (advlab.passes.PassCounter around the "
            "model for every evaluation; for EOT the rows through the randomised defense itself). `vs AutoAttack`: "
            "AutoAttack's passes over the row's. Checks: run_checks on the first "
            f"{args.check_n} points, given what `standard` left robust; their passes are not in the suite's. "
            "AutoAttack's results are cached per model (benchmarks/.cache/panel); its seconds are from the process "
            f"that measured it. This run: {time.perf_counter() - started:.0f} s; {_totals(outs)}.\n\n"
            + markdown_table(HEADERS, rows) + "\n\n## Targets per row\n\n" + "\n".join(lines) + "\n"
            + ("" if not pending else "\n**Partial**: not measured yet: " +
               ", ".join(f"{r.model} ({r.norm} {r.eps:g}, {r.n})" for r in pending) + "\n"))
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="digits, 5 small models, 100 points, the `fast` suite (adapted too), no AutoAttack")
    parser.add_argument("--models", help="comma-separated panel rows by model name (default: all)")
    parser.add_argument("--norms", default="linf,l2")
    parser.add_argument("--autoattack-only", action="store_true", help="only the AutoAttack baselines (background)")
    parser.add_argument("--no-autoattack", dest="autoattack", action="store_false")
    parser.add_argument("--no-cache", action="store_true", help="compute everything again (--quick never caches)")
    parser.add_argument("--check-n", type=int, default=200)
    parser.add_argument("--cached-only", action="store_true",
                        help="compute and train nothing: the table of the rows measured so far, the rest listed")
    parser.add_argument("--cached-autoattack-only", action="store_true",
                        help="compute advlab's pieces (e.g. after a change to advlab) but no AutoAttack and no "
                             "training: rows whose AutoAttack is not measured yet are listed")
    parser.add_argument("--n", type=int, help="every row's number of points (default: each row's own, see FULL)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="where to write the markdown (default: benchmarks/results/panel.md; "
                                                 "--quick: print only)")
    parser.add_argument("--json", type=Path, help="also write the verdicts per row as JSON (for tests)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    import advlab.attacks, advlab.evaluate, advlab.models  # noqa: E401,F401  the code this process runs ...
    advlab_digest()  # ... and its key, taken now
    from advlab.data import load_dataset
    if args.quick:
        args.no_cache, args.autoattack = True, False
        data, models, spec = load_dataset("digits"), quick_models(), QUICK
    else:
        data, models, spec = None, full_models(), FULL
    dataset = functools.lru_cache(maxsize=None)(load_dataset)  # the rows' datasets, each loaded once
    norms = set(args.norms.split(","))
    if args.n:
        spec = [Row(r.model, r.norm, r.eps, args.n) for r in spec]
    if args.models:  # in the order given (two processes can take the panel from both ends)
        wanted = args.models.split(",")
        spec = sorted([r for r in spec if r.model in wanted], key=lambda r: wanted.index(r.model))
    spec = [r for r in spec if r.norm in norms]
    out_path = args.out or (None if args.quick else RESULTS / "panel.md")
    if not args.out and (args.models or args.norms != "linf,l2" or args.n):
        out_path = None  # a part of the panel is printed, never written over the whole one
    if args.cached_only or args.cached_autoattack_only:
        import os
        os.environ["ADVLAB_BENCH_NO_TRAIN"] = "1"
    outs, missing = [], []
    order, busy = list(spec), []  # a row another process holds waits until the rest is done
    while order:
        row = order.pop(0)
        try:
            out = evaluate_row(row, models[row.model], data if args.quick else dataset(row.dataset), args,
                               wait=row in busy)
        except Busy:
            busy.append(row)
            order.append(row)
            continue
        except NotCached as e:
            print(f"not measured yet: {e}", flush=True)
            missing.append(row)
            continue
        outs.append(out)
        if not args.autoattack_only:
            print(markdown_table(HEADERS, table_rows(out)), flush=True)
            print("\n".join(verdicts(out)), flush=True)
            if out_path is not None and order:  # partial results survive an interrupted run
                out_path.write_text(write_report(sorted(outs, key=lambda o: spec.index(o["row"])), args, started,
                                                 pending=[*missing, *order]))
    if args.autoattack_only:
        return 0
    outs.sort(key=lambda o: spec.index(o["row"]))  # the table in the panel's order
    text = write_report(outs, args, started, pending=missing)
    if out_path is not None:
        out_path.write_text(text)
    print(text)
    if args.json:
        args.json.write_text(json.dumps([_summary(o) for o in outs], indent=1))
    return 0


def _summary(out) -> dict:
    """What tests/test_panel.py checks, per row."""
    s = {"model": out["row"].model, "adaptation": out["adaptation"], "clean": out["clean"]}
    for k in ("pgd20", "fast", "standard", "adaptive"):
        if k in out:
            s[k] = out[k]["robust"].float().mean().item()
    if "checks" in out:
        s["verdict"], s["recommend"], s["failed"] = out["checks"]["verdict"], out["checks"]["recommend"], \
            out["checks"]["failed"]
    return s


if __name__ == "__main__":
    sys.exit(main())
