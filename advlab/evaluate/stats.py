"""Statistics for robustness numbers: exact binomial intervals, per-class tables, distributions."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import beta


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval for a binomial proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    alpha = 1 - level
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return lo, hi


def per_class_accuracy(correct: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    """Mean of `correct` (N,) within each class; nan for classes with no points."""
    out = []
    for c in range(num_classes):
        mask = y == c
        out.append(correct[mask].float().mean().item() if mask.any() else float("nan"))
    return out


def confusion(y: torch.Tensor, pred: torch.Tensor, num_classes: int) -> list[list[int]]:
    """counts[true][predicted]."""
    idx = y.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes).tolist()


def distribution(values: torch.Tensor, bins: int = 20) -> dict:
    """Median, quartiles and a histogram of the finite values; `found` is how many were finite."""
    v = values[torch.isfinite(values)].double().numpy()
    if len(v) == 0:
        return {"found": 0, "total": int(len(values)), "median": math.nan, "q1": math.nan, "q3": math.nan,
                "mean": math.nan, "histogram": {"counts": [], "edges": []}}
    counts, edges = np.histogram(v, bins=bins)
    return {"found": int(len(v)), "total": int(len(values)), "median": float(np.median(v)),
            "q1": float(np.quantile(v, 0.25)), "q3": float(np.quantile(v, 0.75)), "mean": float(v.mean()),
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()}}
