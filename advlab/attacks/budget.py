"""An attack's budgets: the epsilons it is given, and finite working budgets.

The path of a budget: text ("0.05,8/255", from the command line or TOML) -> floats, validated by one
function, `advlab.parsing.parse_eps_list` (the CLI's types `cli.types.eps_values` return them at parse
time; `eps_text`, for `attack` and `evaluate`'s --eps, keeps the text for the records and the artifacts
step turns it into floats) -> per-example tensors inside the harness: `per_example_budgets` turns what a
Python caller passes as `eps` (a number, a list of numbers, per-example tensors) into one (N,) tensor per
epsilon, checked; `describe_eps` gives them back as the caller wrote them.

Finite working budgets for attacks whose step sizes or proposals scale with epsilon: APGD's first
step is 2 * eps and Square writes +-eps into the input, so an infinite epsilon (the "unbounded
budget" of the robustness tests) would make them produce inf and NaN. Inside a box
nothing is lost by capping epsilon at the box's diameter in the attack's norm: every point of the
box is then inside the ball. Without bounds there is no such cap, and that is an input error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch

from ..errors import AdvlabError
from ..threat import Bounds, Norm

EpsArg = Union[float, torch.Tensor, Sequence[Union[float, torch.Tensor]]]


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


def per_example_budgets(eps: EpsArg, n: int) -> list[torch.Tensor]:
    """Each epsilon as an (n,) tensor; a scalar applies to every point."""
    if isinstance(eps, torch.Tensor) and eps.ndim == 1 and len(eps) == n and n > 1:
        items = [eps]  # one per-example budget
    elif isinstance(eps, (list, tuple)) or (isinstance(eps, torch.Tensor) and eps.ndim == 1):
        items = list(eps)
    else:
        items = [eps]
    if not items:
        raise AdvlabError("eps needs at least one value")
    out = []
    for e in items:
        if isinstance(e, bool) or not isinstance(e, (int, float, torch.Tensor)):
            raise AdvlabError(f"epsilon must be a number or a tensor, got {e!r}")
        t = torch.as_tensor(e, dtype=torch.float32).detach().cpu()
        if t.ndim == 0:
            t = t.expand(n).clone()
        if t.shape != (n,):
            raise AdvlabError(f"a per-example epsilon must have shape ({n},), got {tuple(t.shape)}")
        if not torch.isfinite(t).all() and not (t == math.inf).all():
            raise AdvlabError(f"epsilon must be finite (or inf for an unbounded attack), got {e!r}")
        if (t < 0).any():
            raise AdvlabError(f"epsilon must be >= 0, got {t.min().item()}")
        out.append(t)
    return out


def describe_eps(eps: EpsArg) -> list[float]:
    """The epsilons as the user wrote them (a per-example budget is summarised by its mean)."""
    items = [eps] if isinstance(eps, (int, float)) or (isinstance(eps, torch.Tensor) and eps.ndim == 0) else eps
    if isinstance(items, torch.Tensor) and items.ndim == 1 and not isinstance(eps, (list, tuple)):
        items = [items] if len(items) > 1 else items.tolist()
    return [float(e) if not isinstance(e, torch.Tensor) or e.ndim == 0 else e.float().mean().item() for e in items]
