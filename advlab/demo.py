"""The demo a new user runs first (`make demo`, `advlab demo`): everything advlab does, on one page.

    from advlab.demo import run_demo, preset
    record = run_demo(preset("digits"), out="runs/demo")     # -> runs/demo/report.html

Steps, each writing the same artefacts as the command in brackets:
  1. train a standard model and an adversarially trained one            (advlab train)
  2. attack both with FGSM and PGD over an epsilon grid, save examples   (advlab attack --save)
  3. the transfer matrix between the two models                          (advlab.evaluate.transfer)
  4. the evaluation suite and the gradient-masking checks, per model,    (advlab evaluate --certify)
     with the IBP-certified lower bound beside the attacked upper bound; the worst case per
     example also counts the examples steps 2 and 3 recorded in the run directories
  5. the epsilon analysis: class distances and perceptibility            (advlab analyze ...)
  6. the HTML report                                                     (advlab report)

The attack, evaluation and analysis steps call the CLI in-process, so a demo directory is exactly
what a user would get by typing the commands (and `advlab report` re-renders it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import AdvlabError


@dataclass
class DemoConfig:
    dataset: str = "digits"
    model: str = "cnn-small"
    epochs: int = 15
    lr: float = 3e-3
    defense: str = "pgd"                  # the adversarially trained model
    defense_eps: float = 0.1
    defense_args: dict[str, Any] = field(default_factory=lambda: {"steps": 5})
    eps: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.3])
    pgd_steps: int = 20
    n_attack: int | None = None           # first N test points (None: all)
    suite: str = "fast"
    n_eval: int | None = None
    eval_eps: list[float] = field(default_factory=lambda: [0.1, 0.2])
    check_n: int = 200
    n_transfer: int | None = None
    per_class: int = 100                  # class-distance analysis: training images per class
    n_distance_test: int | None = None
    distance_norms: list[str] = field(default_factory=lambda: ["l2", "linf"])
    seed: int = 0
    scale: str = "full"


def preset(dataset: str = "digits", quick: bool = False) -> DemoConfig:
    """Settings per dataset; `quick` is a tiny version for tests and smoke checks (seconds, not minutes)."""
    if dataset == "fashion-mnist":
        cfg = DemoConfig(dataset=dataset, epochs=5, defense="fgsm-rs", defense_eps=0.1, defense_args={},
                         eps=[0.02, 0.05, 0.1, 0.15, 0.2], n_attack=1000, suite="standard", n_eval=1000,
                         eval_eps=[0.1], check_n=200, n_transfer=1000, per_class=200, n_distance_test=2000)
    elif dataset in ("digits", "mnist", "cifar10"):
        cfg = DemoConfig(dataset=dataset)
        if dataset == "mnist":
            cfg.epochs, cfg.defense, cfg.defense_args, cfg.eps = 5, "fgsm-rs", {}, [0.05, 0.1, 0.2, 0.3]
            cfg.defense_eps, cfg.n_attack, cfg.n_eval, cfg.n_transfer, cfg.eval_eps = 0.3, 1000, 1000, 1000, [0.1, 0.3]
            cfg.n_distance_test = 2000
        if dataset == "cifar10":
            cfg.epochs, cfg.defense, cfg.defense_args = 10, "fgsm-rs", {}
            cfg.defense_eps, cfg.eps, cfg.eval_eps = 8 / 255, [2 / 255, 4 / 255, 8 / 255, 16 / 255], [8 / 255]
            cfg.n_attack = cfg.n_eval = cfg.n_transfer = 500
            cfg.n_distance_test = 1000
    else:
        raise AdvlabError(f"the demo runs on image datasets: digits (default), fashion-mnist, mnist or cifar10, "
                          f"not {dataset!r}")
    if quick:
        cfg = dataclasses.replace(cfg, epochs=2, defense_args={**cfg.defense_args, "steps": 2}
                                  if cfg.defense == "pgd" else cfg.defense_args,
                                  eps=cfg.eps[1::2][:3], pgd_steps=5, n_attack=40, n_eval=40,
                                  eval_eps=cfg.eval_eps[:1], check_n=24, n_transfer=40, per_class=8, distance_norms=["linf"],
                                  n_distance_test=50, scale="quick (tiny settings for a smoke test)")
    return cfg


def _cli(args: list[str]) -> dict[str, Any]:
    """Run an advlab command in-process with --json; return its record (errors raise)."""
    from .cli import build_parser

    parsed = build_parser().parse_args([*args, "--json"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        parsed.handler(parsed)
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def _eps_text(values: list[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def run_demo(cfg: DemoConfig, out: str | Path = "runs/demo", *, data_dir: str | None = None, progress: bool = True,
             log: Callable[[str], None] | None = None, device: str = "auto") -> dict[str, Any]:
    """Run every step, write OUT/demo.json and OUT/report.html; returns the demo record.
    `device`: where the models train and are attacked (auto: the GPU when there is one)."""
    from .device import resolve_device
    from .defenses.run import train_run
    from .defenses.training import TrainConfig
    from .io import write_json
    from .report.html import build_report

    log = log or (lambda msg: None)
    out = Path(out)
    started = time.perf_counter()
    steps: list[dict[str, Any]] = []
    total = 6
    dev = resolve_device(device)
    data_args = ["--data-dir", data_dir] if data_dir else []
    device_args = ["--device", str(dev)]
    quiet = [] if progress else ["--no-progress"]

    def step(i: int, name: str):
        log(f"[{i}/{total}] {name}")
        return name, time.perf_counter()

    def done(name: str, t0: float) -> None:
        steps.append({"name": name, "seconds": time.perf_counter() - t0})

    runs = {"standard": out / "standard", "adversarial": out / "adversarial"}
    train_records = {}
    name, t0 = step(1, f"training a standard and an adversarially trained ({cfg.defense}, eps {cfg.defense_eps:g}) "
                       f"{cfg.model} on {cfg.dataset}, {cfg.epochs} epochs each")
    for key, defense in (("standard", "none"), ("adversarial", cfg.defense)):
        kwargs = {} if defense == "none" else {"eps": cfg.defense_eps, **cfg.defense_args}
        train_records[key] = train_run(cfg.dataset, cfg.model, runs[key], data_dir=data_dir, defense=defense,
                                       defense_kwargs=kwargs, config=TrainConfig(epochs=cfg.epochs, lr=cfg.lr,
                                                                                 seed=cfg.seed),
                                       overwrite=True, progress=progress, log=log, device=dev)
        log(f"      {key}: test accuracy {train_records[key]['test_accuracy']:.4f} "
            f"({train_records[key]['seconds']:.1f} s)")
    done("training", t0)

    name, t0 = step(2, f"attacking both with FGSM and PGD-{cfg.pgd_steps} at eps {_eps_text(cfg.eps)}")
    attacks: dict[str, dict[str, Any]] = {}
    n_attack = ["--n", str(cfg.n_attack)] if cfg.n_attack else []
    for key, run in runs.items():
        for attack, extra in (("fgsm", []), ("pgd", ["--steps", str(cfg.pgd_steps)])):
            attacks[f"{key}/{attack}"] = _cli(["attack", "--run", str(run), "--attack", attack, "--norm", "linf",
                                               "--eps", _eps_text(cfg.eps), *extra, *n_attack, "--save",
                                               "--seed", str(cfg.seed), *quiet, *data_args, *device_args])
    done("attacks", t0)

    name, t0 = step(3, "transfer matrix (FGSM examples crafted on each model, shown to both; kept for the evaluation)")
    transfer = _transfer(runs, cfg, out / "transfer", data_dir, dev)
    done("transfer", t0)

    certify = _ibp_supported(runs["standard"])  # the bracket, when IBP can bound this model (cheap: seconds)
    name, t0 = step(4, f"evaluation suite '{cfg.suite}' and gradient-masking checks at eps {_eps_text(cfg.eval_eps)}"
                       + (", with the IBP-certified lower bound" if certify else ""))
    evals = {}
    n_eval = ["--n", str(cfg.n_eval)] if cfg.n_eval else []
    for key, run in runs.items():
        evals[key] = _cli(["evaluate", "--run", str(run), "--eps", _eps_text(cfg.eval_eps), "--suite", cfg.suite,
                           *n_eval, "--check-n", str(cfg.check_n), "--fresh", "--seed", str(cfg.seed), *quiet,
                           *data_args, *device_args, *(["--certify"] if certify else [])])
        log(f"      {key}: verdict {evals[key]['verdict']}")
    done("evaluation", t0)

    name, t0 = step(5, "epsilon analysis: class distances and perceptibility")
    distances = _cli(["analyze", "distances", "--dataset", cfg.dataset, "--per-class", str(cfg.per_class),
                      "--norms", ",".join(cfg.distance_norms), *(["--n", str(cfg.n_distance_test)] if cfg.n_distance_test else []),
                      "--out", str(out / "analysis" / "distances"), "--seed", str(cfg.seed), *quiet, *data_args])
    _cli(["analyze", "perceptibility", "--dataset", cfg.dataset, "--eps", "0,0.05,0.1,0.2,0.3",
          "--out", str(out / "analysis" / "perceptibility"), "--seed", str(cfg.seed), *data_args])
    done("epsilon analysis", t0)

    summary = _summary(cfg, train_records, attacks, evals, transfer, distances)
    record = {"demo": cfg.dataset, "description": _description(cfg), "config": dataclasses.asdict(cfg),
              "summary": summary, "steps": steps, "seconds": time.perf_counter() - started,
              "report": str(out / "report.html")}
    write_json(out / "demo.json", record)

    name, t0 = step(6, "writing the HTML report")
    build_report(out)
    done("report", t0)
    record["steps"] = steps
    record["seconds"] = time.perf_counter() - started
    write_json(out / "demo.json", record)
    return record


def _ibp_supported(run: Path) -> bool:
    from .certify import check_ibp_supported
    from .runs import load_run

    try:
        check_ibp_supported(load_run(run)[0])
    except AdvlabError:
        return False
    return True


def _transfer(runs: dict[str, Path], cfg: DemoConfig, out: Path, data_dir: str | None, device) -> dict[str, Any]:
    from .attacks import FGSM
    from .evaluate.recorded import save_transfer
    from .evaluate.transfer import transfer_matrix
    from .io import write_json
    from .runs import dataset_from_card, load_run

    models, card = {}, None
    for key, run in runs.items():
        models[key], card = load_run(run, device=device)
    data = dataset_from_card(card, data_dir)
    x, y = data.test_subset(cfg.n_transfer)
    m = transfer_matrix(models, x, y, list(cfg.eval_eps), FGSM("linf"), bounds=data.bounds)
    for source, result in m.results.items():  # each model's examples, scored on the other: RUN/transfer/
        for target, run in runs.items():
            if target != source:
                save_transfer(run, source, x, result.scores[target], "linf")
    record = {**m.as_dict(), "attack": "fgsm", "norm": "linf", "n": len(y), "dataset": data.name}
    write_json(out / "transfer.json", record)
    return record


def _description(cfg: DemoConfig) -> str:
    return (f"A standard {cfg.model} and one adversarially trained with {cfg.defense} (eps {cfg.defense_eps:g}) on "
            f"{cfg.dataset}, attacked with FGSM and PGD-{cfg.pgd_steps} (Linf), evaluated with the '{cfg.suite}' "
            f"suite and the gradient-masking checks (beside it, where the model allows, the IBP-certified lower bound: "
            f"robust accuracy lies between the two), with the transfer matrix between them and the class-distance "
            f"analysis that says which budgets make sense. Scale: {cfg.scale}.")


def _summary(cfg, train_records, attacks, evals, transfer, distances) -> dict[str, Any]:
    """The table the terminal and the report's first section show: robust accuracy per model and attack."""
    eps_show = [e for e in cfg.eps if e in cfg.eval_eps] or cfg.eps[:2]
    columns = ["model", "clean"] + [f"{a} @ {e:g}" for a in ("FGSM", "PGD") for e in eps_show] + \
              [f"{cfg.suite} suite @ {e:g}" for e in cfg.eval_eps]
    certified = all("certified_accuracy" in r for key in ("standard", "adversarial") for r in evals[key]["results"])
    if certified:
        columns += [f"certified @ {e:g}" for e in cfg.eval_eps]
    columns += ["checks"]
    rows = []
    for key in ("standard", "adversarial"):
        row = [key, f"{train_records[key]['test_accuracy']:.3f}"]
        for a in ("fgsm", "pgd"):
            by_eps = {r["eps"]: r["robust_accuracy"] for r in attacks[f"{key}/{a}"]["results"]}
            row += [f"{by_eps[e]:.3f}" for e in eps_show]
        row += [f"{r['robust_accuracy']:.3f}" for r in evals[key]["results"]]
        if certified:
            row += [f"{r['certified_accuracy']:.3f}" for r in evals[key]["results"]]
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
