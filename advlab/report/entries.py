"""Turning the records a run directory holds into the entries of the report template's context.

Each public function here takes records (found by find.py) and returns plain data the template shows:
the robustness-curve series of an attack or an evaluation, the certified-versus-attacked bracket, the
epsilon slider's frames, the per-class table, the gradient-masking checks with their explanations,
the distance, transfer and generative sections, and the certified-robustness section; figures are drawn
through advlab.plotting and inlined as data URIs. `fmt` and `pct` format numbers here and in the template.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..artifacts import names
from ..artifacts.evaluate import checks_dominate
from ..errors import AdvlabError
from ..evaluate.stats import clopper_pearson
from ..io import load_tensors
from .. import plotting as F
from . import find


# -- numbers, also the template's filters ---------------------------------------------------------
def fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def pct(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * float(v):.{digits}f}%"


# -- one trained run ------------------------------------------------------------------------------
def bracket(name: str, rec: dict[str, Any]) -> dict[str, Any] | None:
    """An evaluation with --certify: certified (lower) and attacked (upper) robust accuracy per eps."""
    rows = [r for r in rec["results"] if "certified_accuracy" in r]
    if not rows or not isinstance(rec.get("certify"), dict) or \
            not all(isinstance(r["eps"], (int, float)) for r in rows):  # per-class budgets: table only in evals
        return None
    c = rec["certify"]
    same = c.get("method") in ("ibp", "crown", "alpha-crown", "exact")   # a certificate of the attacked model
    table = [{"eps": r["eps"], "certified": r["certified_accuracy"], "certified_ci": r.get("certified_ci95"),
              "attacked": r["robust_accuracy"], "attacked_ci": r.get("ci95"), "gap": r.get("gap"),
              "broken": r.get("certified_but_broken"), "exact": r.get("robust_accuracy_exact"),
              "missed": r.get("missed_by_attacks"), "unknown": r.get("unknown")} for r in rows]
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
            "contradictions": c.get("contradictions"), "same_model": same, "rows": table, "series": series,
            "hint": c.get("hint")}


def series_from_attack(name: str, rec: dict[str, Any]) -> dict[str, Any]:
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


def series_from_eval(name: str, rec: dict[str, Any]) -> dict[str, Any]:
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


def slider(run_name: str, run_dir: Path, card: dict[str, Any], attacks: list[dict[str, Any]],
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


def eval_grids(ev_dir: Path, rec: dict[str, Any], classes: list[str] | None, per_grid: int = 8) -> list[dict[str, Any]]:
    """One example grid per budget from an evaluation's saved worst-case examples (eval/SUITE-NORM/
    adversarial.safetensors), drawn as `advlab attack --save` draws its grids: rows clean, perturbation,
    adversarial, the points an attack broke first. Only the rows shown are read from the file. [] when the
    file is missing or unreadable, or its inputs are not images."""
    from safetensors import safe_open

    path = ev_dir / names.EXAMPLES_FILE
    if not path.is_file():
        return []
    try:
        with safe_open(str(path), "pt") as f:
            keys = set(f.keys())
            if not {"x", "x_adv", "logits", "y"} <= keys:
                return []
            x_rows, adv_rows = f.get_slice("x"), f.get_slice("x_adv")
            shape = adv_rows.get_shape()  # (E, N, ...)
            if len(shape) < 4 or len(shape) != len(x_rows.get_shape()) + 1 or shape[0] != len(rec["results"]):
                return []  # (E, N, C, H, W) or (E, N, H, W): images only
            y, logits = f.get_tensor("y").long(), f.get_tensor("logits")
            broken_by = f.get_tensor("broken_by") if "broken_by" in keys else None
            clean = f.get_tensor("clean_logits") if "clean_logits" in keys else None
            classes = list(classes or [str(i) for i in range(logits.shape[-1])])
            grids = []
            for e, row in enumerate(rec["results"]):
                if broken_by is not None:
                    fooled = broken_by[e] > 0  # broken by an attack (0: a clean mistake, -1: robust)
                else:
                    fooled = (logits[e].argmax(1) != y) & (clean.argmax(1) == y if clean is not None else True)
                idx = F.fooled_first(fooled, per_grid).tolist()
                if not idx:
                    continue
                x = torch.cat([x_rows[i:i + 1] for i in idx])
                x_adv = torch.cat([adv_rows[e:e + 1, i:i + 1] for i in idx], dim=1)[0]
                probs = logits[e, idx].softmax(1)
                eps = fmt(row["eps"]) if isinstance(row["eps"], (int, float)) else "per class"
                png = F.adversarial_grid_png(x, x_adv, y[idx], probs.argmax(1), probs.amax(1), classes,
                                             title=f"suite {rec['suite']} {rec.get('norm', 'linf')} eps={eps}: "
                                                   "the worst case per point")
                grids.append({"eps": row["eps"], "src": F.data_uri(png)})
            return grids
    except (OSError, RuntimeError, ValueError, KeyError, IndexError):  # a file the report cannot use is left out
        return []


def _tile(x: torch.Tensor, y: torch.Tensor, probs: torch.Tensor | None, classes) -> dict[str, Any]:
    true = classes[int(y)]
    if probs is None:
        return {"src": F.data_uri(F.tile_png(x)), "caption": f"true {true}", "wrong": False}
    p = int(probs.argmax())
    return {"src": F.data_uri(F.tile_png(x)), "caption": f"true {true} → {classes[p]} ({100 * float(probs[p]):.0f}%)",
            "wrong": p != int(y)}


def per_class(rec: dict[str, Any]) -> dict[str, Any]:
    rows = [{"eps": r["eps"], "cells": [{"v": v, "text": pct(v, 0), "bg": _cell_color(v)} for v in r["per_class"]]}
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


def checks(rec: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
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


def checks_cost_note(rec: dict[str, Any]) -> str | None:
    """When an evaluation's gradient-masking checks took longer than its attacks: what they cost and how to
    bound them (None otherwise, and for records from before the two were timed apart)."""
    if not rec.get("checks") or "suite_seconds" not in rec or not checks_dominate(rec):
        return None
    p = rec.get("checks_passes") or {}
    return (f"The gradient-masking checks took {fmt(rec['checks_seconds'], 3)} s on {rec.get('check_n')} points "
            f"({p.get('forward', 0)} forward and {p.get('backward', 0)} backward passes), longer than the attacks "
            f"({fmt(rec['suite_seconds'], 3)} s). Bound them with --check-n K (fewer points) or leave them out with "
            "--no-checks; the attacks' numbers do not depend on them.")


# -- analyses found anywhere under the root -------------------------------------------------------
def distances(root: Path) -> list[dict[str, Any]]:
    out = []
    for path in find.walk(root, names.DISTANCES_FILE):
        rec = find.read(path)
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
        out.append({"where": find.rel(root, path.parent), "dataset": rec.get("dataset"),
                    "per_class_n": rec.get("per_class"), "classes": rec.get("classes", []), "norms": norms})
    return out


def transfer(root: Path) -> list[dict[str, Any]]:
    out = []
    for path in find.walk(root, names.TRANSFER_FILE):
        rec = find.read(path)
        if not rec or "names" not in rec or "error" not in rec:
            continue
        models = rec["names"]
        figs = []
        for e, eps in enumerate(rec["eps"]):
            m = [[rec["error"][s][t][e] for t in models] for s in models]
            png = F.matrix_heatmap(m, models, models, f"error under transferred {rec.get('attack', 'attack')} "
                                                    f"examples, eps {eps:g}", "evaluated on (target)",
                                   "crafted on (source)", fmt="{:.0%}", vmin=0, vmax=1, cmap="Reds")
            table = [{"source": s, "cells": [pct(rec["error"][s][t][e]) for t in models]} for s in models]
            figs.append({"eps": eps, "src": F.data_uri(png), "table": table})
        out.append({"where": find.rel(root, path.parent), "names": models, "attack": rec.get("attack", "?"),
                    "n": rec.get("n"), "clean_error": rec.get("clean_error", {}), "figures": figs,
                    "ensemble": rec.get("ensemble")})
    return out


def generative(root: Path) -> list[dict[str, Any]]:
    """AC-GAN runs (sample grid, judge quality) and unrestricted attacks (`advlab generate`)."""
    out = []
    for card_path in find.walk(root, names.CARD_FILE):
        card = find.read(card_path)
        if not card or card.get("kind") != "acgan":
            continue
        figures = card_path.parent / names.FIGURES_DIR
        figs = [{"label": label, "src": F.data_uri((figures / f).read_bytes())}
                for f, label in ((names.SAMPLES_PNG, "samples, one row per class"),
                                 (names.QUALITY_PNG, "judge accuracy on generated images"))
                if (figures / f).is_file()]
        attacks = []
        for path in find.walk(card_path.parent / names.ATTACKS_DIR, names.UNRESTRICTED_FILE, depth=1):
            rec = find.read(path)
            if not rec or "success_rate" not in rec:
                continue
            grid = path.parent / names.UNRESTRICTED_PNG
            attacks.append({"where": find.rel(root, path.parent), "record": rec,
                            "legitimacy": rec.get("legitimacy") or {},
                            "src": F.data_uri(grid.read_bytes()) if grid.is_file() else None})
        where = find.rel(root, card_path.parent)
        out.append({"where": card_path.parent.resolve().name if where == "." else where,
                    "dataset": card.get("dataset", {}).get("name"),
                    "epochs": card.get("epochs"), "quality": card.get("metrics", {}).get("quality"),
                    "figures": figs, "attacks": attacks})
    return out


# -- certified robustness -------------------------------------------------------------------------
def certified_entry(name: str, rec: dict[str, Any]) -> dict[str, Any]:
    curve = rec["certified_accuracy"]
    if rec["method"] == "smoothing":
        what = (f"randomized smoothing, sigma {fmt(rec.get('sigma'))}, n0 {rec.get('samples0')}, "
                f"n {rec.get('samples')}, alpha {fmt(rec.get('alpha'))}; {rec.get('abstained', 0)} of {rec['n']} "
                "abstained")
        label = f"{name} · smoothing sigma {fmt(rec.get('sigma'))}"
    else:
        kind = {"ibp": "IBP", "crown": "CROWN", "alpha-crown": "alpha-CROWN", "exact": "exact"}.get(rec["method"],
                                                                                                rec["method"])
        norm = rec.get("norm", "linf")
        what = f"{kind} at {norm} eps {fmt(rec.get('eps'))}"
        if rec["method"] == "exact":
            what += (f": {rec.get('verified')} verified, {rec.get('falsified')} falsified, {rec.get('unknown')} unknown"
                     f" (timeout {fmt(rec.get('timeout'))} s per point)")
            if rec.get("robust_accuracy_exact") is not None:
                what += f"; robust accuracy = {pct(rec['robust_accuracy_exact'], 2)} (exact)"
        label = f"{name} · {kind} {norm} eps {fmt(rec.get('eps'))}"
    return {"run": name, "label": label, "method": rec["method"], "what": what, "n": rec["n"],
            "norm": rec.get("norm", "l2" if rec["method"] == "smoothing" else "linf"),
            "certifies": rec.get("certifies", ""), "seconds": rec.get("seconds"),
            "clean_accuracy": rec.get("clean_accuracy"), "rows": curve, "hint": rec.get("hint"),
            "series": {"label": label, "radius": [float(r["radius"]) for r in curve],
                       "acc": [float(r["accuracy"]) for r in curve],
                       "lo": [float(r.get("ci95", [r["accuracy"]] * 2)[0]) for r in curve],
                       "hi": [float(r.get("ci95", [r["accuracy"]] * 2)[1]) for r in curve]}}


def certified_figures(brackets: list[dict[str, Any]], certified: list[dict[str, Any]]) -> dict[str, Any] | None:
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
