"""The first picture of adversarial examples: two Gaussian blobs, logistic regression, FGSM.

    advlab analyze blobs --eps 0,0.2,0.5 --out runs/analyze/blobs

Train logistic regression on `blobs` (class 0 ~ N(0, sigma^2 I), class 1 ~ N(sep * 1, sigma^2 I)),
attack the test points with FGSM (Linf, no bounds: the features are unbounded) at each eps, and
print the measured error beside the error predicted in closed form for this trained model: FGSM
on a linear model moves every score by exactly eps * ||w||_1 towards the other class, so the error
is a normal tail probability (advlab.analysis.linear.class_errors). The measured error should lie
within its binomial sampling interval of the prediction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import plotting as figures
from .. import rundir
from ..attacks import FGSM
from ..data import load_dataset
from ..errors import AdvlabError
from ..io import write_json
from ..predict import accuracy
from .linear import class_errors, fit_linear, to_device, weights, wilson


def blobs_picture(eps: Sequence[float] = (0.0, 0.2, 0.5), *, dataset_kwargs: dict[str, Any] | None = None,
                  loss: str = "ce", weight_decay: float = 1e-4, out: str | Path | None = None,
                  log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    """Train, attack, predict; returns the record written to `out/blobs.json`.

    `device`: where the fitted logistic regression is attacked and evaluated (None: the CPU); the
    fit (scipy L-BFGS) and the closed forms run on the CPU."""
    started = time.perf_counter()
    eps = [float(e) for e in eps]
    if any(e < 0 for e in eps):
        raise AdvlabError(f"`eps` must be >= 0, got {eps}")
    ds = load_dataset("blobs", **(dataset_kwargs or {}))
    p = ds.params
    dim, sep, sigma = p["dim"], p["separation"], p["sigma"]
    mean0, mean1 = np.zeros(dim), np.full(dim, float(sep))

    model = fit_linear(ds.x_train, ds.y_train, weight_decay=weight_decay)
    w, b = weights(model)
    model = to_device(model, device)
    result = FGSM("linf", loss=loss)(model, ds.x_test, ds.y_test, eps=eps, bounds=ds.bounds)
    errors = [1 - a for a in result.robust_accuracy()]
    n = len(ds.y_test)
    prior1 = float(ds.y_test.float().mean())
    # The best linear classifier for clean data, for reference: w = 1, boundary half-way.
    w_bayes, b_bayes = np.ones(dim), -sep * dim / 2

    rows = []
    for e, err in zip(eps, errors):
        e0, e1 = class_errors(w, b, mean0, mean1, sigma, e, "linf")
        b0, b1 = class_errors(w_bayes, b_bayes, mean0, mean1, sigma, e, "linf")
        rows.append({"eps": e, "measured_error": err, "ci95": wilson(round(err * n), n),
                     "predicted_error": (1 - prior1) * e0 + prior1 * e1,
                     "predicted_error_per_class": [e0, e1],
                     "bayes_linear_error": (1 - prior1) * b0 + prior1 * b1, "n": n})
    record: dict[str, Any] = {
        "analysis": "blobs", "dataset": ds.describe(), "attack": "fgsm", "norm": "linf", "loss": loss,
        "model": {"name": "logistic", "w": w.tolist(), "b": b, "weight_decay": weight_decay,
                  "l1_norm": float(np.abs(w).sum()),
                  "train_accuracy": accuracy(model, ds.x_train, ds.y_train),
                  "test_accuracy": accuracy(model, ds.x_test, ds.y_test)},
        "results": rows,
    }
    if out is not None:
        out = Path(out)
        if dim == 2:
            record["figures"] = {"scatter": _scatter(out / "blobs.png", ds, result, eps, w, b)}
        record["json"] = str(out / rundir.BLOBS_FILE)
    record["seconds"] = time.perf_counter() - started
    if out is not None:
        write_json(out / rundir.BLOBS_FILE, record)
    if log:
        log(table(record))
    return record


def table(record: dict[str, Any]) -> str:
    lines = [f"{'eps':>6}  {'measured error':>15}  {'95% interval':>17}  {'predicted':>10}  {'best linear':>11}"]
    for r in record["results"]:
        lo, hi = r["ci95"]
        lines.append(f"{r['eps']:>6.3g}  {r['measured_error']:>15.2%}  [{lo:>6.2%}, {hi:>6.2%}]  "
                     f"{r['predicted_error']:>10.2%}  {r['bayes_linear_error']:>11.2%}")
    return "\n".join(lines)


def _scatter(path: Path, ds, result, eps, w, b, max_points: int = 800) -> str:
    n = min(max_points, len(ds.y_test))
    x = ds.x_test[:n].numpy()
    y = ds.y_test[:n].numpy()
    fig = figures.new_figure(4.2 * len(eps), 4.4)
    axes = fig.subplots(1, len(eps), squeeze=False)[0]
    lo, hi = x.min(0) - 0.6, x.max(0) + 0.6
    grid = np.linspace(lo[0], hi[0], 2)
    for ax, e, x_adv, pred in zip(axes, eps, result.x_adv[:, :n].numpy(), result.predictions[:, :n].numpy()):
        wrong = pred != y
        for c, colour in ((0, "C0"), (1, "C1")):
            ax.scatter(x[y == c, 0], x[y == c, 1], s=5, color=colour, alpha=0.15)
            keep = (y == c) & ~wrong
            ax.scatter(x_adv[keep, 0], x_adv[keep, 1], s=7, color=colour, label=f"class {c}")
            bad = (y == c) & wrong
            ax.scatter(x_adv[bad, 0], x_adv[bad, 1], s=22, color=colour, marker="x",
                       label=f"class {c}, misclassified")
        if abs(w[1]) > 1e-12:
            ax.plot(grid, -(w[0] * grid + b) / w[1], "k-", linewidth=1.2, label="decision boundary")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.set_title(f"eps = {e:g}: error {wrong.mean():.1%} (first {n} test points)", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("blobs: logistic regression under FGSM (faint: original points; solid: adversarial)")
    return figures.save_png(fig, path)
