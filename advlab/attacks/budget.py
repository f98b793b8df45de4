"""Finite working budgets for attacks whose step sizes or proposals scale with epsilon.

APGD's first step is 2 * eps and Square writes +-eps into the input: an infinite epsilon (the
"unbounded budget" of the robustness tests) would make them produce inf and NaN. Inside a box
nothing is lost by capping epsilon at the box's diameter in the attack's norm: every point of the
box is then inside the ball. Without bounds there is no such cap, and that is an input error.
"""

from __future__ import annotations

import math

import torch

from ..errors import AdvlabError
from ..threat import Bounds, Norm


def box_diameter(x: torch.Tensor, norm: Norm, bounds: Bounds) -> float:
    """Largest norm a perturbation that keeps x inside the bounds can have (inf without bounds)."""
    if bounds is None:
        return math.inf
    lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
    span = (hi - lo).expand_as(x[0]).reshape(1, -1)  # (1, D)
    return float(norm.distance(span)[0])


def finite_eps(eps: torch.Tensor, x: torch.Tensor, norm: Norm, bounds: Bounds, attack: str) -> torch.Tensor:
    """eps (N,) capped at the box diameter; an error if it stays infinite."""
    eps = torch.minimum(eps, torch.tensor(box_diameter(x, norm, bounds), dtype=eps.dtype, device=eps.device))
    if not torch.isfinite(eps).all():
        raise AdvlabError(f"{attack} needs a finite epsilon when the inputs have no bounds; "
                          "pass a large finite eps (e.g. 1e3) instead of inf")
    return eps
