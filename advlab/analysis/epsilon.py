"""Which epsilon makes sense for this data? Class distances, nearest neighbours, suggested budgets.

    advlab analyze distances --dataset digits --per-class 100 --norms l1,l2,linf --out runs/analyze/digits

For each norm:
- `class_distance`: the average distance between two images of class i and class j (K x K),
  from `per_class` training images of each class. Rows whose smallest entry is off the diagonal
  are classes that are, on average, closer to another class than to themselves (on MNIST in L2,
  2s and 8s are closer to 1s: a thin 1 is near everything).
- nearest neighbours in the full training set of those sampled images: within-class (own class,
  itself excluded) and between-class (any other class), and `nn_class_distance` (K x K), the mean
  distance from a class-i image to its nearest class-j training image.
- train-to-test: every test image's nearest training image (1-NN accuracy, distance, and its
  nearest training image of another class).
- suggested budgets. Two points of different classes at distance d can both keep their label
  under attack only if eps < d / 2 (the balls must not overlap; Yang et al. 2020 use this
  "r-separation" argument). So `suggested_eps` = half the smallest between-class nearest-neighbour
  distance found (over all test images and the sampled training images); `suggested_eps_percentile`
  = half the q-th percentile of those distances, which ignores a few near-duplicates with different
  labels. Per-class budgets apply the same rule to the pairs that involve each class (as the query
  point or as its nearest other-class neighbour), so eps_i + eps_j <= d holds for every
  between-class pair the analysis found.

`device` (CLI `--device`): where the distance tiles are computed; None or the CPU is the exact numpy
code, a GPU computes the same float64 tiles there (advlab.analysis.distances); results are on the CPU.

The JSON layout (`distances.json`, also printed by --json) is documented in docs/analysis.md; the
keys `dataset`, `per_class` and `norms.NORM.class_distance` / `norms.NORM.suggested_eps` are the
stable CLI contract.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import plotting as figures
from .. import rng
from .. import rundir
from ..data import Dataset
from ..errors import AdvlabError
from ..io import write_json
from ..progress import progress as progress_bar
from .budgets import write_eps_per_class
from .distances import DEFAULT_BLOCK, NORM_NAMES, check_norm, count_tasks, mean_class_distances, \
    min_distance_to_classes, resolve_tile_device

RULES = ("separation", "percentile")


def sample_per_class(y: torch.Tensor, per_class: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` points of each class (all of a smaller class), drawn with the seed;
    sorted by class, then by index."""
    if per_class < 1:
        raise AdvlabError(f"`per_class` must be >= 1, got {per_class}")
    g = rng.generator(seed)
    picks = []
    for c in range(num_classes):
        idx = (y == c).nonzero().flatten()
        take = idx[torch.randperm(len(idx), generator=g)[:per_class]]
        picks.append(take.sort().values)
    return torch.cat(picks)


def closer_than_itself(matrix: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Rows i whose smallest off-diagonal entry is below the diagonal entry."""
    rows = []
    for i in range(len(matrix)):
        others = np.where(np.arange(len(matrix)) == i, np.inf, matrix[i])
        j = int(np.nanargmin(others)) if np.isfinite(others).any() else i
        if j != i and others[j] < matrix[i, i]:
            rows.append({"class": i, "name": classes[i], "closest_class": j, "closest_name": classes[j],
                         "own_distance": float(matrix[i, i]), "closest_distance": float(others[j])})
    return rows


def summary(values: np.ndarray) -> dict[str, float | int | None]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0, "min": None, "p1": None, "p5": None, "median": None, "mean": None, "max": None}
    p1, p5, med = np.percentile(v, [1, 5, 50])
    return {"n": int(len(v)), "min": float(v.min()), "p1": float(p1), "p5": float(p5), "median": float(med),
            "mean": float(v.mean()), "max": float(v.max())}


def _between(mins: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: distance to the nearest point of another class, and which class that is."""
    other = mins.copy()
    other[np.arange(len(labels)), labels] = np.inf
    cls = other.argmin(1)
    return other[np.arange(len(labels)), cls], cls


def analyze_distances(ds: Dataset, *, per_class: int = 100, norms: Sequence[str] = NORM_NAMES,
                      n_test: int | None = None, percentile: float = 5.0, rule: str = "separation",
                      seed: int = 0, block: int = DEFAULT_BLOCK, workers: int | None = None,
                      out: str | Path | None = None, progress: bool = True,
                      log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    """Run the class-distance analysis; writes JSON, figures and per-class budgets to `out`.

    `device`: None/"cpu" (the numpy code on the CPU), "auto", "cuda", "cuda:N" or a torch.device:
    where the distance tiles are computed. The record says which (`device`)."""
    norms = _check_options(norms, percentile, rule)
    tile_device = resolve_tile_device(device)  # a missing GPU fails here, before any work
    started = time.perf_counter()
    k = ds.num_classes
    classes = list(ds.classes)
    sample = sample_per_class(ds.y_train, per_class, k, seed)
    xs, ys = ds.x_train[sample], ds.y_train[sample]
    x_test, y_test = ds.test_subset(n_test)
    ys_np, yt_np = ys.numpy(), y_test.numpy()
    out = Path(out) if out is not None else None

    record: dict[str, Any] = {
        "analysis": "distances", "dataset": ds.name, "per_class": per_class, "seed": seed,
        "classes": classes, "n_train": len(ds.y_train), "n_test": len(y_test),
        "sample_sizes": np.bincount(ys_np, minlength=k).tolist(), "percentile": percentile,
        "budget_rule": rule, "block": block, "device": _describe(tile_device), "norms": {},
    }
    for norm in norms:
        t0 = time.perf_counter()
        nn = _nearest_neighbours(ds, norm, xs, ys, sample, x_test, block=block, workers=workers,
                                 progress=progress, device=tile_device)
        stats = _neighbour_statistics(nn, ys_np, yt_np, k)
        entry = _norm_entry(nn, stats, ys_np, yt_np, sample.numpy(), classes, percentile, rule)
        entry["seconds"] = time.perf_counter() - t0
        entry["reasoning"] = reasoning(norm, entry, percentile, ds.bounds)
        if out is not None:
            entry["figures"] = _figures(out, norm, entry, classes, stats.within, stats.between, stats.test_nn,
                                        ds.name, percentile)
            entry["eps_per_class_file"] = write_eps_per_class(
                out / rundir.eps_per_class_file(norm), entry["eps_per_class"], norm=norm, dataset=ds.name,
                classes=classes, rule=_rule_text(rule, percentile))
        record["norms"][norm] = entry
        if log:
            log(f"{norm}: {entry['reasoning']}")

    record["seconds"] = time.perf_counter() - started
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if out is not None:
        record["json"] = str(out / rundir.DISTANCES_FILE)
        write_json(out / rundir.DISTANCES_FILE, record)
    return record


def _check_options(norms: Sequence[str], percentile: float, rule: str) -> list[str]:
    """The checked norm names; a bad percentile or budget rule is an error before any work."""
    norms = [check_norm(n) for n in norms]
    if not norms:
        raise AdvlabError("`norms` needs at least one of l1, l2, linf")
    if not 0 <= percentile <= 100:
        raise AdvlabError(f"`percentile` must be in [0, 100], got {percentile}")
    if rule not in RULES:
        raise AdvlabError(f"`rule` must be one of {', '.join(RULES)}, got {rule!r}")
    return norms


@dataclass
class _Neighbours:
    """The exact searches of one norm: the sampled training points (`s`) and the test points (`t`)
    against the full training set."""
    class_distance: np.ndarray  # (K, K) mean distance between sampled points of class i and class j
    mins_s: np.ndarray  # (n_sample, K) distance to the nearest training point of each class (itself excluded)
    idx_s: np.ndarray  # (n_sample, K) its index in the training set
    mins_t: np.ndarray  # (n_test, K)
    idx_t: np.ndarray  # (n_test, K)


def _nearest_neighbours(ds: Dataset, norm: str, xs, ys, sample, x_test, *, block: int, workers: int | None,
                        progress: bool, device) -> _Neighbours:
    """Class distances of the sample and nearest training neighbours of the sample and the test points."""
    k = ds.num_classes
    total = count_tasks(len(xs), block) + count_tasks(len(x_test), block)
    bar = progress_bar(range(total), f"distances {norm}", progress, unit="block")

    class_distance = mean_class_distances(xs, ys, xs, ys, k, norm, same=True, block=block, workers=workers,
                                          device=device)
    mins_s, idx_s = min_distance_to_classes(xs, ds.x_train, ds.y_train, k, norm, self_index=sample,
                                            block=block, workers=workers, tick=lambda: bar.update(1),
                                            device=device)
    mins_t, idx_t = min_distance_to_classes(x_test, ds.x_train, ds.y_train, k, norm,
                                            block=block, workers=workers, tick=lambda: bar.update(1),
                                            device=device)
    bar.close()
    return _Neighbours(class_distance, mins_s, idx_s, mins_t, idx_t)


@dataclass
class _Statistics:
    """Per point: nearest-neighbour distances within and between classes."""
    within: np.ndarray  # (n_sample,) sampled point -> nearest training point of its own class
    between: np.ndarray  # (n_sample,) ... of another class
    between_cls: np.ndarray  # (n_sample,) which class that is
    nn_class: np.ndarray  # (K, K) mean distance from a class-i sample to its nearest class-j training point
    test_nn: np.ndarray  # (n_test,) test point -> nearest training point
    test_nn_label: np.ndarray  # (n_test,) that point's label
    test_within: np.ndarray  # (n_test,)
    test_between: np.ndarray  # (n_test,)
    test_cls: np.ndarray  # (n_test,)


def _neighbour_statistics(nn: _Neighbours, ys_np: np.ndarray, yt_np: np.ndarray, k: int) -> _Statistics:
    between, between_cls = _between(nn.mins_s, ys_np)
    test_between, test_cls = _between(nn.mins_t, yt_np)
    return _Statistics(
        within=nn.mins_s[np.arange(len(ys_np)), ys_np],
        between=between, between_cls=between_cls,
        nn_class=np.stack([nn.mins_s[ys_np == c].mean(0) if (ys_np == c).any() else np.full(k, np.nan)
                           for c in range(k)]),
        test_nn=nn.mins_t.min(1), test_nn_label=nn.mins_t.argmin(1),
        test_within=nn.mins_t[np.arange(len(yt_np)), yt_np],
        test_between=test_between, test_cls=test_cls)


def _separation_budgets(st: _Statistics, ys_np: np.ndarray, yt_np: np.ndarray, k: int,
                        percentile: float) -> tuple[float, float, list[float], list[float]]:
    """(separation, its percentile, per-class budgets by the separation rule, by the percentile rule)."""
    # Every between-class nearest-neighbour pair the analysis found: its distance, the class of
    # the query point and the class of its neighbour.
    gaps = np.concatenate([st.between, st.test_between])
    gap_labels = np.concatenate([ys_np, yt_np])
    gap_neighbours = np.concatenate([st.between_cls, st.test_cls])
    finite = np.isfinite(gaps)
    if not finite.any():
        raise AdvlabError("no pair of points with different labels: the dataset needs at least two classes")
    separation = float(gaps[finite].min())
    pct = float(np.percentile(gaps[finite], percentile))
    per_class_sep, per_class_pct = [], []
    for c in range(k):
        # A pair bounds the budgets of both its classes, so eps_i + eps_j <= d for every pair.
        mine = finite & ((gap_labels == c) | (gap_neighbours == c))
        per_class_sep.append(float(gaps[mine].min()) / 2 if mine.any() else separation / 2)
        per_class_pct.append(float(np.percentile(gaps[mine], percentile)) / 2 if mine.any() else pct / 2)
    return separation, pct, per_class_sep, per_class_pct


def _norm_entry(nn: _Neighbours, st: _Statistics, ys_np: np.ndarray, yt_np: np.ndarray, sample_np: np.ndarray,
                classes: list[str], percentile: float, rule: str) -> dict[str, Any]:
    """One norm's record (without `seconds`, `reasoning` and the files)."""
    separation, pct, per_class_sep, per_class_pct = _separation_budgets(st, ys_np, yt_np, len(classes), percentile)
    closest = _closest_pair(st.between, st.between_cls, ys_np, nn.idx_s, sample_np, st.test_between, st.test_cls,
                            yt_np, nn.idx_t, classes)
    return {
        "class_distance": nn.class_distance.tolist(),
        "closer_than_itself": closer_than_itself(nn.class_distance, classes),
        "nn_class_distance": st.nn_class.tolist(),
        "nn_closer_than_itself": closer_than_itself(st.nn_class, classes),
        "within_class_nn": summary(st.within),
        "between_class_nn": summary(st.between),
        "nn_misclassified_fraction": float(np.mean(st.between < st.within)),
        "train_test_nn": {**summary(st.test_nn),
                          "one_nn_accuracy": float(np.mean(st.test_nn_label == yt_np)),
                          "within_class": summary(st.test_within),
                          "between_class": summary(st.test_between)},
        "separation": separation,
        "closest_pair": closest,
        "suggested_eps": separation / 2,
        "suggested_eps_percentile": pct / 2,
        "eps_per_class": per_class_sep if rule == "separation" else per_class_pct,
        "eps_per_class_separation": per_class_sep,
        "eps_per_class_percentile": per_class_pct,
    }


def _describe(device: torch.device | None) -> str:
    if device is None:
        return "cpu"
    from ..device import describe
    return describe(device)


def _rule_text(rule: str, percentile: float) -> str:
    if rule == "separation":
        return "half the smallest between-class nearest-neighbour distance of the pairs involving the class"
    return (f"half the {percentile:g}th percentile of the between-class nearest-neighbour distances of the "
            "pairs involving the class")


def _closest_pair(between, between_cls, ys, idx_s, sample, test_between, test_cls, yt, idx_t,
                  classes) -> dict[str, Any]:
    """The two differently labelled points that set `separation`."""
    i_s = int(np.argmin(between)) if len(between) else -1
    i_t = int(np.argmin(test_between)) if len(test_between) else -1
    if i_s < 0 or (i_t >= 0 and test_between[i_t] <= between[i_s]):
        split, index, label, c = "test", i_t, int(yt[i_t]), int(test_cls[i_t])
        dist, ref = float(test_between[i_t]), int(idx_t[i_t, c])
    else:
        split, index, label, c = "train", int(sample[i_s]), int(ys[i_s]), int(between_cls[i_s])
        dist, ref = float(between[i_s]), int(idx_s[i_s, c])
    return {"split": split, "index": index, "label": label, "name": classes[label],
            "train_neighbour": ref, "neighbour_label": c, "neighbour_name": classes[c], "distance": dist}


def reasoning(norm: str, e: dict[str, Any], percentile: float, bounds) -> str:
    cp = e["closest_pair"]
    sep, pct = e["separation"], 2 * e["suggested_eps_percentile"]
    text = (f"the closest two differently labelled points are {sep:.4g} apart ({cp['split']} image {cp['index']} "
            f"'{cp['name']}' and training image {cp['train_neighbour']} '{cp['neighbour_name']}'). A classifier can "
            f"keep both labels under attack only if eps < d/2, so suggested_eps = {sep / 2:.4g}. "
            f"The {percentile:g}th percentile of between-class nearest-neighbour distances is {pct:.4g}: "
            f"eps = {pct / 2:.4g} (suggested_eps_percentile) is below half the gap for {100 - percentile:g}% of the points. "
            f"For scale: a test image's nearest training image is {e['train_test_nn']['median']:.4g} away "
            f"(median), its nearest image of another class {e['train_test_nn']['between_class']['median']:.4g}.")
    if sep < 0.25 * pct:
        text += (" The minimum is far below the percentile: a few near-duplicate images carry different labels "
                 "(ambiguous or mislabelled), so the percentile value is the more representative budget.")
    if bounds is not None and norm == "linf":
        width = float(bounds[1]) - float(bounds[0])
        text += f" (Linf distances are capped by the input range, {width:g}.)"
    return text


def _figures(out: Path, norm: str, e: dict[str, Any], classes, within, between, test_nn, dataset,
             percentile: float) -> dict[str, str]:
    def row_minima(m):
        m = np.asarray(m, dtype=float)
        return [(i, int(np.nanargmin(m[i]))) for i in range(len(m))]

    files = {
        "class_distance": figures.heatmap(
            np.asarray(e["class_distance"]), classes, f"{dataset}: mean {norm} distance between classes",
            out / f"class_distance_{norm}.png", "class of first image", "class of second image",
            highlight=row_minima(e["class_distance"])),
        "nn_class_distance": figures.heatmap(
            np.asarray(e["nn_class_distance"]), classes,
            f"{dataset}: mean {norm} distance to the nearest training image of each class",
            out / f"nn_class_distance_{norm}.png", "class of image", "class of nearest neighbour",
            highlight=row_minima(e["nn_class_distance"])),
        "nn_histogram": figures.histograms(
            {"within-class NN (train sample)": within, "between-class NN (train sample)": between,
             "test -> train NN": test_nn},
            f"{dataset}: nearest-neighbour {norm} distances", f"{norm} distance", out / f"nn_distances_{norm}.png",
            markers={"smallest between-class NN (2 x suggested_eps)": e["separation"],
                     f"{percentile:g}th percentile between-class NN": 2 * e["suggested_eps_percentile"]}),
    }
    return files
