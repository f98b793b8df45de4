"""The linear explanation of adversarial examples (Goodfellow et al. 2015, section 3).

    advlab analyze linearity --dataset gaussian --dims 10,30,100,300,1000,3000 --eps 0.1
    advlab analyze linearity --dataset digits --classes 3,7 --pad 0,1,3,7 --eps 0.1

For a linear score z = w.x the perturbation eta = eps * sign(w) (each input moves by at most eps)
changes z by exactly eps * ||w||_1, which grows with the input dimension n when the weights keep
their size: many small changes add up. The experiment sweeps n and, for a logistic regression
trained at each n, measures the activation change under FGSM beside eps * ||w||_1, and the FGSM
error beside its prediction.

Sources of dimension:
- `gaussian` (default): the two-class Gaussian model N(+-mu 1, sigma^2 I) with mu = signal / sqrt(n),
  so the clean problem stays equally hard (||mean||_2 = signal for every n) while the per-feature
  signal shrinks. The predicted FGSM error of the trained model is a normal tail probability
  (advlab.analysis.linear); the best linear classifier's is Phi((eps sqrt(n) - signal) / sigma),
  which goes to 1 as n grows although the clean error stays Phi(-signal / sigma).
- an image dataset (digits, fashion-mnist, ...): two classes, each image padded with
  `pad * D` features of uniform noise in the input bounds, which carry no signal but receive
  weight in training. Without clipping, the attack's effect is the shift eps * ||w||_1 of every
  score, so the predicted error is the share of test points whose clean margin is below it; the
  attack clipped to the input bounds is reported too (it can only do less).

FGSM here uses the margin loss: its input gradient is +-w for every point, where cross-entropy's
vanishes in float32 for confidently classified points and would leave them unperturbed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import norm as normal

from .. import plotting as figures
from .. import rng
from .. import rundir
from ..attacks import FGSM
from ..data import Dataset, load_dataset
from ..errors import AdvlabError
from ..io import write_json
from ..predict import predict_logits
from .linear import class_errors, fit_linear, perturb_on_model_device, to_device, weights, wilson


def activation_change(model, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """(N,) how far the attack moved each score z towards the wrong class: s * (z(x) - z(x_adv))."""
    s = 2 * y.double() - 1
    z = predict_logits(model, x)[:, 1].double()
    z_adv = predict_logits(model, x_adv)[:, 1].double()
    return s * (z - z_adv)


def _error(model, x, y) -> tuple[float, int]:
    wrong = int((predict_logits(model, x).argmax(1) != y).sum())
    return wrong / len(y), wrong


def linearity_gaussian(dims: Sequence[int] = (10, 30, 100, 300, 1000, 3000), *, eps: float = 0.1,
                       signal: float = 3.0, sigma: float = 1.0, n_train: int = 2000, n_test: int = 2000,
                       weight_decay: float = 1e-4, seed: int = 0,
                       log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    _check(dims, eps)
    rows = []
    for i, n in enumerate(dims):
        mu = signal / math.sqrt(n)
        ds = load_dataset("gaussian", dim=int(n), mu=mu, sigma=sigma, n_train=n_train, n_test=n_test,
                          seed=rng.derive_seed(seed, i))
        row = _measure(ds, eps, weight_decay, bounds=None, device=device)
        w, b = row.pop("_wb")
        prior1 = float(ds.y_test.float().mean())
        e0, e1 = class_errors(w, b, -mu, mu, sigma, 0.0)
        a0, a1 = class_errors(w, b, -mu, mu, sigma, eps)
        row["clean_error"]["predicted"] = (1 - prior1) * e0 + prior1 * e1
        row["fgsm_error"]["predicted"] = (1 - prior1) * a0 + prior1 * a1
        row["fgsm_error"]["best_linear"] = float(normal.cdf((eps * math.sqrt(n) - signal) / sigma))
        row["clean_error"]["best_linear"] = float(normal.cdf(-signal / sigma))
        rows.append(row)
        if log:
            log(_row_text(row))
    return {"source": "gaussian", "settings": {"signal": signal, "sigma": sigma, "n_train": n_train,
                                               "n_test": n_test, "weight_decay": weight_decay}, "rows": rows}


def linearity_images(ds: Dataset, classes: Sequence[int] = (3, 7), pads: Sequence[int] = (0, 1, 3, 7), *,
                     eps: float = 0.1, weight_decay: float = 1e-4, seed: int = 0,
                     log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    if len(classes) != 2 or classes[0] == classes[1] or not all(0 <= c < ds.num_classes for c in classes):
        raise AdvlabError(f"`classes` needs two different class indices in 0..{ds.num_classes - 1}, got {classes}")
    if any(p < 0 for p in pads):
        raise AdvlabError(f"`pads` must be >= 0, got {list(pads)}")
    if ds.bounds is None:
        raise AdvlabError(f"{ds.name} has no input bounds to draw the noise padding from; use `dataset='gaussian'`")
    lo, hi = (float(v) for v in ds.bounds)
    a, b = classes

    def pick(x, y):
        keep = (y == a) | (y == b)
        return x[keep].reshape(int(keep.sum()), -1), (y[keep] == b).long()  # class b -> 1

    xtr, ytr = pick(ds.x_train, ds.y_train)
    xte, yte = pick(ds.x_test, ds.y_test)
    d = xtr.shape[1]
    _check([d * (1 + p) for p in pads], eps)
    rows = []
    for i, p in enumerate(pads):
        g = rng.generator(seed, i)
        pad_tr = lo + (hi - lo) * torch.rand(len(xtr), p * d, generator=g)
        pad_te = lo + (hi - lo) * torch.rand(len(xte), p * d, generator=g)
        padded = Dataset(ds.name, torch.cat([xtr, pad_tr], 1), ytr, torch.cat([xte, pad_te], 1), yte,
                         (ds.classes[a], ds.classes[b]), ds.bounds)
        row = _measure(padded, eps, weight_decay, bounds=ds.bounds, device=device)
        row.pop("_wb")
        row["pad"] = p
        rows.append(row)
        if log:
            log(_row_text(row))
    return {"source": ds.name, "settings": {"classes": [a, b], "class_names": [ds.classes[a], ds.classes[b]],
                                            "pads": list(pads), "n_train": len(ytr), "n_test": len(yte),
                                            "weight_decay": weight_decay, "noise": f"uniform in [{lo:g}, {hi:g}]"},
            "rows": rows}


def _check(dims, eps) -> None:
    if not dims or any(int(n) < 1 for n in dims):
        raise AdvlabError(f"dimensions must be >= 1, got {list(dims)}")
    if eps <= 0:
        raise AdvlabError(f"`eps` must be > 0 for the linearity experiment, got {eps}")


def _measure(ds: Dataset, eps: float, weight_decay: float, bounds, device=None) -> dict[str, Any]:
    """Train (scipy, on the CPU), attack without clipping (and with, for bounded data) on `device`, and measure."""
    model = fit_linear(ds.x_train, ds.y_train, weight_decay=weight_decay)
    w, b = weights(model)
    model = to_device(model, device)
    attack = FGSM("linf", loss="margin")
    x_adv = perturb_on_model_device(attack, model, ds.x_test, ds.y_test, eps, bounds=None)
    change = activation_change(model, ds.x_test, ds.y_test, x_adv)
    predicted_change = eps * float(np.abs(w).sum())
    clean, _ = _error(model, ds.x_test, ds.y_test)
    fgsm, k = _error(model, x_adv, ds.y_test)
    n = len(ds.y_test)
    # Without clipping every score moves by exactly the predicted shift, so a point is
    # misclassified iff its clean margin s*z is below it (ties go to class 0, as argmax does).
    z = predict_logits(model, ds.x_test)[:, 1].double()
    s = 2 * ds.y_test.double() - 1
    margin = s * z
    shifted = margin - predicted_change
    predicted_from_margins = float(torch.where(ds.y_test == 1, shifted <= 0, shifted < 0).double().mean())
    row: dict[str, Any] = {
        "n": int(w.size), "l1_norm": float(np.abs(w).sum()), "l2_norm": float(np.linalg.norm(w)),
        "activation_change": {"predicted": predicted_change, "mean": float(change.mean()),
                              "min": float(change.min()), "max": float(change.max()),
                              "max_relative_error": float(((change - predicted_change).abs()).max()
                                                          / max(predicted_change, 1e-300))},
        "clean_error": {"measured": clean},
        "fgsm_error": {"measured": fgsm, "ci95": wilson(k, n), "predicted_from_margins": predicted_from_margins},
        "_wb": (w, b),
    }
    if bounds is not None:
        x_clip = perturb_on_model_device(attack, model, ds.x_test, ds.y_test, eps, bounds=bounds)
        row["fgsm_error"]["clipped"] = _error(model, x_clip, ds.y_test)[0]
        row["activation_change"]["clipped_mean"] = float(activation_change(model, ds.x_test, ds.y_test, x_clip).mean())
    return row


def _row_text(row: dict[str, Any]) -> str:
    a, f = row["activation_change"], row["fgsm_error"]
    pred = f.get("predicted", f["predicted_from_margins"])
    return (f"n={row['n']:>6}: eps*||w||_1 = {a['predicted']:.4g}, measured change {a['mean']:.4g} "
            f"(max rel. error {a['max_relative_error']:.1e}); FGSM error {f['measured']:.2%} "
            f"(predicted {pred:.2%}), clean error {row['clean_error']['measured']:.2%}")


def run_linearity(dataset: str = "gaussian", *, eps: float = 0.1, dims: Sequence[int] = (10, 30, 100, 300, 1000, 3000),
                  classes: Sequence[int] = (3, 7), pads: Sequence[int] = (0, 1, 3, 7), signal: float = 3.0,
                  sigma: float = 1.0, n_train: int = 2000, n_test: int = 2000, weight_decay: float = 1e-4,
                  seed: int = 0, data_dir: str | None = None, out: str | Path | None = None,
                  log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    """Run the experiment on `dataset` and write `linearity.json` and figures to `out`.

    `device`: where the fitted linear models are attacked and evaluated (None: the CPU); the fits
    themselves (scipy L-BFGS) run on the CPU."""
    started = time.perf_counter()
    if dataset == "gaussian":
        body = linearity_gaussian(dims, eps=eps, signal=signal, sigma=sigma, n_train=n_train, n_test=n_test,
                                  weight_decay=weight_decay, seed=seed, log=log, device=device)
    elif dataset == "blobs":
        raise AdvlabError("the linearity experiment sweeps the dimension: use `dataset='gaussian'` or an image dataset")
    else:
        ds = load_dataset(dataset, data_dir=data_dir)
        body = linearity_images(ds, classes, pads, eps=eps, weight_decay=weight_decay, seed=seed, log=log,
                                device=device)
    record: dict[str, Any] = {"analysis": "linearity", "dataset": dataset, "eps": eps, "norm": "linf",
                              "attack": "fgsm (margin loss)", "seed": seed, **body}
    if out is not None:
        out = Path(out)
        record["figures"] = _figures(out, record)
        record["json"] = str(out / rundir.LINEARITY_FILE)
    record["seconds"] = time.perf_counter() - started
    if out is not None:
        write_json(out / rundir.LINEARITY_FILE, record)
    return record


def _figures(out: Path, record: dict[str, Any]) -> dict[str, str]:
    rows = record["rows"]
    n = [r["n"] for r in rows]
    eps = record["eps"]
    files = {"activation": figures.curves(
        n, {"measured mean change of w.x": {"y": [r["activation_change"]["mean"] for r in rows], "style": "measured"},
            "predicted eps * ||w||_1": {"y": [r["activation_change"]["predicted"] for r in rows]}},
        f"{record['dataset']}: activation change under FGSM, eps = {eps:g}", "input dimension n",
        "change of the score w.x", out / "linearity_activation.png", logx=True, logy=True)}
    err = {"measured FGSM error": {"y": [r["fgsm_error"]["measured"] for r in rows], "style": "measured",
                                   "yerr": [[r["fgsm_error"]["measured"] - r["fgsm_error"]["ci95"][0] for r in rows],
                                            [r["fgsm_error"]["ci95"][1] - r["fgsm_error"]["measured"] for r in rows]]},
           "measured clean error": {"y": [r["clean_error"]["measured"] for r in rows], "style": "measured"}}
    if record["source"] == "gaussian":
        err["predicted FGSM error (trained w)"] = {"y": [r["fgsm_error"]["predicted"] for r in rows], "color": "C0"}
        fine = np.unique(np.geomspace(min(n), max(n), 200))
        s, sig = record["settings"]["signal"], record["settings"]["sigma"]
        err["best linear classifier: Phi((eps sqrt(n) - signal)/sigma)"] = {
            "x": fine, "y": normal.cdf((eps * np.sqrt(fine) - s) / sig), "color": "C2"}
        err["best linear clean error"] = {"x": fine, "y": np.full(len(fine), normal.cdf(-s / sig)), "color": "C1"}
    else:
        err["predicted: clean margin < eps ||w||_1"] = {"y": [r["fgsm_error"]["predicted_from_margins"] for r in rows],
                                                        "color": "C0"}
        err["measured FGSM error, clipped to bounds"] = {"y": [r["fgsm_error"]["clipped"] for r in rows],
                                                        "style": "measured", "color": "C3"}
    files["error"] = figures.curves(n, err, f"{record['dataset']}: error under FGSM, eps = {eps:g}",
                                    "input dimension n", "error rate", out / "linearity_error.png", logx=True,
                                    ylim=(-0.02, 1.02))
    return files
