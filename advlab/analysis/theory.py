"""Robustness theory on the two-class Gaussian model (Schmidt et al. 2018), measured and in closed form.

    advlab analyze theory --out runs/analyze/theory

Data: y uniform on {0, 1}, x ~ N(s * mu * 1, sigma^2 I) with s = -1 / +1 (the `gaussian` dataset).
A linear classifier sign(w.x + b) under an Linf attack of size eps loses exactly eps * ||w||_1 of
margin, so every accuracy below has a closed form (advlab.analysis.linear.class_errors), printed
beside the measurement on a finite test set.

Experiment "dimension": robust accuracy against dimension d at fixed eps, with the clean problem
held equally hard (mu = signal / sqrt(d), so ||mean||_2 = signal). The best linear classifier
(w = 1, b = 0) has clean accuracy Phi(signal / sigma) for every d, but robust accuracy
Phi(max(0, signal - eps sqrt(d)) / sigma), which falls to chance (1/2, the constant classifier)
once d >= (signal / eps)^2: no linear classifier is robust in high dimension although each one
is accurate - adversarial examples are unavoidable here, not a training failure. Measured: logistic
regression trained normally and trained against the exact worst case (adversarial training).

Experiment "samples": standard versus robust test accuracy against the number of training samples
n, at d = 1000, mu = 1 (||mean||_2 = sqrt(d)) and sigma = d^(1/4) / 2, Schmidt et al.'s scaling.
The class-mean estimator w = mean(s_i x_i) (b = 0) is accurate from a single sample, but robust
only with many more: ||w||_1 carries the noise of every coordinate. Closed-form curves use the
large-d limit: w_j ~ N(mu, sigma^2 / n) independently, so
    clean  ~ Phi(d mu^2 / (sigma sqrt(d (mu^2 + sigma^2/n))))
    robust ~ Phi(d (mu^2 - eps E|w_j|) / (sigma sqrt(d (mu^2 + sigma^2/n))))
with E|w_j| the folded-normal mean. Adversarially trained logistic regression is measured too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm as normal

from .. import plotting as figures
from .. import rng
from .. import rundir
from ..attacks import FGSM
from ..data import load_dataset
from ..errors import AdvlabError
from ..io import write_json
from ..predict import predict_logits
from .linear import fit_linear, linear_error, linear_model, perturb_on_model_device, to_device, weights


def accuracies(model, x, y, eps: float) -> tuple[float, float]:
    """(clean, robust) test accuracy; FGSM is the exact worst case for a linear model without bounds."""
    correct = predict_logits(model, x).argmax(1) == y
    x_adv = perturb_on_model_device(FGSM("linf", loss="margin"), model, x, y, eps, bounds=None)
    # Robust: right on the clean point and on the attacked one (the clean point is inside the ball).
    robust = correct & (predict_logits(model, x_adv).argmax(1) == y)
    return correct.double().mean().item(), robust.double().mean().item()


def population(w, b, mu: float, sigma: float, eps: float) -> tuple[float, float]:
    """(clean, robust) accuracy in closed form over the data distribution (classes equally likely)."""
    return (1 - linear_error(w, b, -mu, mu, sigma, 0.0), 1 - linear_error(w, b, -mu, mu, sigma, eps))


def best_linear(d: int | np.ndarray, mu, sigma: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(clean, robust) accuracy of the best linear classifier when every coordinate carries mu.

    Robust: max over (w, b) of the margin (w.mu 1 - eps ||w||_1) / (sigma ||w||_2), which is
    (mu - eps) sqrt(d) / sigma at w = 1 if mu > eps; otherwise no w has a positive margin and the
    constant classifier's 1/2 is best.
    """
    d = np.asarray(d, dtype=float)
    mu = np.asarray(mu, dtype=float)
    clean = normal.cdf(mu * np.sqrt(d) / sigma)
    robust = normal.cdf(np.maximum(0.0, (mu - eps) * np.sqrt(d) / sigma))
    return clean, robust


def folded_mean(m: np.ndarray | float, s: np.ndarray | float) -> np.ndarray:
    """E|X| for X ~ N(m, s^2)."""
    m, s = np.asarray(m, dtype=float), np.asarray(s, dtype=float)
    return s * np.sqrt(2 / np.pi) * np.exp(-m * m / (2 * s * s)) + m * (1 - 2 * normal.cdf(-m / s))


def mean_estimator_curves(n: np.ndarray, d: int, mu: float, sigma: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Large-d closed form of the class-mean estimator's (clean, robust) accuracy after n samples."""
    n = np.asarray(n, dtype=float)
    s = sigma / np.sqrt(n)
    spread = sigma * np.sqrt(d * (mu * mu + s * s))  # sigma ||w||_2
    clean = normal.cdf(d * mu * mu / spread)
    robust = normal.cdf(d * (mu * mu - eps * folded_mean(mu, s)) / spread)
    return clean, robust


def dimension_experiment(dims: Sequence[int] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000), *,
                         eps: float = 0.1, signal: float = 2.0, sigma: float = 1.0, n_train: int = 2000,
                         n_test: int = 2000, weight_decay: float = 1e-4, seed: int = 0,
                         log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    _check_positive(eps=eps, signal=signal, sigma=sigma)
    rows = []
    for i, d in enumerate(dims):
        if int(d) < 1:
            raise AdvlabError(f"`dims` must be >= 1, got {d}")
        mu = signal / math.sqrt(d)
        ds = load_dataset("gaussian", dim=int(d), mu=mu, sigma=sigma, n_train=n_train, n_test=n_test,
                          seed=rng.derive_seed(seed, 1, i))
        row: dict[str, Any] = {"dim": int(d), "mu": mu}
        for name, train_eps in (("standard", 0.0), ("adversarial", eps)):
            model = fit_linear(ds.x_train, ds.y_train, eps=train_eps, weight_decay=weight_decay)
            w, b = weights(model)
            clean, robust = accuracies(to_device(model, device), ds.x_test, ds.y_test, eps)
            p_clean, p_robust = population(w, b, mu, sigma, eps)
            row[name] = {"clean_accuracy": {"measured": clean, "predicted": p_clean},
                         "robust_accuracy": {"measured": robust, "predicted": p_robust},
                         "l1_norm": float(np.abs(w).sum()), "l2_norm": float(np.linalg.norm(w))}
        c, r = best_linear(d, mu, sigma, eps)
        row["best_linear"] = {"clean_accuracy": float(c), "robust_accuracy": float(r)}
        rows.append(row)
        if log:
            log(f"d={d:>5}: best linear clean {float(c):.3f} robust {float(r):.3f}; standard LR robust "
                f"{row['standard']['robust_accuracy']['measured']:.3f} (predicted "
                f"{row['standard']['robust_accuracy']['predicted']:.3f}); adversarial LR robust "
                f"{row['adversarial']['robust_accuracy']['measured']:.3f}")
    return {"settings": {"eps": eps, "signal": signal, "sigma": sigma, "n_train": n_train, "n_test": n_test,
                         "weight_decay": weight_decay, "critical_dim": (signal / eps) ** 2}, "rows": rows}


def samples_experiment(samples: Sequence[int] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), *, dim: int = 1000,
                       mu: float = 1.0, sigma: float | None = None, eps: float = 0.7, reps: int = 3,
                       n_test: int = 2000, weight_decay: float = 1e-4, seed: int = 0,
                       log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    sigma = sigma if sigma is not None else dim ** 0.25 / 2
    _check_positive(eps=eps, mu=mu, sigma=sigma, dim=dim, reps=reps)
    rows = []
    for i, n in enumerate(samples):
        if int(n) < 1:
            raise AdvlabError(f"`samples` must be >= 1, got {n}")
        runs: dict[str, list[list[float]]] = {"mean_estimator": [], "adversarial": []}
        for rep in range(reps):
            ds = load_dataset("gaussian", dim=dim, mu=mu, sigma=sigma, n_train=int(n), n_test=n_test,
                              seed=rng.derive_seed(seed, 2, i, rep))
            s = 2 * ds.y_train.double() - 1
            w_mean = (s[:, None] * ds.x_train.double()).mean(0).numpy()
            adv = fit_linear(ds.x_train, ds.y_train, eps=eps, weight_decay=weight_decay)
            for name, (w, b), model in (("mean_estimator", (w_mean, 0.0), linear_model(w_mean)),
                                        ("adversarial", weights(adv), adv)):
                runs[name].append([*accuracies(to_device(model, device), ds.x_test, ds.y_test, eps),
                                   *population(w, b, mu, sigma, eps)])
        c_pred, r_pred = mean_estimator_curves(np.array([n]), dim, mu, sigma, eps)
        row: dict[str, Any] = {"n_train": int(n)}
        for name, values in runs.items():
            v = np.array(values)  # (reps, 4): clean, robust measured; clean, robust in closed form given w
            row[name] = {
                "clean_accuracy": {"measured": float(v[:, 0].mean()), "measured_std": float(v[:, 0].std()),
                                   "predicted_given_w": float(v[:, 2].mean())},
                "robust_accuracy": {"measured": float(v[:, 1].mean()), "measured_std": float(v[:, 1].std()),
                                    "predicted_given_w": float(v[:, 3].mean())},
            }
        row["mean_estimator"]["clean_accuracy"]["predicted"] = float(c_pred[0])
        row["mean_estimator"]["robust_accuracy"]["predicted"] = float(r_pred[0])
        rows.append(row)
        if log:
            m = row["mean_estimator"]
            log(f"n={n:>5}: mean estimator clean {m['clean_accuracy']['measured']:.3f} "
                f"(predicted {m['clean_accuracy']['predicted']:.3f}), robust {m['robust_accuracy']['measured']:.3f} "
                f"(predicted {m['robust_accuracy']['predicted']:.3f}); adversarial training robust "
                f"{row['adversarial']['robust_accuracy']['measured']:.3f}")
    c_lim, r_lim = best_linear(dim, mu, sigma, eps)
    return {"settings": {"dim": dim, "mu": mu, "sigma": sigma, "eps": eps, "reps": reps, "n_test": n_test,
                         "weight_decay": weight_decay},
            "limits": {"clean_accuracy": float(c_lim), "robust_accuracy": float(r_lim)}, "rows": rows}


def run_theory(experiments: Sequence[str] = ("dimension", "samples"), *, out: str | Path | None = None,
               seed: int = 0, dimension_kwargs: dict[str, Any] | None = None,
               samples_kwargs: dict[str, Any] | None = None,
               log: Callable[[str], None] | None = None, device=None) -> dict[str, Any]:
    """Run the experiments; `device`: where the fitted linear models are attacked and evaluated (None:
    the CPU); the fits (scipy L-BFGS) and the closed forms run on the CPU."""
    started = time.perf_counter()
    unknown = sorted(set(experiments) - {"dimension", "samples"})
    if unknown or not experiments:
        raise AdvlabError(f"`experiments` takes dimension and/or samples, got {', '.join(unknown) or 'nothing'}")
    record: dict[str, Any] = {"analysis": "theory", "dataset": "gaussian", "seed": seed, "norm": "linf"}
    if "dimension" in experiments:
        record["dimension"] = dimension_experiment(seed=seed, log=log, device=device, **(dimension_kwargs or {}))
    if "samples" in experiments:
        record["samples"] = samples_experiment(seed=seed, log=log, device=device, **(samples_kwargs or {}))
    if out is not None:
        out = Path(out)
        record["figures"] = _figures(out, record)
        record["json"] = str(out / rundir.THEORY_FILE)
    record["seconds"] = time.perf_counter() - started
    if out is not None:
        write_json(out / rundir.THEORY_FILE, record)
    return record


def _check_positive(**values) -> None:
    for k, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise AdvlabError(f"{k} must be a positive number, got {v!r}")


def _figures(out: Path, record: dict[str, Any]) -> dict[str, str]:
    files = {}
    if "dimension" in record:
        exp = record["dimension"]
        st, rows = exp["settings"], exp["rows"]
        d = [r["dim"] for r in rows]
        fine = np.unique(np.geomspace(min(d), max(d), 300))
        clean, robust = best_linear(fine, st["signal"] / np.sqrt(fine), st["sigma"], st["eps"])
        files["dimension"] = figures.curves(d, {
            "best linear: clean (closed form)": {"x": fine, "y": clean, "color": "C0"},
            "best linear: robust (closed form)": {"x": fine, "y": robust, "color": "C1"},
            "standard LR: clean (measured)": {"y": [r["standard"]["clean_accuracy"]["measured"] for r in rows],
                                              "style": "measured", "color": "C0"},
            "standard LR: robust (measured)": {"y": [r["standard"]["robust_accuracy"]["measured"] for r in rows],
                                               "style": "measured", "color": "C3"},
            "standard LR: robust (closed form for its w)": {
                "y": [r["standard"]["robust_accuracy"]["predicted"] for r in rows], "color": "C3"},
            "adversarial LR: robust (measured)": {"y": [r["adversarial"]["robust_accuracy"]["measured"] for r in rows],
                                                  "style": "measured", "color": "C1"},
        }, f"Gaussian model, ||mean||_2 = {st['signal']:g}, sigma = {st['sigma']:g}, Linf eps = {st['eps']:g}",
            "dimension d", "test accuracy", out / "theory_dimension.png", logx=True, ylim=(-0.02, 1.02))
    if "samples" in record:
        exp = record["samples"]
        st, rows = exp["settings"], exp["rows"]
        n = [r["n_train"] for r in rows]
        fine = np.unique(np.geomspace(min(n), max(n), 300))
        clean, robust = mean_estimator_curves(fine, st["dim"], st["mu"], st["sigma"], st["eps"])

        def bars(key, what):
            return [[r[key][what]["measured_std"] for r in rows]] * 2

        files["samples"] = figures.curves(n, {
            "mean estimator: clean (closed form)": {"x": fine, "y": clean, "color": "C0"},
            "mean estimator: robust (closed form)": {"x": fine, "y": robust, "color": "C1"},
            "mean estimator: clean (measured)": {"y": [r["mean_estimator"]["clean_accuracy"]["measured"] for r in rows],
                                                 "style": "measured", "color": "C0",
                                                 "yerr": bars("mean_estimator", "clean_accuracy")},
            "mean estimator: robust (measured)": {"y": [r["mean_estimator"]["robust_accuracy"]["measured"] for r in rows],
                                                  "style": "measured", "color": "C1",
                                                  "yerr": bars("mean_estimator", "robust_accuracy")},
            "adversarial LR: robust (measured)": {"y": [r["adversarial"]["robust_accuracy"]["measured"] for r in rows],
                                                  "style": "measured", "color": "C3",
                                                  "yerr": bars("adversarial", "robust_accuracy")},
        }, f"Gaussian model, d = {st['dim']}, sigma = {st['sigma']:.3g}, Linf eps = {st['eps']:g}",
            "training samples n", "test accuracy", out / "theory_samples.png", logx=True, ylim=(-0.02, 1.02))
    return files
