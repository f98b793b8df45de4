"""The demo a new user runs first (`make demo`, `advlab demo`): everything advlab does, on one page.

    from advlab.demo import run_demo, preset
    record = run_demo(preset("digits"), out="runs/demo")     # -> runs/demo/report.html

Steps, each writing the same artefacts as the command in brackets:
  1. train a standard model and an adversarially trained one            (advlab train)
  2. attack both with FGSM and PGD over an epsilon grid, save examples   (advlab attack --save)
  3. the transfer matrix between the two models                          (advlab.evaluate.transfer)
  4. the evaluation suite and the gradient-masking checks, per model;    (advlab evaluate)
     the worst case per example also counts the examples steps 2 and 3 recorded in the run directories
  5. the certified lower bound (CROWN, where it can bound the model;     (advlab certify --method crown)
     else IBP) at a small eps, beside the attacked upper bound
  6. the epsilon analysis: class distances and perceptibility            (advlab analyze ...)
  7. the HTML report                                                     (advlab report)

Each step calls the function behind its command (advlab.artifacts: attack_run, transfer_run,
evaluate_run, distances_run, ...), so a demo directory is exactly what a user would get by typing the
commands (and `advlab report` re-renders it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .artifacts import names
from .errors import AdvlabError
from .io import write_json
from .subject import open_subject


@dataclass
class DemoConfig:
    dataset: str = "digits"
    model: str = "cnn-small"
    epochs: int = 15
    lr: float = 3e-3
    defense: str = "pgd"                  # the adversarially trained model
    defense_eps: float = 0.1
    defense_args: dict[str, Any] = field(default_factory=lambda: {"steps": 5})
    eps: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1, 0.15, 0.2, 0.3])
    pgd_steps: int = 20
    n_attack: int | None = None           # first N test points (None: all)
    suite: str = "fast"
    n_eval: int | None = None
    eval_eps: list[float] = field(default_factory=lambda: [0.1, 0.2])
    check_n: int = 200
    n_transfer: int | None = None
    certify_method: str = "crown"         # the best certificate the model allows: crown, else ibp
    certify_eps: list[float] = field(default_factory=lambda: [0.02])   # where the digits CNNs are certifiable
    n_certify: int | None = 100           # first N test points (CROWN on a CNN: about a second per point)
    per_class: int = 100                  # class-distance analysis: training images per class
    n_distance_test: int | None = None
    distance_norms: list[str] = field(default_factory=lambda: ["l2", "linf"])
    seed: int = 0
    scale: str = "full"


def preset(dataset: str = "digits", quick: bool = False) -> DemoConfig:
    """Settings per dataset; `quick` is a tiny version for tests and smoke checks (seconds, not minutes)."""
    if dataset == "fashion-mnist":
        cfg = DemoConfig(dataset=dataset, epochs=5, defense="fgsm-rs", defense_eps=0.1, defense_args={},
                         eps=[0.01, 0.02, 0.05, 0.1, 0.15, 0.2], n_attack=1000, suite="standard", n_eval=1000,
                         eval_eps=[0.1], check_n=200, n_transfer=1000, per_class=200, n_distance_test=2000,
                         certify_eps=[0.01], n_certify=50)
    elif dataset in ("digits", "mnist", "cifar10"):
        cfg = DemoConfig(dataset=dataset)
        if dataset == "mnist":
            cfg.epochs, cfg.defense, cfg.defense_args, cfg.eps = 5, "fgsm-rs", {}, [0.01, 0.05, 0.1, 0.2, 0.3]
            cfg.certify_eps, cfg.n_certify = [0.01], 50
            cfg.defense_eps, cfg.n_attack, cfg.n_eval, cfg.n_transfer, cfg.eval_eps = 0.3, 1000, 1000, 1000, [0.1, 0.3]
            cfg.n_distance_test = 2000
        if dataset == "cifar10":
            cfg.epochs, cfg.defense, cfg.defense_args = 10, "fgsm-rs", {}
            cfg.defense_eps, cfg.eps, cfg.eval_eps = 8 / 255, [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255], [8 / 255]
            cfg.certify_eps, cfg.n_certify = [1 / 255], 50
            cfg.n_attack = cfg.n_eval = cfg.n_transfer = 500
            cfg.n_distance_test = 1000
    else:
        raise AdvlabError(f"the demo runs on image datasets: digits (default), fashion-mnist, mnist or cifar10, "
                          f"not {dataset!r}")
    if quick:
        cfg = dataclasses.replace(cfg, epochs=2, defense_args={**cfg.defense_args, "steps": 2}
                                  if cfg.defense == "pgd" else cfg.defense_args,
                                  eps=cfg.eps[::2][:3], pgd_steps=5, n_attack=40, n_eval=40, n_certify=10,
                                  eval_eps=cfg.eval_eps[:1], check_n=24, n_transfer=40, per_class=8, distance_norms=["linf"],
                                  n_distance_test=50, scale="quick (tiny settings for a smoke test)")
    return cfg


@dataclass
class _Context:
    """What every step is run with, and the steps' timings."""
    data_dir: str | None
    progress: bool
    log: Callable[[str], None]
    device: Any
    started: float = field(default_factory=time.perf_counter)
    steps: list[dict[str, Any]] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, i: int, name: str, message: str):
        self.log(f"[{i}/{STEPS}] {message}")
        t0 = time.perf_counter()
        yield
        self.steps.append({"name": name, "seconds": time.perf_counter() - t0})


STEPS = 7


def run_demo(cfg: DemoConfig, out: str | Path = "runs/demo", *, data_dir: str | None = None, progress: bool = True,
             log: Callable[[str], None] | None = None, device: str = "auto") -> dict[str, Any]:
    """Run every step, write OUT/demo.json and OUT/report.html; returns the demo record.
    `device`: where the models train and are attacked (auto: the GPU when there is one)."""
    from .device import resolve_device
    from .report.html import build_report

    ctx = _Context(data_dir, progress, log or (lambda msg: None), resolve_device(device))
    out = Path(out)
    runs = {"standard": out / "standard", "adversarial": out / "adversarial"}
    with ctx.step(1, "training", f"training a standard and an adversarially trained ({cfg.defense}, eps "
                                 f"{cfg.defense_eps:g}) {cfg.model} on {cfg.dataset}, {cfg.epochs} epochs each"):
        trained = _train(cfg, runs, ctx)
    with ctx.step(2, "attacks", f"attacking both with FGSM and PGD-{cfg.pgd_steps} at eps {_eps_text(cfg.eps)}"):
        attacks = _attack(cfg, runs, ctx)
    with ctx.step(3, "transfer", "transfer matrix (FGSM examples crafted on each model, shown to both; kept for the "
                                 "evaluation)"):
        transfer = _transfer(cfg, runs, out / names.TRANSFER_DIR, ctx)
    with ctx.step(4, "evaluation", f"evaluation suite '{cfg.suite}' and gradient-masking checks at eps "
                                   f"{_eps_text(cfg.eval_eps)}"):
        evals = _evaluate(cfg, runs, ctx)
    method = _certify_method(cfg, runs["standard"])   # CROWN where it can bound the model, else IBP, else none
    certified: dict[str, list[dict[str, Any]]] = {}
    if method is not None:
        with ctx.step(5, "certification", f"certified lower bound ({method}) at eps {_eps_text(cfg.certify_eps)} on "
                                          f"{cfg.n_certify or 'all'} test points"):
            certified = _certify(cfg, runs, method, ctx)
    with ctx.step(6, "epsilon analysis", "epsilon analysis: class distances and perceptibility"):
        distances = _analyse(cfg, out / "analysis", ctx)
    record = {"demo": cfg.dataset, "description": _description(cfg), "config": dataclasses.asdict(cfg),
              "summary": _summary(cfg, trained, attacks, evals, transfer, distances, certified), "steps": ctx.steps,
              "seconds": time.perf_counter() - ctx.started, "report": str(out / names.REPORT_FILE)}
    write_json(out / names.DEMO_FILE, record)
    with ctx.step(7, "report", "writing the HTML report"):
        build_report(out)
    record["seconds"] = time.perf_counter() - ctx.started
    write_json(out / names.DEMO_FILE, record)
    return record


def _eps_text(values: list[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _train(cfg: DemoConfig, runs: dict[str, Path], ctx: _Context) -> dict[str, dict[str, Any]]:
    """Step 1 (advlab train): the standard model and the adversarially trained one."""
    from .defenses.run import train_run
    from .defenses.training import TrainConfig

    records = {}
    for key, defense in (("standard", "none"), ("adversarial", cfg.defense)):
        kwargs = {} if defense == "none" else {"eps": cfg.defense_eps, **cfg.defense_args}
        records[key] = train_run(cfg.dataset, cfg.model, runs[key], data_dir=ctx.data_dir, defense=defense,
                                 defense_kwargs=kwargs, config=TrainConfig(epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed),
                                 overwrite=True, progress=ctx.progress, log=ctx.log, device=ctx.device)
        ctx.log(f"      {key}: test accuracy {records[key]['test_accuracy']:.4f} ({records[key]['seconds']:.1f} s)")
    return records


def _attack(cfg: DemoConfig, runs: dict[str, Path], ctx: _Context) -> dict[str, dict[str, Any]]:
    """Step 2 (advlab attack --save): FGSM and PGD on both models over the epsilon grid."""
    from .artifacts.attack import attack_run
    from .attacks import build_attack

    records = {}
    for key, run in runs.items():
        subject = open_subject(run=run, data_dir=ctx.data_dir, device=ctx.device)
        for name, steps in (("fgsm", {}), ("pgd", {"steps": cfg.pgd_steps})):
            attack = build_attack(name, norm="linf", seed=cfg.seed, batch_size=None, **steps)
            records[f"{key}/{name}"] = attack_run(subject, attack, eps=cfg.eps, n=cfg.n_attack, save=True,
                                                  progress=ctx.progress, log=ctx.log)
    return records


def _transfer(cfg: DemoConfig, runs: dict[str, Path], out: Path, ctx: _Context) -> dict[str, Any]:
    """Step 3: the transfer matrix; each model's examples are kept in the other's run for the evaluation."""
    from .artifacts.transfer import transfer_run
    from .attacks import FGSM
    from .runs import dataset_from_card, load_run

    models, card = {}, None
    for key, run in runs.items():
        models[key], card = load_run(run, device=ctx.device)
    data = dataset_from_card(card, ctx.data_dir)
    x, y = data.test_subset(cfg.n_transfer)
    return transfer_run(models, x, y, list(cfg.eval_eps), FGSM("linf"), out=out, dataset=data.name,
                        bounds=data.bounds, runs=runs)


def _certify_method(cfg: DemoConfig, run: Path) -> str | None:
    """cfg.certify_method when it can bound this model; else IBP when it can; else None (no certificate)."""
    from .certify import check_crown_supported, check_ibp_supported
    from .runs import load_run

    model = load_run(run)[0]
    for method in dict.fromkeys([cfg.certify_method, "ibp"]):
        try:
            check_ibp_supported(model) if method == "ibp" else check_crown_supported(model, method)
        except AdvlabError:
            continue
        return method
    return None


def _evaluate(cfg: DemoConfig, runs: dict[str, Path], ctx: _Context) -> dict[str, dict[str, Any]]:
    """Step 4 (advlab evaluate --fresh): the suite and the checks."""
    from .artifacts.evaluate import evaluate_run

    records = {}
    for key, run in runs.items():
        started = time.perf_counter()
        subject = open_subject(run=run, data_dir=ctx.data_dir, device=ctx.device)
        records[key] = evaluate_run(subject, eps=cfg.eval_eps, suite=cfg.suite, n=cfg.n_eval, check_n=cfg.check_n,
                                    fresh=True, seed=cfg.seed, started=started, progress=ctx.progress, log=ctx.log)
        ctx.log(f"      {key}: verdict {records[key]['verdict']}")
    return records


def _certify(cfg: DemoConfig, runs: dict[str, Path], method: str, ctx: _Context) -> dict[str, list[dict[str, Any]]]:
    """Step 5 (advlab certify --method METHOD --eps E --fresh): certified accuracy of each model at each certify eps."""
    from .artifacts.certify import certify_run

    records: dict[str, list[dict[str, Any]]] = {}
    for key, run in runs.items():
        subject = open_subject(run=run, data_dir=ctx.data_dir, device=ctx.device)
        records[key] = [certify_run(subject, method, eps=e, n=cfg.n_certify, fresh=True, seed=cfg.seed,
                                    progress=ctx.progress) for e in cfg.certify_eps]
        ctx.log(f"      {key}: " + ", ".join(f"{r['certified_accuracy'][-1]['accuracy']:.3f} certified at eps "
                                             f"{r['eps']:g}" for r in records[key]) + f" ({method})")
    return records


def _analyse(cfg: DemoConfig, out: Path, ctx: _Context) -> dict[str, Any]:
    """Step 5 (advlab analyze distances, perceptibility): which budgets make sense for this data."""
    from .artifacts.analysis import distances_run, perceptibility_run

    distances = distances_run(cfg.dataset, out / "distances", data_dir=ctx.data_dir, per_class=cfg.per_class,
                              norms=cfg.distance_norms, n_test=cfg.n_distance_test, seed=cfg.seed,
                              progress=ctx.progress, device=ctx.device)
    perceptibility_run(cfg.dataset, out / "perceptibility", eps=[0.0, 0.05, 0.1, 0.2, 0.3], seed=cfg.seed,
                       data_dir=ctx.data_dir)
    return distances


def _description(cfg: DemoConfig) -> str:
    return (f"A standard {cfg.model} and one adversarially trained with {cfg.defense} (eps {cfg.defense_eps:g}) on "
            f"{cfg.dataset}, attacked with FGSM and PGD-{cfg.pgd_steps} (Linf), evaluated with the '{cfg.suite}' "
            f"suite and the gradient-masking checks, certified with {cfg.certify_method} where the model allows (IBP "
            f"otherwise) at eps {_eps_text(cfg.certify_eps)}: robust accuracy lies between the certified and the "
            f"attacked number. With the transfer matrix between them and the class-distance analysis that says which "
            f"budgets make sense. Scale: {cfg.scale}.")


def _summary(cfg, train_records, attacks, evals, transfer, distances, certified=None) -> dict[str, Any]:
    """The table the terminal and the report's first section show: robust accuracy per model and attack, and the
    certified lower bound with the method that proved it."""
    certified = certified or {}
    cert_eps = [r["eps"] for r in certified.get("standard", [])]
    eps_show = [e for e in cfg.eps if e in cfg.eval_eps or e in cert_eps] or cfg.eps[:2]
    columns = ["model", "clean"] + [f"{a} @ {e:g}" for a in ("FGSM", "PGD") for e in eps_show] + \
              [f"{cfg.suite} suite @ {e:g}" for e in cfg.eval_eps]
    for r in certified.get("standard", []):
        columns.append(f"certified ({r['method']}, first {r['n']}) @ {r['eps']:g}")
    columns += ["checks"]
    rows = []
    for key in ("standard", "adversarial"):
        row = [key, f"{train_records[key]['test_accuracy']:.3f}"]
        for a in ("fgsm", "pgd"):
            by_eps = {r["eps"]: r["robust_accuracy"] for r in attacks[f"{key}/{a}"]["results"]}
            row += [f"{by_eps[e]:.3f}" for e in eps_show]
        row += [f"{r['robust_accuracy']:.3f}" for r in evals[key]["results"]]
        row += [f"{r['certified_accuracy'][-1]['accuracy']:.3f}" for r in certified.get(key, [])]
        row.append(evals[key]["verdict"])
        rows.append(row)
    t = transfer["tables"][-1]
    lines = {"transfer": f"FGSM eps {transfer['eps'][-1]:g}: standard -> adversarial error {t[0][1]:.3f}, "
                         f"adversarial -> standard error {t[1][0]:.3f}",
             "suggested_eps": {n: e["suggested_eps"] for n, e in distances["norms"].items()}}
    return {"columns": columns, "rows": rows, **lines}


def summary_text(record: dict[str, Any]) -> str:
    s = record["summary"]
    widths = [max(len(str(c)), *(len(str(r[i])) for r in s["rows"])) for i, c in enumerate(s["columns"])]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(s["columns"], widths)))]
    for r in s["rows"]:
        lines.append("  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths))))
    lines.append(f"transfer: {s['transfer']}")
    lines.append("suggested eps from the class distances: " +
                 ", ".join(f"{n} {v:.3g}" for n, v in s["suggested_eps"].items()))
    lines.append(f"{record['seconds']:.0f} s in total; report: {record['report']}")
    return "\n".join(lines)
