"""`advlab analyze embedding` end to end: triplet net, quality, calibration, pixel vs embedding attacks.

    advlab analyze embedding --dataset digits --epochs 10 --n 300 --out runs/analyze/embedding-digits

OUT/embedding is the triplet network's run directory (reused when it exists, resumed when only
its checkpoint does) unless --embedding names one; OUT/classifier likewise for the classifier
unless --run names one. Results: OUT/embedding.json and PNG figures in OUT (layout: docs/metric.md).

`device` (CLI `--device`): the triplet network, the classifier and the referee are trained or
loaded there and the attacks run there; embeddings, k-NN labels and figures are computed on the CPU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import rundir
from ..data import Dataset
from ..errors import AdvlabError
from ..runs import load_run
from . import compare
from .triplet import embed, embedding_quality, load_embedding, train_embedding

DEFAULT_PIXEL_EPS = {"linf": [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3], "l2": [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
                     "l1": [1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0]}
# Embedding budgets as fractions of the mean between-class distance in the embedding.
EMBEDDING_FRACTIONS = [0.025, 0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 0.8]


def _same_data(card: dict[str, Any], ds: Dataset, what: str, path) -> None:
    if list(card["dataset"]["input_shape"]) != list(ds.input_shape) or card["dataset"]["name"] != ds.name:
        raise AdvlabError(f"the {what} run {path} was trained on {card['dataset']['name']} "
                          f"{tuple(card['dataset']['input_shape'])}, not on {ds.name} {ds.input_shape}")


def get_embedding(ds: Dataset, out: Path, embedding: str | None, train: dict[str, Any], retrain: bool,
                  progress: bool, log: Callable[[str], None], device=None):
    if embedding is not None:
        net, card = load_embedding(embedding, device=device)
        _same_data(card, ds, "embedding", embedding)
        return net, card, str(embedding)
    run_dir = out / "embedding"
    if (run_dir / rundir.CARD_FILE).exists() and not retrain:
        log(f"using the embedding run {run_dir} (--retrain to train a new one)")
        net, card = load_embedding(run_dir, device=device)
        _same_data(card, ds, "embedding", run_dir)
        return net, card, str(run_dir)
    resume = (run_dir / rundir.CHECKPOINT_DIR).is_dir() and not retrain
    log(f"training a triplet network ({train['mining']}, margin {train['margin']}, dim {train['dim']}, "
        f"{train['epochs']} epochs) in {run_dir}{' (resuming)' if resume else ''}")
    net, card = train_embedding(ds, run_dir, resume=resume, overwrite=retrain, progress=progress, log=log,
                                device=device, **train)
    return net, card, str(run_dir)


def get_classifier(ds: Dataset, out: Path, run: str | None, model: str | None, epochs: int, seed: int,
                   progress: bool, log: Callable[[str], None], data_dir=None, device=None):
    if run is not None:
        net, card = load_run(run, device=device)
        _same_data(card, ds, "classifier", run)
        return net, card, str(run)
    run_dir = out / "classifier"
    if not (run_dir / rundir.CARD_FILE).exists():
        from ..defenses.run import train_run
        from ..defenses.training import TrainConfig
        model = model or ("cnn-small" if len(ds.input_shape) == 3 else "mlp")
        log(f"training a {model} classifier ({epochs} epochs) in {run_dir}")
        train_run(ds.name, model, run_dir, config=TrainConfig(epochs=epochs, lr=3e-3, seed=seed), data_dir=data_dir,
                  resume=(run_dir / rundir.CHECKPOINT_DIR).is_dir(), progress=progress, log=log, device=device)
    net, card = load_run(run_dir, device=device)
    return net, card, str(run_dir)


def _describe(device) -> str:
    from ..device import describe
    return "cpu" if device is None else describe(device)


def analyze_embedding(ds: Dataset, out: str | Path, *, embedding: str | None = None, run: str | None = None,
                      referee: str | None = None,
                      train: dict[str, Any] | None = None, retrain: bool = False, classifier_model: str | None = None,
                      classifier_epochs: int = 10, k: int = 5, per_class: int = 100, percentile: float = 5.0,
                      projection: str = "pca", n: int | None = 300, steps: int = 20, pixel_norm: str = "linf",
                      pixel_eps: Sequence[float] | None = None, embedding_eps: Sequence[float] | None = None,
                      targets: Sequence[float] = (0.25, 0.5, 0.75), compare_attacks: bool = True, seed: int = 0,
                      data_dir=None, progress: bool = True,
                      log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    """Train or load the embedding and the classifier, calibrate eps_e, compare the threats; writes
    OUT/embedding.json. `device`: "auto", "cpu", "cuda", "cuda:N", a torch.device, or None (the CPU)."""
    log = log or (lambda m: None)
    if device is not None:
        from ..device import resolve_device
        device = resolve_device(device)  # a missing GPU fails here, before any work
    _check_options(projection, pixel_norm, pixel_eps, embedding_eps, percentile, per_class, k, targets)
    started = time.perf_counter()
    out = Path(out)
    referee_net = None
    if referee is not None and compare_attacks:
        referee_net, referee_card = load_embedding(referee, device=device)  # fails now, not after training
        _same_data(referee_card, ds, "referee embedding", referee)
    net, card, emb_dir = get_embedding(ds, out, embedding, _train_settings(train, seed), retrain, progress, log,
                                       device)
    quality = _quality(net, card, ds, k)
    z_train = embed(net, ds.x_train)
    calib = compare.calibrate(net, ds, per_class=per_class, percentile=percentile, seed=seed, z_train=z_train)
    figures = _embedding_figures(net, ds, calib, out, projection, seed)
    record: dict[str, Any] = {
        "analysis": "embedding", "dataset": ds.name, "embedding_run": emb_dir,
        "embedding": {**card["embedding"], "arch": card["model"]["name"], "epochs": card.get("epochs")},
        "quality": quality, "calibration": {k_: v for k_, v in calib.items() if not k_.startswith("_")},
        "suggested_eps": calib["suggested_eps"], "figures": figures, "device": _describe(device),
    }
    log(f"embedding: k-NN accuracy {quality['knn_accuracy']:.4f} (k={k}), Recall@1 {quality['recall_at_1']:.4f}; "
        f"suggested eps_e {calib['suggested_eps']:.4g}")
    if compare_attacks:
        classifier, _, clf_dir = get_classifier(ds, out, run, classifier_model, classifier_epochs, seed, progress, log,
                                                data_dir, device)
        pixel_eps = list(pixel_eps) if pixel_eps is not None else DEFAULT_PIXEL_EPS[pixel_norm]
        if embedding_eps is None:
            embedding_eps = [float(f"{f * calib['mean_between_class']:.3g}") for f in EMBEDDING_FRACTIONS]
        log(f"comparing pixel ({pixel_norm} {pixel_eps}) and embedding ({list(embedding_eps)}) PGD on "
            f"{n or len(ds.y_test)} test points")
        cmp = compare.compare_threats(classifier, net, ds, pixel_eps=pixel_eps, embedding_eps=embedding_eps,
                                      pixel_norm=pixel_norm, n=n, steps=steps, k=k, targets=targets, seed=seed,
                                      z_train=z_train, referee=referee_net, progress=progress)
        figures.update(_comparison_figures(cmp, ds, n, out))
        record["classifier_run"] = clf_dir
        if referee is not None:
            record["referee_run"] = str(referee)
        record["comparison"] = {k_: v for k_, v in cmp.items() if not k_.startswith("_")}
    record["seconds"] = time.perf_counter() - started
    record["json"] = str(out / rundir.EMBEDDING_FILE)
    compare.write_record(out, record)
    return record


def _check_options(projection: str, pixel_norm: str, pixel_eps: Sequence[float] | None,
                   embedding_eps: Sequence[float] | None, percentile: float, per_class: int, k: int,
                   targets: Sequence[float]) -> None:
    if projection not in ("pca", "tsne"):
        raise AdvlabError(f"`projection` must be pca or tsne, got {projection!r}")
    if pixel_norm not in DEFAULT_PIXEL_EPS:
        raise AdvlabError(f"unknown pixel norm {pixel_norm!r}; choose one of {', '.join(DEFAULT_PIXEL_EPS)}")
    for name, grid in (("pixel_eps", pixel_eps), ("embedding_eps", embedding_eps)):
        if grid is not None and (not len(grid) or min(grid) < 0):
            raise AdvlabError(f"`{name}` needs budgets >= 0, got {list(grid)}")
    if not 0 <= percentile <= 100 or per_class < 1 or k < 1:
        raise AdvlabError(f"`percentile` must be in [0, 100], `per_class` and `k` >= 1; got {percentile}, "
                          f"{per_class}, {k}")
    if any(not 0 <= t <= 1 for t in targets):
        raise AdvlabError(f"`targets` are success rates in [0, 1], got {list(targets)}")


def _train_settings(train: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """The triplet network's training settings, with the defaults filled in."""
    train = {"seed": seed, **(train or {})}
    train.setdefault("mining", "semi-hard")
    train.setdefault("margin", 0.2)
    train.setdefault("dim", 32)
    train.setdefault("epochs", 10)
    return train


def _quality(net, card: dict[str, Any], ds: Dataset, k: int) -> dict[str, Any]:
    """k-NN accuracy and Recall@1 on the test split: from the card when measured there with this k."""
    m = card.get("metrics", {})
    if m.get("k") == k and m.get("n_test") == len(ds.y_test):  # measured when the run was trained
        return {key: m[key] for key in ("knn_accuracy", "k", "recall_at_1", "n_test")}
    return embedding_quality(net, ds, k)


def _embedding_figures(net, ds: Dataset, calib: dict[str, Any], out: Path, projection: str,
                       seed: int) -> dict[str, Any]:
    """The test embeddings projected to 2-D, and the histogram of nearest-neighbour distances."""
    figures = {"projection": compare.projection_plot(embed(net, ds.x_test), ds.y_test, ds.classes,
                                                     out / f"projection-{projection}.png", projection, seed=seed,
                                                     title=f"{ds.name} test embeddings ({projection.upper()})")}
    from ..plotting import histograms
    figures["distances"] = histograms(
        {"within-class NN": calib["_within"], "between-class NN": calib["_between"]},
        f"{ds.name}: nearest-neighbour distances in the embedding", "embedding distance",
        out / "distances.png", markers={"2 x suggested eps_e": 2 * calib["suggested_eps"]})
    return figures


def _comparison_figures(cmp: dict[str, Any], ds: Dataset, n: int | None, out: Path) -> dict[str, Any]:
    """k-NN label changes against budget, and the examples of the matched pair nearest 50% success side by side."""
    figures = {"change_curve": compare.change_curve(cmp, out / "knn-change.png")}
    if cmp["matched"]:
        mid = min(cmp["matched"], key=lambda m: abs(m["target_success"] - 0.5))
        x, y = ds.test_subset(n)
        grid = compare.side_by_side_grid(x, y, cmp["_pixel"][mid["pixel"]["eps"]],
                                         cmp["_embedding"][mid["embedding"]["eps"]], ds.classes,
                                         out / "side-by-side.png")
        if grid:
            figures["side_by_side"] = grid
    return figures
