"""Per-example attack losses on logits (N, K). Attacks ascend them.

Untargeted losses grow as the true class loses; targeted ones grow as the target class wins.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..errors import AdvlabError


def _other_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Largest logit among the classes other than cls: (N,)."""
    masked = logits.scatter(1, cls[:, None], float("-inf"))
    return masked.amax(1)


def ce(logits, y, targets=None):
    if targets is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, targets, reduction="none")


def margin(logits, y, targets=None):
    """Carlini & Wagner's margin: max_{j != y} z_j - z_y (targeted: z_t - max_{j != t} z_j)."""
    if targets is None:
        return _other_max(logits, y) - logits.gather(1, y[:, None])[:, 0]
    return logits.gather(1, targets[:, None])[:, 0] - _other_max(logits, targets)


def dlr(logits, y, targets=None):
    """Difference of logits ratio (Croce & Hein 2020): shift- and scale-invariant margin.

    Untargeted: -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3); targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2).
    """
    z = logits.sort(dim=1, descending=True).values
    zy = logits.gather(1, y[:, None])[:, 0]
    if targets is None:
        if logits.shape[1] < 3:
            raise AdvlabError("the DLR loss needs at least 3 classes; use 'ce' or 'margin' for binary models")
        return -(zy - _other_max(logits, y)) / (z[:, 0] - z[:, 2] + 1e-12)
    if logits.shape[1] < 4:
        raise AdvlabError("the targeted DLR loss needs at least 4 classes; use 'ce' or 'margin'")
    zt = logits.gather(1, targets[:, None])[:, 0]
    return -(zy - zt) / (z[:, 0] - 0.5 * (z[:, 2] + z[:, 3]) + 1e-12)


LOSSES = {"ce": ce, "margin": margin, "dlr": dlr}


def get_loss(name):
    if callable(name):
        return name
    if name not in LOSSES:
        raise AdvlabError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
