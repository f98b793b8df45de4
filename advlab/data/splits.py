"""Held-out splits: train / validation / unlabelled pool, stratified and seeded."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import AdvlabError


@dataclass(frozen=True)
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_pool: torch.Tensor  # unlabelled pool (labels kept in y_pool for evaluation only)
    y_pool: torch.Tensor


def holdout_split(x: torch.Tensor, y: torch.Tensor, val: float | int = 0.1, pool: float | int = 0,
                  seed: int = 0) -> Split:
    """Split (x, y) per class into train, validation and an unlabelled pool.

    `val` and `pool` are fractions (< 1) or absolute counts (>= 1) of the whole set. Each class
    keeps its share in each part, and the same seed always gives the same split.
    """
    n = len(y)
    n_val = _count(val, n, "val")
    n_pool = _count(pool, n, "pool")
    if n_val + n_pool >= n:
        raise AdvlabError(f"val ({n_val}) + pool ({n_pool}) leaves no training data out of {n}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    # Stable sort by class keeps the random order inside each class; interleaving by rank inside
    # the class then spreads every class evenly over the parts.
    y_sorted = y[order]
    by_class = order[torch.argsort(y_sorted, stable=True)]
    counts = torch.bincount(y, minlength=int(y.max()) + 1)
    rank = torch.cat([torch.arange(int(c)) / max(int(c), 1) for c in counts])
    interleaved = by_class[torch.argsort(rank, stable=True)]
    val_idx = interleaved[:n_val]
    pool_idx = interleaved[n_val:n_val + n_pool]
    train_idx = interleaved[n_val + n_pool:]
    train_idx = train_idx[torch.randperm(len(train_idx), generator=g)]
    return Split(x[train_idx], y[train_idx], x[val_idx], y[val_idx], x[pool_idx], y[pool_idx])


def _count(value: float | int, n: int, name: str) -> int:
    if value < 0:
        raise AdvlabError(f"{name} must be >= 0, got {value}")
    return int(round(value * n)) if value < 1 else int(value)
