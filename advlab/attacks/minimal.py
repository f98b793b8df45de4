"""Shared pieces of the minimal-perturbation attacks (C&W, DeepFool).

A minimal attack's example sits next to the decision boundary, so whether it counts as adversarial
can flip with the last bits of float noise when the base class re-scores it (in another batch
composition). `goal_reached` therefore asks for a small positive logit margin, not just an argmax
change, and `shrink` pulls an example back along its own ray to just past the boundary.
"""

from __future__ import annotations

import torch

from .losses import margin


def slack(logits: torch.Tensor) -> torch.Tensor:
    """(N,) a logit margin well above float32 rounding at the logits' scale."""
    return 1e-5 * logits.detach().abs().amax(1).clamp_min(1.0)


def goal_reached(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """(N,) the goal is met with a margin that float noise cannot undo: untargeted, some other
    class beats y; targeted, the target beats every other class."""
    return margin(logits, y, targets) > slack(logits)


@torch.no_grad()
def shrink(model, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None,
           steps: int) -> torch.Tensor:
    """Binary search t in [0, 1] for the smallest x + t (x_adv - x) that still meets the goal.

    The adversarial set along the ray need not be an interval, but the search keeps x + hi * delta
    adversarial at every step, so the answer is always adversarial and never longer than x_adv - x.
    x and x_adv inside a box keep every point of the segment inside it.
    """
    if steps <= 0:
        return x_adv
    shape = (-1, *[1] * (x.ndim - 1))
    delta = x_adv - x
    ok = goal_reached(model(x_adv), y, targets)
    lo = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    hi = torch.ones_like(lo)
    for _ in range(steps):
        mid = (lo + hi) / 2
        hit = goal_reached(model(x + mid.view(shape) * delta), y, targets)
        hi, lo = torch.where(hit, mid, hi), torch.where(hit, lo, mid)
    moved = ok & (hi < 1)  # hi == 1: keep x_adv itself, which was checked, not x + 1 * delta
    return torch.where(moved.view(shape), x + hi.view(shape) * delta, x_adv)
