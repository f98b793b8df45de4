"""`advlab report RUN_DIR`: one self-contained HTML file from the artefacts a run directory holds.

    from advlab.report import build_report
    path = build_report("runs/demo")          # -> runs/demo/report.html

It reads what the other commands already wrote and renders a section for each kind it finds;
a kind that is missing is simply left out:

    RUN/card.json                          a trained run (also every sub-directory holding one)
    RUN/attacks/NAME-NORM/result.json      `advlab attack --save`: curve, grids (grid-eps*.png),
                    adversarial.safetensors  and the epsilon slider
    RUN/eval/SUITE-NORM/result.json        `advlab evaluate`: worst-case curve, intervals, per class, checks
                                           (with --certify: the certified lower bound beside it, the bracket)
    RUN/certify/NAME/result.json           `advlab certify`: certified accuracy against radius
    **/distances.json                      `advlab analyze distances`: heatmaps and suggested budgets
    **/transfer.json                       the transfer matrix (`advlab.evaluate.transfer`, written by the demo)
    **/blobs.json, **/perceptibility.json  `advlab analyze blobs` / `perceptibility`
    **/reproduce.json                      `advlab reproduce NAME`: ours beside the published numbers
    demo.json                              `advlab demo`: summary table and timings

Every figure is a PNG inlined as base64, the slider is a few lines of inline JavaScript, and there is
no external resource: the file opens offline and prints cleanly.

Three modules do the work: find.py finds and reads those records, entries.py turns them into the
template's context entries (figures drawn through advlab.plotting), and this module gathers the entries
run by run (`collect`), renders templates/report.html.j2 (`render`) and writes the file (`write_report`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import rundir
from ..errors import AdvlabError
from ..evaluate.recorded import fold_record
from ..io import atomic_write
from .. import plotting as F
from . import entries, find


# -- the report -----------------------------------------------------------------------------------
@dataclass
class _Runs:
    """The per-run sections, filled one trained run at a time."""
    root: Path
    out_dir: Path
    runs: list = field(default_factory=list)
    curves: list = field(default_factory=list)       # series of the robustness curves, all runs
    grids: list = field(default_factory=list)
    sliders: list = field(default_factory=list)
    evals: list = field(default_factory=list)
    per_class: list = field(default_factory=list)
    brackets: list = field(default_factory=list)
    certified: list = field(default_factory=list)
    configs: list = field(default_factory=list)

    def add(self, run_dir: Path, card: dict[str, Any]) -> None:
        name = find.run_name(self.root, run_dir, card)
        metrics = card.get("metrics", {})
        self.runs.append({"name": name, "model": card["model"].get("name"), "external": _external(card),
                          "dataset": card.get("dataset", {}).get("name"),
                          "defense": {**card.get("defense", {}), "name": find.defense_name(card)},
                          "test_accuracy": metrics.get("test_accuracy"), "epochs": card.get("epochs"),
                          "seed": card.get("seed"), "train_seconds": metrics.get("train_seconds")})
        dataset = self.runs[-1]["dataset"]
        attacks, evaluations = find.attacks(run_dir), find.evals(run_dir)
        self._attacks(name, dataset, attacks)
        self._evaluations(name, dataset, run_dir, evaluations)
        certs = [entries.certified_entry(name, c["record"]) for c in find.certifications(run_dir)]
        self.certified += certs
        slider = entries.slider(name, run_dir, card, attacks)
        if slider:
            self.sliders.append(slider)
        self.configs.append(_config(name, card, attacks, evaluations, certs))

    def _attacks(self, name: str, dataset: str, attacks: list[dict[str, Any]]) -> None:
        for a in attacks:
            self.curves.append(entries.series_from_attack(name, a["record"]) | {"dataset": dataset})
            if a["grids"]:
                self.grids.append({"run": name, "attack": a["record"]["attack"], "norm": a["record"].get("norm"),
                                   "grids": a["grids"]})

    def _evaluations(self, name: str, dataset: str, run_dir: Path, evaluations: list[dict[str, Any]]) -> None:
        for ev in evaluations:
            # The worst case over everything the run holds, also what was recorded after the evaluation.
            rec = ev["record"] = fold_record(run_dir, ev["dir"], ev["record"])
            self.curves.append(entries.series_from_eval(name, rec) | {"dataset": dataset})
            self.evals.append({"run": name, "record": rec, "checks": entries.checks(rec, self.out_dir),
                               "checks_note": entries.checks_cost_note(rec),
                               "rows": [{"eps": r["eps"], "acc": r["robust_accuracy"], "ci": r["ci95"],
                                         "broken_by": r.get("broken_by", {}),
                                         "conf": r.get("mean_wrong_confidence")} for r in rec["results"]]})
            b = entries.bracket(name, rec)
            if b:
                self.brackets.append(b | {"dataset": dataset})
            grids = entries.eval_grids(ev["dir"], rec, rec.get("classes"))
            if grids:
                self.grids.append({"run": name, "attack": f"suite {rec['suite']} (worst case)",
                                   "norm": rec.get("norm"), "grids": grids})
            pc = entries.per_class(rec)
            if pc["rows"]:
                self.per_class.append({"run": name, "suite": rec["suite"], "norm": rec.get("norm"), **pc})

    def curve_figures(self) -> list[dict[str, Any]]:
        """One robustness-curve figure per (dataset, norm)."""
        figures = []
        for key in dict.fromkeys((s["dataset"], s["norm"]) for s in self.curves):
            group = [s for s in self.curves if (s["dataset"], s["norm"]) == key]
            title = f"{key[0]}, {key[1]}: robust accuracy (bands: 95% Clopper-Pearson)"
            figures.append({"title": title, "series": group,
                            "src": F.data_uri(F.robustness_curves(group, title, f"epsilon ({key[1]})"))})
        return figures


def _external(card: dict[str, Any]) -> dict[str, Any] | None:
    """For the models table: an external model's spec, weights file name and short SHA-256 (None for a run
    advlab trained)."""
    if not find.is_external(card):
        return None
    model = card["model"]
    weights, sha = model.get("weights"), model.get("weights_sha256")
    return {"spec": model.get("spec") or model.get("name"), "weights": Path(weights).name if weights else None,
            "sha256": sha[:12] if sha else None}


def _config(name: str, card: dict[str, Any], attacks, evaluations, certs) -> dict[str, Any]:
    """The run's card (without the training history) and the time each step took."""
    metrics = card.get("metrics", {})
    timings = [("training", metrics.get("train_seconds"))]
    timings += [(f"attack {a['record']['attack']} ({a['record']['n']} points)", a["record"].get("seconds"))
                for a in attacks]
    for e in evaluations:
        rec = e["record"]
        step = f"evaluate {rec['suite']} suite ({rec.get('norm', 'linf')})"
        timings.append((f"{step}, the whole step", rec.get("seconds")))
        if "suite_seconds" in rec:  # recorded apart since issue 25
            timings.append((f"{step}: attacks", rec["suite_seconds"]))
            if rec.get("checks"):
                timings.append((f"{step}: gradient-masking checks on {rec.get('check_n')} points", rec.get("checks_seconds")))
    timings += [(f"certify: {c['label']} ({c['n']} points)", c["seconds"]) for c in certs]
    shown = {k: v for k, v in card.items() if k != "metrics"}
    shown["metrics"] = {k: v for k, v in metrics.items() if k != "history"}
    return {"run": name, "seed": card.get("seed"), "versions": card.get("versions", {}),
            "timings": [(k, v) for k, v in timings if v is not None], "card": json.dumps(shown, indent=2, default=str)}


def collect(run_dir: str | os.PathLike, out_dir: Path | None = None) -> dict[str, Any]:
    """Everything the template shows, as plain data (figures already rendered to data URIs)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise AdvlabError(f"{root} is not a directory; pass a run directory from advlab train, demo or reproduce")
    cards = [(p.parent, find.read(p)) for p in find.walk(root, rundir.CARD_FILE)]
    # AC-GAN runs have their own section.
    cards = [(d, c) for d, c in cards if c and "model" in c and c.get("kind") != "acgan"]
    # Undefended models first, then by name: the baseline reads before the defense.
    cards.sort(key=lambda dc: (find.defense_name(dc[1]) != "none", find.rel(root, dc[0])))
    r = _Runs(root, out_dir or root)
    for run_dir_, card in cards:
        r.add(run_dir_, card)
    demo = find.read(root / rundir.DEMO_FILE) if (root / rundir.DEMO_FILE).is_file() else None
    from ..version import __version__
    return {
        "title": f"advlab report: {root.resolve().name}",
        "root": str(root.resolve()),
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "demo": demo, "runs": r.runs, "curves": r.curve_figures(), "grids": r.grids, "sliders": r.sliders,
        "evals": r.evals, "per_class": r.per_class,
        "distances": entries.distances(root), "transfer": entries.transfer(root),
        "blobs": find.records(root, rundir.BLOBS_FILE), "perceptibility": find.records(root, rundir.PERCEPTIBILITY_FILE),
        "reproductions": find.records(root, rundir.REPRODUCE_FILE, needs="rows"), "configs": r.configs,
        "generative": entries.generative(root),
        "certified": entries.certified_figures(r.brackets, r.certified), "version": __version__,
    }


def render(context: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("advlab.report", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)  # a missing key renders empty: artefacts vary
    env.filters["fmt"] = entries.fmt
    env.filters["pct"] = entries.pct
    return env.get_template("report.html.j2").render(**context)


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write RUN_DIR/report.html (or `out`) and return its path."""
    return write_report(run_dir, out)[0]


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> tuple[Path, dict[str, Any]]:
    """build_report, also returning the context it rendered."""
    root = Path(run_dir)
    path = Path(out) if out is not None else root / rundir.REPORT_FILE
    context = collect(root, path.parent)
    if not (context["runs"] or context["distances"] or context["transfer"] or context["reproductions"]
            or context["blobs"] or context["perceptibility"] or context["generative"]):
        raise AdvlabError(f"{root} holds nothing to report: no card.json (advlab train), no distances.json "
                          "(advlab analyze distances), no transfer.json and no reproduce.json were found "
                          f"within {find.MAX_DEPTH} levels")
    atomic_write(path, render(context).encode("utf-8"))
    return path, context


def sections(context: dict[str, Any]) -> list[str]:
    """Names of the sections a context will show (for --json output and tests)."""
    keys = ["demo", "runs", "curves", "certified", "grids", "sliders", "evals", "per_class", "distances", "transfer",
            "blobs", "perceptibility", "reproductions", "generative", "configs"]
    return [k for k in keys if context.get(k)]
