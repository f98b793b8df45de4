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
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..artifacts import names
from ..errors import AdvlabError
from ..evaluate.stats import clopper_pearson
from ..evaluate.recorded import fold_record
from ..io import atomic_write, load_tensors, read_record
from .. import plotting as F

REPORT_FILE = names.REPORT_FILE
SKIP_DIRS = {names.CHECKPOINT_DIR, "parts", "__pycache__"}
MAX_DEPTH = 4


# -- discovery ------------------------------------------------------------------------------------
def _walk(root: Path, name: str, depth: int = MAX_DEPTH) -> list[Path]:
    """Files called `name` under root, at most `depth` levels down, in a stable order."""
    found: list[Path] = []

    def visit(d: Path, level: int) -> None:
        if (d / name).is_file():
            found.append(d / name)
        if level >= depth:
            return
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir() and p.name not in SKIP_DIRS
                              and not p.name.startswith("."))
        except OSError:
            return
        for c in children:
            visit(c, level + 1)

    visit(root, 0)
    return found


_read = read_record  # a JSON object, or None: a file the report cannot use is left out


def _rel(root: Path, path: Path) -> str:
    rel = os.path.relpath(path, root)
    return "." if rel == "." else rel


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _pct(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * float(v):.{digits}f}%"


# -- runs -----------------------------------------------------------------------------------------
def _run_name(root: Path, run_dir: Path, card: dict[str, Any]) -> str:
    if run_dir == root:
        defense = card.get("defense", {}).get("name", "none")
        return f"{card['model']['name']}" + ("" if defense == "none" else f" ({defense})")
    return _rel(root, run_dir)


def _attacks(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((run_dir / names.ATTACKS_DIR).glob(f"*/{names.RESULT_FILE}")):
        rec = _read(path)
        if rec and rec.get("results"):
            grids = []
            for r in rec["results"]:
                png = path.parent / names.grid_png(r["eps"])
                if png.is_file():
                    grids.append({"eps": r["eps"], "src": F.data_uri(png.read_bytes())})
            out.append({"dir": path.parent, "record": rec, "grids": grids})
    return out


def _evals(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((run_dir / names.EVAL_DIR).glob(f"*/{names.RESULT_FILE}")):
        rec = _read(path)
        if rec and rec.get("results"):
            out.append({"dir": path.parent, "record": rec})
    return out


def _certifications(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((run_dir / names.CERTIFY_DIR).glob(f"*/{names.RESULT_FILE}")):
        rec = _read(path)
        if rec and rec.get("certified_accuracy") and rec.get("method"):
            out.append({"dir": path.parent, "record": rec})
    return out


def _bracket(name: str, rec: dict[str, Any]) -> dict[str, Any] | None:
    """An evaluation with --certify: certified (lower) and attacked (upper) robust accuracy per eps."""
    rows = [r for r in rec["results"] if "certified_accuracy" in r]
    if not rows or not isinstance(rec.get("certify"), dict) or \
            not all(isinstance(r["eps"], (int, float)) for r in rows):  # per-class budgets: table only in evals
        return None
    c = rec["certify"]
    same = c.get("method") == "ibp"
    table = [{"eps": r["eps"], "certified": r["certified_accuracy"], "certified_ci": r.get("certified_ci95"),
              "attacked": r["robust_accuracy"], "attacked_ci": r.get("ci95"), "gap": r.get("gap"),
              "broken": r.get("certified_but_broken")} for r in rows]
    series = {"label": f"{name} · {rec['suite']}", "eps": [float(r["eps"]) for r in rows],
              "attacked": [float(r["robust_accuracy"]) for r in rows],
              "certified": [float(r["certified_accuracy"]) for r in rows], "same_model": same,
              "certified_lo": [float(r["certified_ci95"][0]) for r in rows if r.get("certified_ci95")],
              "attacked_hi": [float(r["ci95"][1]) for r in rows if r.get("ci95")]}
    if len(series["certified_lo"]) != len(rows) or len(series["attacked_hi"]) != len(rows):
        series["certified_lo"] = series["attacked_hi"] = []
    if same and all(float(r["eps"]) > 0 for r in rows):  # IBP: both bounds meet at the clean accuracy at eps 0
        clean = float(rec["clean_accuracy"])
        for key in ("eps", "attacked", "certified", "certified_lo", "attacked_hi"):
            if series[key]:
                series[key].insert(0, 0.0 if key == "eps" else clean)
    return {"run": name, "suite": rec["suite"], "norm": rec.get("norm", "linf"), "n": rec.get("n"),
            "method": c.get("method"), "certifies": c.get("certifies", ""), "sigma": c.get("sigma"),
            "contradictions": c.get("contradictions"), "same_model": same, "rows": table, "series": series}


def _series_from_attack(name: str, rec: dict[str, Any]) -> dict[str, Any]:
    n = int(rec["n"])
    eps, acc = [], []
    if all(float(r["eps"]) > 0 for r in rec["results"]):
        eps.append(0.0)
        acc.append(float(rec["clean_accuracy"]))
    for r in rec["results"]:
        eps.append(float(r["eps"]))
        acc.append(float(r["robust_accuracy"]))
    lo, hi = zip(*(clopper_pearson(round(a * n), n) for a in acc))
    return {"label": f"{name} · {rec['attack']}", "group": name, "style": rec["attack"], "eps": eps, "acc": acc,
            "lo": list(lo), "hi": list(hi), "n": n, "norm": rec.get("norm", "linf")}


def _series_from_eval(name: str, rec: dict[str, Any]) -> dict[str, Any]:
    n = int(rec["n"])
    eps, acc, lo, hi = [], [], [], []
    if all(float(r["eps"]) > 0 for r in rec["results"]):
        c = float(rec["clean_accuracy"])
        a, b = clopper_pearson(round(c * n), n)
        eps.append(0.0), acc.append(c), lo.append(a), hi.append(b)
    for r in rec["results"]:
        eps.append(float(r["eps"]))
        acc.append(float(r["robust_accuracy"]))
        lo.append(float(r["ci95"][0]))
        hi.append(float(r["ci95"][1]))
    return {"label": f"{name} · {rec['suite']} suite (worst case)", "group": name, "style": f"suite {rec['suite']}",
            "eps": eps, "acc": acc, "lo": lo, "hi": hi, "n": n, "norm": rec.get("norm", "linf")}


def _slider(run_name: str, run_dir: Path, card: dict[str, Any], attacks: list[dict[str, Any]],
            images: int = 4) -> dict[str, Any] | None:
    """Precomputed adversarial versions of a few images, one frame per epsilon (frame 0: the original)."""
    candidates = sorted((a for a in attacks if (a["dir"] / names.EXAMPLES_FILE).is_file()),
                        key=lambda a: (a["record"]["attack"] != "pgd", a["record"]["attack"]))
    for a in candidates:
        try:
            t = load_tensors(a["dir"] / names.EXAMPLES_FILE)
        except AdvlabError:
            continue
        x_adv, logits, y = t["x_adv"], t["logits"], t["y"]
        if x_adv.dim() < 4:  # (E, N, C, H, W) or (E, N, H, W): images only
            continue
        x = t.get("x")
        if x is None:
            try:
                from ..runs import dataset_from_card
                x, _ = dataset_from_card(card).test_subset(len(y))
            except Exception:  # the dataset is not available here: frames start at the first epsilon
                x = None
        eps = [float(r["eps"]) for r in a["record"]["results"]]
        if len(eps) != x_adv.shape[0]:
            continue
        classes = card.get("dataset", {}).get("classes") or [str(i) for i in range(logits.shape[-1])]
        clean_logits = t.get("clean_logits")
        pred = logits.argmax(2)  # (E, N)
        ok = (clean_logits.argmax(1) == y) if clean_logits is not None else torch.ones_like(y, dtype=torch.bool)
        # Points that the attack flips at some budget first, the earliest flips first.
        flips = (pred != y) & ok
        first = torch.where(flips.any(0), flips.float().argmax(0), torch.full_like(y, len(eps)))
        order = sorted(range(len(y)), key=lambda i: (not bool(ok[i]), int(first[i]), i))[:images]
        frames = []
        if x is not None:
            probs = clean_logits.softmax(1) if clean_logits is not None else None
            frames.append({"eps": 0.0, "images": [_tile(x[i], y[i], probs[i] if probs is not None else None,
                                                        classes) for i in order]})
        probs = logits.softmax(2)
        for e, value in enumerate(eps):
            frames.append({"eps": value, "images": [_tile(x_adv[e][i], y[i], probs[e][i], classes) for i in order]})
        return {"run": run_name, "attack": a["record"]["attack"], "norm": a["record"].get("norm", "linf"),
                "frames": frames,
                "id": "slider-" + re.sub(r"[^A-Za-z0-9]+", "-", f"{run_name}-{a['record']['attack']}").strip("-")}
    return None


def _tile(x: torch.Tensor, y: torch.Tensor, probs: torch.Tensor | None, classes) -> dict[str, Any]:
    true = classes[int(y)]
    if probs is None:
        return {"src": F.data_uri(F.tile_png(x)), "caption": f"true {true}", "wrong": False}
    p = int(probs.argmax())
    return {"src": F.data_uri(F.tile_png(x)), "caption": f"true {true} → {classes[p]} ({100 * float(probs[p]):.0f}%)",
            "wrong": p != int(y)}


def _per_class(rec: dict[str, Any]) -> dict[str, Any]:
    rows = [{"eps": r["eps"], "cells": [{"v": v, "text": _pct(v, 0), "bg": _cell_color(v)} for v in r["per_class"]]}
            for r in rec["results"] if r.get("per_class")]
    return {"classes": rec.get("classes") or [str(i) for i in range(len(rows[0]["cells"]))] if rows else [],
            "rows": rows}


def _cell_color(v: Any) -> str:
    """Red (0) to green (1), light enough to read black text on it and to print."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "#eeeeee"
    v = min(1.0, max(0.0, float(v)))
    r, g, b = int(245 * (1 - v) + 200 * v), int(190 * (1 - v) + 235 * v), int(190 * (1 - v) + 200 * v)
    return f"rgb({r},{g},{b})"


def _docs_dir() -> Path | None:
    d = Path(__file__).resolve().parents[2] / "docs" / "checks"
    return d if d.is_dir() else None


def _checks(rec: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
    docs = _docs_dir()
    rows = []
    for c in rec.get("checks", []):
        doc = c.get("doc") or f"docs/checks/{c['name']}.md"
        href, body = None, None
        if docs is not None:
            path = docs / Path(doc).name
            if path.is_file():
                href = Path(os.path.relpath(path, out_dir)).as_posix()
                body = path.read_text()
        rows.append({**c, "doc": doc, "href": href, "body": body})
    return rows


# -- analyses found anywhere under the root -------------------------------------------------------
def _distances(root: Path) -> list[dict[str, Any]]:
    out = []
    for path in _walk(root, names.DISTANCES_FILE):
        rec = _read(path)
        if not rec or "norms" not in rec:
            continue
        norms = []
        for norm, e in rec["norms"].items():
            figs = []
            files = e.get("figures", {})
            for key, label in (("class_distance", "mean distance between classes"),
                               ("nn_class_distance", "nearest-neighbour distance between classes")):
                png_file = path.parent / Path(files.get(key, "-")).name
                if png_file.is_file():  # the analysis drew it already
                    figs.append({"label": label, "src": F.data_uri(png_file.read_bytes())})
                elif key in e:
                    png = F.matrix_heatmap(e[key], rec["classes"], rec["classes"], f"{norm}: {label}",
                                           "class", "class", fmt="{:.2g}", cmap="magma")
                    figs.append({"label": label, "src": F.data_uri(png)})
            hist = path.parent / Path(files.get("nn_histogram", "-")).name
            if hist.is_file():
                figs.append({"label": "nearest-neighbour distances", "src": F.data_uri(hist.read_bytes())})
            norms.append({"norm": norm, "suggested": e.get("suggested_eps"),
                          "suggested_percentile": e.get("suggested_eps_percentile"),
                          "separation": e.get("separation"), "reasoning": e.get("reasoning", ""),
                          "one_nn": e.get("train_test_nn", {}).get("one_nn_accuracy"),
                          "per_class": e.get("eps_per_class"), "closer": e.get("closer_than_itself", []),
                          "figures": figs})
        out.append({"where": _rel(root, path.parent), "dataset": rec.get("dataset"), "per_class_n": rec.get("per_class"),
                    "classes": rec.get("classes", []), "norms": norms})
    return out


def _transfer(root: Path) -> list[dict[str, Any]]:
    out = []
    for path in _walk(root, names.TRANSFER_FILE):
        rec = _read(path)
        if not rec or "names" not in rec or "error" not in rec:
            continue
        models = rec["names"]
        figs = []
        for e, eps in enumerate(rec["eps"]):
            m = [[rec["error"][s][t][e] for t in models] for s in models]
            png = F.matrix_heatmap(m, models, models, f"error under transferred {rec.get('attack', 'attack')} "
                                                    f"examples, eps {eps:g}", "evaluated on (target)",
                                   "crafted on (source)", fmt="{:.0%}", vmin=0, vmax=1, cmap="Reds")
            table = [{"source": s, "cells": [_pct(rec["error"][s][t][e]) for t in models]} for s in models]
            figs.append({"eps": eps, "src": F.data_uri(png), "table": table})
        out.append({"where": _rel(root, path.parent), "names": models, "attack": rec.get("attack", "?"),
                    "n": rec.get("n"), "clean_error": rec.get("clean_error", {}), "figures": figs,
                    "ensemble": rec.get("ensemble")})
    return out


def _records(root: Path, name: str, needs: str | None = None) -> list[dict[str, Any]]:
    """Every record called `name` (a file name from advlab.artifacts.names) under root that holds the key
    `needs`, with the figures it lists inlined."""
    out = []
    for path in _walk(root, name):
        rec = _read(path)
        if not rec or (needs is not None and needs not in rec):
            continue
        files = {label: _figure_file(path.parent, v) for label, v in (rec.get("figures") or {}).items()}
        figs = [{"label": label, "src": F.data_uri(f.read_bytes())} for label, f in files.items() if f.is_file()]
        out.append({"where": _rel(root, path.parent), "record": rec, "figures": figs})
    return out


def _figure_file(folder: Path, listed: str) -> Path:
    """A figure a record lists: relative to its folder (reproduce.json), or a path as the analysis wrote it,
    found by its name in the record's folder (the folder may have moved since)."""
    inside = folder / listed
    return inside if inside.is_file() else folder / Path(listed).name


def _generative(root: Path) -> list[dict[str, Any]]:
    """AC-GAN runs (sample grid, judge quality) and unrestricted attacks (`advlab generate`)."""
    out = []
    for card_path in _walk(root, names.CARD_FILE):
        card = _read(card_path)
        if not card or card.get("kind") != "acgan":
            continue
        figures = card_path.parent / names.FIGURES_DIR
        figs = [{"label": label, "src": F.data_uri((figures / f).read_bytes())}
                for f, label in ((names.SAMPLES_PNG, "samples, one row per class"),
                                 (names.QUALITY_PNG, "judge accuracy on generated images"))
                if (figures / f).is_file()]
        attacks = []
        for path in _walk(card_path.parent / names.ATTACKS_DIR, names.UNRESTRICTED_FILE, depth=1):
            rec = _read(path)
            if not rec or "success_rate" not in rec:
                continue
            grid = path.parent / names.UNRESTRICTED_PNG
            attacks.append({"where": _rel(root, path.parent), "record": rec,
                            "legitimacy": rec.get("legitimacy") or {},
                            "src": F.data_uri(grid.read_bytes()) if grid.is_file() else None})
        where = _rel(root, card_path.parent)
        out.append({"where": card_path.parent.resolve().name if where == "." else where,
                    "dataset": card.get("dataset", {}).get("name"),
                    "epochs": card.get("epochs"), "quality": card.get("metrics", {}).get("quality"),
                    "figures": figs, "attacks": attacks})
    return out


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
        name = _run_name(self.root, run_dir, card)
        metrics = card.get("metrics", {})
        self.runs.append({"name": name, "model": card["model"].get("name"),
                          "dataset": card.get("dataset", {}).get("name"), "defense": card.get("defense", {}),
                          "test_accuracy": metrics.get("test_accuracy"), "epochs": card.get("epochs"),
                          "seed": card.get("seed"), "train_seconds": metrics.get("train_seconds")})
        dataset = self.runs[-1]["dataset"]
        attacks, evaluations = _attacks(run_dir), _evals(run_dir)
        self._attacks(name, dataset, attacks)
        self._evaluations(name, dataset, run_dir, evaluations)
        certs = [_certified_entry(name, c["record"]) for c in _certifications(run_dir)]
        self.certified += certs
        slider = _slider(name, run_dir, card, attacks)
        if slider:
            self.sliders.append(slider)
        self.configs.append(_config(name, card, attacks, evaluations, certs))

    def _attacks(self, name: str, dataset: str, attacks: list[dict[str, Any]]) -> None:
        for a in attacks:
            self.curves.append(_series_from_attack(name, a["record"]) | {"dataset": dataset})
            if a["grids"]:
                self.grids.append({"run": name, "attack": a["record"]["attack"], "norm": a["record"].get("norm"),
                                   "grids": a["grids"]})

    def _evaluations(self, name: str, dataset: str, run_dir: Path, evaluations: list[dict[str, Any]]) -> None:
        for ev in evaluations:
            # The worst case over everything the run holds, also what was recorded after the evaluation.
            rec = ev["record"] = fold_record(run_dir, ev["dir"], ev["record"])
            self.curves.append(_series_from_eval(name, rec) | {"dataset": dataset})
            self.evals.append({"run": name, "record": rec, "checks": _checks(rec, self.out_dir),
                               "rows": [{"eps": r["eps"], "acc": r["robust_accuracy"], "ci": r["ci95"],
                                         "broken_by": r.get("broken_by", {}),
                                         "conf": r.get("mean_wrong_confidence")} for r in rec["results"]]})
            b = _bracket(name, rec)
            if b:
                self.brackets.append(b | {"dataset": dataset})
            pc = _per_class(rec)
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


def _config(name: str, card: dict[str, Any], attacks, evaluations, certs) -> dict[str, Any]:
    """The run's card (without the training history) and the time each step took."""
    metrics = card.get("metrics", {})
    timings = [("training", metrics.get("train_seconds"))]
    timings += [(f"attack {a['record']['attack']} ({a['record']['n']} points)", a["record"].get("seconds"))
                for a in attacks]
    timings += [(f"evaluate {e['record']['suite']} suite incl. checks", e["record"].get("seconds"))
                for e in evaluations]
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
    cards = [(p.parent, _read(p)) for p in _walk(root, names.CARD_FILE)]
    # AC-GAN runs have their own section.
    cards = [(d, c) for d, c in cards if c and "model" in c and c.get("kind") != "acgan"]
    # Undefended models first, then by name: the baseline reads before the defense.
    cards.sort(key=lambda dc: (dc[1].get("defense", {}).get("name", "none") != "none", _rel(root, dc[0])))
    r = _Runs(root, out_dir or root)
    for run_dir_, card in cards:
        r.add(run_dir_, card)
    demo = _read(root / names.DEMO_FILE) if (root / names.DEMO_FILE).is_file() else None
    from ..version import __version__
    return {
        "title": f"advlab report: {root.resolve().name}",
        "root": str(root.resolve()),
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "demo": demo, "runs": r.runs, "curves": r.curve_figures(), "grids": r.grids, "sliders": r.sliders,
        "evals": r.evals, "per_class": r.per_class, "distances": _distances(root), "transfer": _transfer(root),
        "blobs": _records(root, names.BLOBS_FILE), "perceptibility": _records(root, names.PERCEPTIBILITY_FILE),
        "reproductions": _records(root, names.REPRODUCE_FILE, needs="rows"), "configs": r.configs, "generative": _generative(root),
        "certified": _certified_figures(r.brackets, r.certified), "version": __version__,
    }


def _certified_entry(name: str, rec: dict[str, Any]) -> dict[str, Any]:
    curve = rec["certified_accuracy"]
    if rec["method"] == "smoothing":
        what = (f"randomized smoothing, sigma {_fmt(rec.get('sigma'))}, n0 {rec.get('samples0')}, "
                f"n {rec.get('samples')}, alpha {_fmt(rec.get('alpha'))}; {rec.get('abstained', 0)} of {rec['n']} "
                "abstained")
        label = f"{name} · smoothing sigma {_fmt(rec.get('sigma'))}"
    else:
        what = f"interval bound propagation at Linf eps {_fmt(rec.get('eps'))}"
        label = f"{name} · IBP eps {_fmt(rec.get('eps'))}"
    return {"run": name, "label": label, "method": rec["method"], "what": what, "n": rec["n"],
            "norm": rec.get("norm", "l2" if rec["method"] == "smoothing" else "linf"),
            "certifies": rec.get("certifies", ""), "seconds": rec.get("seconds"),
            "clean_accuracy": rec.get("clean_accuracy"), "rows": curve,
            "series": {"label": label, "radius": [float(r["radius"]) for r in curve],
                       "acc": [float(r["accuracy"]) for r in curve],
                       "lo": [float(r.get("ci95", [r["accuracy"]] * 2)[0]) for r in curve],
                       "hi": [float(r.get("ci95", [r["accuracy"]] * 2)[1]) for r in curve]}}


def _certified_figures(brackets: list[dict[str, Any]], certified: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The "Certified robustness" section: one bracket figure per (dataset, norm), one curve per norm."""
    if not brackets and not certified:
        return None
    figs = []
    for key in dict.fromkeys((b["dataset"], b["norm"]) for b in brackets):
        group = [b for b in brackets if (b["dataset"], b["norm"]) == key]
        title = f"{key[0]}, {key[1]}: robust accuracy between certified and attacked"
        figs.append({"title": title, "src": F.data_uri(F.bracket_curves([b["series"] for b in group], title,
                                                                        f"epsilon ({key[1]})"))})
    curves = []
    for norm in dict.fromkeys(c["norm"] for c in certified):
        group = [c for c in certified if c["norm"] == norm]
        title = f"certified accuracy against {norm} radius (bands: 95% Clopper-Pearson over the test points)"
        curves.append({"title": title, "src": F.data_uri(F.certified_curves([c["series"] for c in group], title,
                                                                            f"radius ({norm})"))})
    return {"brackets": brackets, "bracket_figures": figs, "certifications": certified, "curve_figures": curves}


def render(context: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("advlab.report", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)  # a missing key renders empty: artefacts vary
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    return env.get_template("report.html.j2").render(**context)


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write RUN_DIR/report.html (or `out`) and return its path."""
    return write_report(run_dir, out)[0]


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> tuple[Path, dict[str, Any]]:
    """build_report, also returning the context it rendered."""
    root = Path(run_dir)
    path = Path(out) if out is not None else root / REPORT_FILE
    context = collect(root, path.parent)
    if not (context["runs"] or context["distances"] or context["transfer"] or context["reproductions"]
            or context["blobs"] or context["perceptibility"] or context["generative"]):
        raise AdvlabError(f"{root} holds nothing to report: no card.json (advlab train), no distances.json "
                          "(advlab analyze distances), no transfer.json and no reproduce.json were found "
                          f"within {MAX_DEPTH} levels")
    atomic_write(path, render(context).encode("utf-8"))
    return path, context


def sections(context: dict[str, Any]) -> list[str]:
    """Names of the sections a context will show (for --json output and tests)."""
    keys = ["demo", "runs", "curves", "certified", "grids", "sliders", "evals", "per_class", "distances", "transfer",
            "blobs", "perceptibility", "reproductions", "generative", "configs"]
    return [k for k in keys if context.get(k)]
