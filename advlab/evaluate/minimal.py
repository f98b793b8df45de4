"""Minimal perturbations: the smallest adversarial perturbation found per example.

The best (smallest) over the minimal-norm attacks for each norm: DeepFool and C&W for L2,
DeepFool for Linf. Reported as a distribution (median, quartiles, histogram), plus DeepFool's
rho_adv = mean ||r|| / ||x|| (Moosavi-Dezfooli et al. 2016: 0.20 for LeNet on MNIST in L2).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..attacks import build_attack
from ..threat import Bounds, get_norm
from .stats import distribution

DEFAULT_ATTACKS = {"l2": [("deepfool", {}), ("cw", {"steps": 50, "binary_search_steps": 6})],
                   "linf": [("deepfool", {})]}


def minimal_perturbations(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norms: Sequence[str] = ("l2", "linf"),
                          bounds: Bounds = None, attacks: dict[str, list] | None = None, seed: int = 0,
                          bins: int = 20) -> dict[str, Any]:
    """Per norm: the distribution of the smallest perturbation found on clean-correct points."""
    attacks = attacks or DEFAULT_ATTACKS
    out: dict[str, Any] = {}
    for norm in norms:
        best = torch.full((len(y),), float("inf"))
        per_attack = {}
        clean_correct = None
        for name, options in attacks[norm]:
            result = build_attack(name, norm=norm, seed=seed, **options)(model, x, y, [0.0], bounds=bounds)
            d = result.min_distance.clone()
            clean_correct = result.clean_correct
            per_attack[name] = distribution(d[clean_correct], bins)["median"]
            best = torch.minimum(best, d)
        best = best[clean_correct]
        x_norm = get_norm(norm).distance(x[clean_correct].reshape(int(clean_correct.sum()), -1))
        finite = torch.isfinite(best)
        rho = (best[finite] / x_norm[finite].clamp_min(1e-12)).mean().item() if finite.any() else float("nan")
        out[norm] = {**distribution(best, bins), "rho_adv": rho, "median_per_attack": per_attack,
                     "values": best.tolist()}
    return out
