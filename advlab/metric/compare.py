"""Calibrating eps in the embedding, and pixel- versus embedding-space adversarial examples.

    advlab analyze embedding --dataset digits --epochs 10 --n 300 --out runs/analyze/embedding-digits

- `calibrate`: within-class and between-class embedding distances (the class-distance matrix and
  nearest neighbours of advlab.analysis.distances, computed on embeddings) and a suggested budget.
  As for pixels, two points of different classes at embedding distance d keep their labels only if
  eps_e < d / 2; the smallest such gap in a learned embedding is ~0 (a few mis-embedded points), so
  `suggested_eps` is half the `percentile`-th percentile of the between-class nearest-neighbour
  distances (`suggested_eps_separation`, half the smallest one, is reported beside it).
- `compare_threats`: the same classifier attacked with pixel PGD over a grid of pixel budgets and
  with embedding PGD over a grid of embedding budgets. For every budget: the attack's success rate
  and how often a successful adversarial example also changes the k-NN label in the embedding (the
  label of its k nearest training embeddings), a proxy for "a person would see another class".
  Matching: for each target success rate, the budget of each threat whose success rate is nearest.
- figures: 2-D projection of the test embeddings (PCA or t-SNE), histograms of within- and
  between-class distances, label-change rate against success rate, and an image grid with the
  pixel and the embedding adversarial examples of the same points side by side.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..analysis.distances import mean_class_distances, min_distance_to_classes
from ..analysis.epsilon import closer_than_itself, sample_per_class, summary
from .. import rundir
from ..data import Dataset
from ..errors import AdvlabError
from ..io import write_json
from .embedding_threat import EmbeddingPGD
from .triplet import embed, knn_predict


def _between(mins: np.ndarray, labels: np.ndarray) -> np.ndarray:
    other = mins.copy()
    other[np.arange(len(labels)), labels] = np.inf
    return other.min(1)


def calibrate(net: nn.Module, ds: Dataset, *, per_class: int = 100, percentile: float = 5.0, seed: int = 0,
              n_test: int | None = None, z_train: torch.Tensor | None = None) -> dict[str, Any]:
    """Within- and between-class distances in the embedding and a suggested eps_e."""
    if not 0 <= percentile <= 100:
        raise AdvlabError(f"percentile must be in [0, 100], got {percentile}")
    k = ds.num_classes
    z_train = embed(net, ds.x_train) if z_train is None else z_train
    sample = sample_per_class(ds.y_train, per_class, k, seed)
    zs, ys = z_train[sample], ds.y_train[sample]
    x_test, y_test = ds.test_subset(n_test)
    z_test = embed(net, x_test)
    class_distance = mean_class_distances(zs, ys, zs, ys, k, "l2", same=True)
    mins_s, _ = min_distance_to_classes(zs, z_train, ds.y_train, k, "l2", self_index=sample)
    mins_t, _ = min_distance_to_classes(z_test, z_train, ds.y_train, k, "l2")
    ys_np, yt_np = ys.numpy(), y_test.numpy()
    within = mins_s[np.arange(len(ys_np)), ys_np]
    between = np.concatenate([_between(mins_s, ys_np), _between(mins_t, yt_np)])
    between = between[np.isfinite(between)]
    if not len(between):
        raise AdvlabError("no pair of points with different labels: the dataset needs at least two classes")
    off = ~np.eye(k, dtype=bool)
    return {
        "per_class": per_class, "percentile": percentile,
        "class_distance": class_distance.tolist(),
        "closer_than_itself": closer_than_itself(class_distance, list(ds.classes)),
        "mean_within_class": float(np.nanmean(np.diag(class_distance))),
        "mean_between_class": float(np.nanmean(class_distance[off])),
        "within_class_nn": summary(within),
        "between_class_nn": summary(between),
        "suggested_eps": float(np.percentile(between, percentile)) / 2,
        "suggested_eps_separation": float(between.min()) / 2,
        "_within": within, "_between": between,
    }


def _rows(result, x: torch.Tensor, knn_clean: torch.Tensor, knn_adv: list[torch.Tensor],
          emb_dist: torch.Tensor, referee: tuple[torch.Tensor, list[torch.Tensor]] | None = None
          ) -> list[dict[str, Any]]:
    ok = result.clean_correct
    rows = []
    for e, eps in enumerate(result.eps):
        fooled = result.success[e] & ok
        changed = knn_adv[e] != knn_clean
        n_fooled = int(fooled.sum())
        delta = (result.x_adv[e] - x).flatten(1)

        def median(values: torch.Tensor) -> float:
            return float(values[fooled].median()) if n_fooled else float("nan")

        rows.append({
            "eps": eps,
            "success_rate": n_fooled / max(int(ok.sum()), 1),
            "robust_accuracy": float(result.correct[e].float().mean()),
            "n_fooled": n_fooled,
            # Among the successful adversarial examples: does the embedding's k-NN label change too,
            # and does it become the classifier's new (wrong) label?
            "knn_change_rate": float((changed & fooled).sum()) / n_fooled if n_fooled else float("nan"),
            "knn_agrees_with_attack": float(((knn_adv[e] == result.predictions[e]) & fooled).sum()) / n_fooled
            if n_fooled else float("nan"),
            "median_pixel_l2": median(delta.norm(dim=1)),
            "median_pixel_linf": median(delta.abs().amax(1)),
            "median_embedding_distance": median(emb_dist[e]),
        })
        if referee is not None:  # the same question asked of an independently trained embedding
            ref_changed = referee[1][e] != referee[0]
            rows[-1]["referee_knn_change_rate"] = float((ref_changed & fooled).sum()) / n_fooled if n_fooled \
                else float("nan")
    return rows


def match(pixel_rows: list[dict], embedding_rows: list[dict], targets: Sequence[float]) -> list[dict[str, Any]]:
    """For each target success rate, the row of each threat whose success rate is nearest to it."""
    out = []
    for t in targets:
        p = min(pixel_rows, key=lambda r: (abs(r["success_rate"] - t), r["eps"]))
        e = min(embedding_rows, key=lambda r: (abs(r["success_rate"] - t), r["eps"]))
        out.append({"target_success": t, "pixel": p, "embedding": e,
                    "success_gap": abs(p["success_rate"] - e["success_rate"])})
    return out


def refine(rows: list[dict], targets: Sequence[float]) -> list[float]:
    """Budgets to try next: for each target success rate, the linear interpolation between the two
    measured budgets whose success rates bracket it (nothing when a measured one is within 0.02)."""
    pts = sorted((r["eps"], r["success_rate"]) for r in rows)
    new = set()
    for t in targets:
        if any(abs(s - t) <= 0.02 for _, s in pts):
            continue
        below = [(e, s) for e, s in pts if s < t]
        above = [(e, s) for e, s in pts if s > t]
        if not below or not above:
            continue
        (e0, s0), (e1, s1) = max(below, key=lambda p: p[0]), min(above, key=lambda p: p[0])
        if e1 <= e0:
            continue
        e = e0 + (t - s0) * (e1 - e0) / (s1 - s0)
        new.add(round(e, 6))
    return sorted(new - {e for e, _ in pts})


def compare_threats(classifier: nn.Module, net: nn.Module, ds: Dataset, *, pixel_eps: Sequence[float],
                    embedding_eps: Sequence[float], pixel_norm: str = "linf", n: int | None = 300, steps: int = 20,
                    k: int = 5, targets: Sequence[float] = (0.25, 0.5, 0.75), refine_rounds: int = 2, seed: int = 0,
                    z_train: torch.Tensor | None = None, referee: nn.Module | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Pixel PGD and embedding PGD on the first `n` test points; success and k-NN label changes.

    Both threats run over their grid, then `refine_rounds` times over budgets interpolated towards
    each target success rate (one call per round, so success rises with eps within a call).
    `referee`: a second embedding net (e.g. trained with another seed) whose k-NN label is checked
    too (`referee_knn_change_rate`), a judge independent of the embedding that bounds the attack."""
    from ..attacks import PGD

    x, y = ds.test_subset(n)
    z_train = embed(net, ds.x_train) if z_train is None else z_train
    z = embed(net, x)

    def knn(inputs):
        return knn_predict(embed(net, inputs), z_train, ds.y_train, ds.num_classes, k)

    knn_clean = knn(x)
    if referee is not None:
        z_ref = embed(referee, ds.x_train)

        def knn_ref(inputs):
            return knn_predict(embed(referee, inputs), z_ref, ds.y_train, ds.num_classes, k)

        ref_clean = knn_ref(x)
    attacks = {"pixel": PGD(pixel_norm, steps=steps, seed=seed),
               # Unbounded features have no box to size the steps by: use the pixel grid's largest budget.
               "embedding": EmbeddingPGD(net, pixel_norm=pixel_norm, steps=steps, seed=seed,
                                         step_size=None if ds.bounds else 2.5 * max(pixel_eps) / steps)}
    grids = {"pixel": list(pixel_eps), "embedding": list(embedding_eps)}
    out: dict[str, Any] = {"n": len(y), "k": k, "steps": steps, "pixel_norm": pixel_norm,
                           "knn_clean_accuracy": float((knn_clean == y).float().mean())}
    for name, attack in attacks.items():
        rows, found, seconds, eps_list = [], {}, 0.0, grids[name]
        for _ in range(refine_rounds + 1):
            if not eps_list:
                break
            started = time.perf_counter()
            res = attack(classifier, x, y, eps_list, bounds=ds.bounds, progress=progress)
            seconds += time.perf_counter() - started
            knn_adv = [knn(xa) for xa in res.x_adv]
            emb_dist = torch.stack([(embed(net, xa) - z).norm(dim=1) for xa in res.x_adv])
            ref = (ref_clean, [knn_ref(xa) for xa in res.x_adv]) if referee is not None else None
            new = _rows(res, x, knn_clean, knn_adv, emb_dist, ref)
            for e, r in enumerate(new):
                r["refined"] = bool(rows)
                found[r["eps"]] = (res, e, knn_adv[e])
            rows = sorted(rows + new, key=lambda r: r["eps"])
            out["clean_accuracy"] = res.clean_accuracy()
            eps_list = refine(rows, targets)
        out[name] = {"rows": rows, "seconds": seconds}
        out[f"_{name}"] = found
    out["matched"] = match(out["pixel"]["rows"], out["embedding"]["rows"], targets)
    return out


# -- figures -----------------------------------------------------------------------------------------
def projection_plot(z: torch.Tensor, y: torch.Tensor, classes: Sequence[str], path, method: str = "pca",
                    seed: int = 0, max_points: int = 2000, title: str = "") -> str:
    """Scatter of a 2-D projection of embeddings (PCA or t-SNE from scikit-learn), coloured by class."""
    from ..plotting import new_figure, save_png

    z, y = z[:max_points].numpy(), y[:max_points].numpy()
    if method == "pca":
        from sklearn.decomposition import PCA
        p = PCA(n_components=2, random_state=seed).fit_transform(z)
    elif method == "tsne":
        from sklearn.manifold import TSNE
        p = TSNE(n_components=2, random_state=seed, init="pca", perplexity=min(30.0, max(2.0, (len(z) - 1) / 3))
                 ).fit_transform(z)
    else:
        raise AdvlabError(f"unknown projection {method!r}; choose pca or tsne")
    fig = new_figure(6.5, 5.5)
    ax = fig.add_subplot()
    for c in range(len(classes)):
        m = y == c
        ax.scatter(p[m, 0], p[m, 1], s=6, alpha=0.7, color=f"C{c % 10}", label=str(classes[c]))
    ax.set_title(title or f"test embeddings, {method.upper()}")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="best", ncol=2)
    return save_png(fig, path)


def side_by_side_grid(x: torch.Tensor, y: torch.Tensor, pixel_found: tuple, embedding_found: tuple,
                      classes: Sequence[str], path, per_grid: int = 8) -> str | None:
    """Rows: points fooled by both attacks; columns: original (true label), pixel adversarial,
    embedding adversarial (each captioned with the classifier's label and the k-NN label) and both
    perturbations, magnified by the same factor. `*_found` are (AttackResult, epsilon index, k-NN
    labels of its adversarial examples)."""
    from ..plotting import new_figure, save_png, to_image

    (pixel, e_pixel, knn_pixel), (embedding, e_emb, knn_emb) = pixel_found, embedding_found
    both = pixel.success[e_pixel] & embedding.success[e_emb] & pixel.clean_correct
    idx = both.nonzero().flatten()[:per_grid]
    if len(idx) == 0:
        return None
    c = list(classes)
    fig = new_figure(7.5, 1.45 * len(idx) + 0.8)
    fig.suptitle(f"pixel (eps={pixel.eps[e_pixel]:.3g}) vs embedding (eps_e={embedding.eps[e_emb]:.3g}) "
                 "adversarial examples\ncaptions: classifier label / k-NN label in the embedding", fontsize=9)
    axes = fig.subplots(len(idx), 5, squeeze=False)
    for r, i in enumerate(idx.tolist()):
        xp, xe = pixel.x_adv[e_pixel][i], embedding.x_adv[e_emb][i]
        dp, de = xp - x[i], xe - x[i]
        scale = 0.5 / max(dp.abs().max().item(), de.abs().max().item(), 1e-12)
        cells = [(x[i], f"true {c[y[i]]}"),
                 (xp, f"pixel: {c[pixel.predictions[e_pixel][i]]} / {c[knn_pixel[i]]}"),
                 (xe, f"embedding: {c[embedding.predictions[e_emb][i]]} / {c[knn_emb[i]]}"),
                 (0.5 + scale * dp, f"pixel delta x{scale:.0f}"), (0.5 + scale * de, f"embedding delta x{scale:.0f}")]
        for col, (img, title) in enumerate(cells):
            ax = axes[r][col]
            ax.imshow(to_image(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=6.5)
            ax.set_xticks([])
            ax.set_yticks([])
    return save_png(fig, path)


def change_curve(cmp: dict[str, Any], path) -> str:
    from ..plotting import curves

    lines = {}
    for i, name in enumerate(("pixel", "embedding")):
        rows = [r for r in cmp[name]["rows"] if r["n_fooled"]]
        lines[f"{name}-space attack"] = {"x": [r["success_rate"] for r in rows],
                                         "y": [r["knn_change_rate"] for r in rows], "style": "measured",
                                         "color": f"C{i}"}
    return curves([], lines, "adversarial examples that also change the k-NN label",
                  "attack success rate", "k-NN label change rate (among successes)", path, ylim=(-0.02, 1.02))


def write_record(out: Path, record: dict[str, Any]) -> None:
    write_json(out / rundir.EMBEDDING_FILE, {k: v for k, v in record.items() if not k.startswith("_")})
